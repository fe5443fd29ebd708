"""What the imputation engine asks of a backend (`Imputer`): the CPU's and the torch one give the same arrays."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from spinimpute.model.copying_numpy import SiteGroups


class Imputer(Protocol):
    """A trained model's imputation over numpy arrays.

    Attributes:
        kmer: SNPs per token of the SPIN predictor.
        copying_states: most reference haplotypes the copying model runs over per query.
        threads: threads the backend computes on.
        compiled: whether the copying model is the compiled CPU one (the engine sizes its
            query batches for it) or the torch one.
        memory_budget: bytes of working memory per batch of queries, None for the engine's default.
    """

    kmer: int
    copying_states: int
    threads: int
    compiled: bool
    memory_budget: int | None

    def copy_probabilities(self, *, markers: np.ndarray, query: np.ndarray, candidates: np.ndarray | None,
                           marker_cm: np.ndarray, site_cm: np.ndarray,
                           groups: SiteGroups) -> tuple[np.ndarray, np.ndarray]:
        """The copying model's (Q, J) float32 ALT probabilities and (Q, J, EVIDENCE_FEATURES) float32
        evidence behind them (`spinimpute.model.copying_kernels.copy_posteriors` defines it).

        Args:
            markers: (M, R) uint8 reference alleles at the typed markers (M >= 1), marker-major.
            query: (Q, M) int8 query alleles, -1 where missing.
            candidates: (Q, K) int32 panel haplotypes that are each query's states, increasing
                (`spinimpute.model.copying_numpy.select_candidates`), or None for all R.
            marker_cm, site_cm: (M,) and (J,) float32 genetic positions.
            groups: the reference haplotypes grouped between these markers over these sites.
        """
        ...

    def predict(self, *, inducing: np.ndarray, query_alleles: np.ndarray, hmm_prob: np.ndarray,
                hmm_evidence: np.ndarray, site_features: np.ndarray) -> np.ndarray:
        """(Q, W) float32 ALT probabilities of the SPIN predictor over the copying model's (a new,
        writable array): the sigmoid of `SpinImputer.predict`'s logits.

        Args:
            inducing: (I, F*E) cached inducing points of the window.
            query_alleles: (Q, W) typed alleles 0/1, MASKED elsewhere.
            hmm_prob: (Q, W) ALT probabilities from the copying model.
            hmm_evidence: (Q, W, EVIDENCE_FEATURES) the evidence behind them.
            site_features: (W, SITE_FEATURES).
        """
        ...
