"""The model's hyperparameters, each default written once, and the constants its inputs follow.

`ModelConfig` is what the network is built from (`spinimpute.model.network.SpinImputer`),
what the CPU backend reads (`spinimpute.engine.cpu.CpuImputer`) and what a model file
stores. No torch here: CPU imputation reads it without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

SITE_FEATURES = 3  # per site: ALT frequency, log10 MAF, genetic position relative to the window's centre
MASKED = 2  # allele code of a masked (untyped) SNP inside a token
# Per query haplotype and site, what the copying model's posterior rests on, which the predictor
# reads beside it (`spinimpute.model.copying_kernels.copy_posteriors` defines them): the ALT
# carriers' shares of the forward and of the backward message at the flanking markers, of the
# states, and log10 of the chance of copying one template across the site's interval.
EVIDENCE_FEATURES = 4
# The predictor refines only tokens where the copying model is unsure of some site (ALT
# probability in (CERTAIN, 1 - CERTAIN)); the others keep its logits (BENCHMARKS.md, constants).
CERTAIN = 1e-3
# State-dict names of the two linear layers of an attention block's feed-forward part
# (`MultiheadAttentionBlock.ff`, an nn.Sequential), which model files store and the CPU backend reads.
FEED_FORWARD = ("ff.0", "ff.3")


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the SPIN network and its copying model.

    Attributes:
        embed_dim: token embedding width E.
        n_latents: latent attributes per row F.
        n_inducing: inducing points I.
        n_layers: SPIN layers in the dataset encoder.
        n_heads: attention heads.
        kmer: SNPs per token.
        dropout: dropout in attention blocks.
        ne: initial effective population size of the copying model; the switch rate per
            cM is 0.04 * ne / n_reference_haplotypes, as in Beagle.
        mismatch: initial copying mismatch probability.
        copying_states: most reference haplotypes the copying model runs over per query
            haplotype and window; larger panels are cut to the best-matching ones, so
            imputing costs about the same whatever the panel size.
        refinement_weight: scale of the predictor's corrections to the copying model's
            logits: 1 while training; after it, fitted on held-out panel haplotypes
            (`spinimpute.training.calibration`), 0 leaving the copying model's logits as they are.
    """

    embed_dim: int = 16
    n_latents: int = 8
    n_inducing: int = 8
    n_layers: int = 2
    n_heads: int = 4
    kmer: int = 4
    dropout: float = 0.0
    ne: float = 1e5
    mismatch: float = 1e-3
    copying_states: int = 400
    refinement_weight: float = 1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = int if f.type == "int" else float
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise ValueError(f"hyperparameter {f.name}={value!r} is not a{'n integer' if kind is int else ' number'}")
        if min(self.embed_dim, self.n_latents, self.n_inducing, self.n_heads, self.kmer, self.copying_states) < 1:
            raise ValueError("sizes must be positive")
        if self.embed_dim % self.n_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not a multiple of n_heads {self.n_heads}")
        if not 0 <= self.refinement_weight <= 1:
            raise ValueError(f"refinement_weight {self.refinement_weight!r} is not a number in [0, 1]")

    @classmethod
    def from_hyperparameters(cls, values: dict) -> ModelConfig:
        """From a model file's hyperparameters (missing ones take the defaults); ValueError for unknown ones."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {', '.join(unknown)}")
        return cls(**values)

    def hyperparameters(self) -> dict:
        """As a model file stores them."""
        return dataclasses.asdict(self)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)
