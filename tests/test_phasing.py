import itertools

import numpy as np
import pytest

from spinimpute.engine import phasing
from spinimpute.model import pbwt


def _fit_order(misfit: np.ndarray, chunk_total: int) -> np.ndarray:
    """The definition: panel haplotypes by their count of misfitting markers ((M, R) bool), a stable
    sort, first each chunk's own best `chunk_total` over all chunks (when there are two or more)."""
    overall = np.argsort(misfit.sum(axis=0), kind="stable")
    cuts = pbwt.chunk_cuts(len(misfit), phasing.CANDIDATE_CHUNK_MARKERS)
    if len(cuts) < 3:
        return overall
    share = max(1, chunk_total // (len(cuts) - 1))
    picked = [np.argsort(misfit[a:b].sum(axis=0), kind="stable")[:share] for a, b in itertools.pairwise(cuts)]
    return np.concatenate([*picked, overall])


def _first_distinct(order: np.ndarray, k: int) -> np.ndarray:
    _, first_seen = np.unique(order, return_index=True)
    return np.sort(order[np.sort(first_seen)][:k])


@pytest.mark.parametrize("n_markers,n_ref", [(30, 20), (75, 200), (150, 500), (170, 3000)])
def test_candidates_are_the_best_fitting_haplotypes_by_their_definition(n_markers, n_ref):
    """Pair and haplotype candidates (counted from bit words of up to 64 markers, ranked by a counting
    sort) against their definition (a stable sort of each sample's misfit counts), with many tied
    counts, missing genotypes, one chunk of 75 markers (two words) and chunks of one word."""
    rng = np.random.default_rng(n_ref)
    templates = (rng.random((n_markers, 12)) < 0.3).astype(np.uint8)
    markers = templates[:, rng.integers(0, 12, n_ref)]  # few distinct haplotypes: ties everywhere
    markers[rng.random(markers.shape) < 0.02] ^= 1
    first = markers[:, rng.integers(0, n_ref, 9)].T.astype(np.int8)
    second = markers[:, rng.integers(0, n_ref, 9)].T.astype(np.int8)
    first[rng.random(first.shape) < 0.05] = -1
    genotypes = np.where((first < 0) | (second < 0), -1, first + second).astype(np.int8)
    pair = phasing.pair_candidates(genotypes, markers, threads=2)
    both = phasing.haplotype_candidates(first, second, markers, threads=2)
    for j, g in enumerate(genotypes):
        contradicts = ((g == 0)[:, None] & (markers == 1)) | ((g == 2)[:, None] & (markers == 0))
        k = min(phasing.PAIR_CANDIDATES, n_ref)
        np.testing.assert_array_equal(pair[j], _first_distinct(_fit_order(contradicts, phasing.PAIR_CANDIDATES // 2), k))
        orders = [_fit_order(markers != h[:, None], phasing.HAPLOTYPE_CANDIDATES // 4) for h in (first[j], second[j])]
        np.testing.assert_array_equal(both[j], _first_distinct(np.stack(orders, axis=1).ravel(),
                                                               min(phasing.HAPLOTYPE_CANDIDATES, n_ref)))
