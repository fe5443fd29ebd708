"""The copying model at inference on the CPU: numpy around the compiled kernels, no torch.

`spinimpute.model.copying` holds the same Li-Stephens model as differentiable torch code, which
training differentiates and a GPU runs; on a CPU without gradients it hands its inputs
to the functions here, and CPU imputation calls them directly, so that it never has to
import torch. Tests hold the two equal.

Shapes: Q query haplotypes, K states per query, R reference haplotypes, M typed
markers, J sites to impute; interval k holds the sites between markers k - 1 and k.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from spinimpute.model import copying_kernels, pbwt
from spinimpute.model.config import EVIDENCE_FEATURES

# Markers per segment of candidate preselection; the compiled kernel packs a segment into 16 bits.
SEGMENT_MARKERS = 16
# A panel of more than POOL_STATES times the copying states ranks only each query's pool of that
# many haplotypes, those with the longest exact matches to it (BENCHMARKS.md, preselection).
POOL_STATES = 2
# The copying model's blocks of markers: at most BLOCK_MARKERS markers and BLOCK_SITES sites between
# them (BENCHMARKS.md, constants).
BLOCK_MARKERS = 16
BLOCK_SITES = 4096


def switch_probability(distance_cm: np.ndarray, rate_per_cm) -> np.ndarray:
    """Probability of at least one template switch over a genetic distance (in the inputs' precision)."""
    return -np.expm1(-rate_per_cm * np.maximum(distance_cm, 0))


def switch_jump(marker_cm: np.ndarray, rate_per_cm, n_states: int) -> np.ndarray:
    """(M-1,) float64 p / ((1 - p) K) for the switch probability p between neighbouring markers."""
    distance = np.diff(np.asarray(marker_cm, dtype=np.float64))
    switch = np.minimum(switch_probability(distance, np.float64(rate_per_cm)), 1.0 - 1e-6)
    return switch / ((1.0 - switch) * n_states)


def interval_bounds(marker_cm: np.ndarray, site_cm: np.ndarray) -> list[int]:
    """Site index bounds of the M + 1 intervals cut by the markers (see `SiteGroups`)."""
    interval = np.searchsorted(marker_cm, site_cm, side="right")
    return np.searchsorted(interval, np.arange(len(marker_cm) + 2), side="left").tolist()


@dataclass
class SiteGroups:
    """Reference haplotypes grouped, between each pair of neighbouring markers, by their alleles there,
    and over blocks of neighbouring markers.

    Haplotypes with the same alleles over an interval's sites add up to one term of the
    posterior there, so imputing an interval costs O(U) per query for U distinct
    sequences (far fewer than the panel's haplotypes), as in Minimac's state reduction.
    Over a block of markers, states with the same alleles at its markers and at the sites
    between them share their emissions, so the forward-backward runs over those classes.

    Attributes:
        bounds: interval k holds sites [bounds[k], bounds[k + 1]); interval 0 lies
            before the first marker and interval M after the last.
        group_of: (M + 1, R) int32, each haplotype's sequence in each interval.
        n_groups: (M + 1,) int32, distinct sequences per interval.
        alt_ptr, alt_group: the sequences of site j's interval that carry its ALT allele
            are alt_group[alt_ptr[j]:alt_ptr[j + 1]].
        block_bounds: (n_blocks + 1,) int64, block b holds markers [block_bounds[b], block_bounds[b + 1]).
        block_of: (n_blocks, R) int32, each haplotype's sequence over each block's markers and the
            sites between them.
    """

    bounds: list[int]
    group_of: np.ndarray
    n_groups: np.ndarray
    alt_ptr: np.ndarray
    alt_group: np.ndarray
    block_bounds: np.ndarray
    block_of: np.ndarray


def marker_blocks(bounds: list[int]) -> np.ndarray:
    """Bounds of blocks of consecutive markers, each as long as the sites between its markers stay
    within BLOCK_SITES (and its markers within BLOCK_MARKERS): the classes of states over a block
    grow with its sites, and each block costs O(K) per query at its ends (BENCHMARKS.md, constants)."""
    n_markers = len(bounds) - 2
    inner = np.asarray(bounds, dtype=np.int64)
    cuts = [0]
    m0 = 0
    for m in range(1, n_markers):
        # Marker m joins block [m0, m) if the sites of intervals m0 + 1 .. m stay within BLOCK_SITES.
        if m - m0 >= BLOCK_MARKERS or inner[m + 1] - inner[m0 + 1] > BLOCK_SITES:
            cuts.append(m)
            m0 = m
    cuts.append(n_markers)
    return np.asarray(cuts, dtype=np.int64)


def group_packed_sites(packed: np.ndarray, n_ref: int, bounds: list[int], markers: np.ndarray, *,
                       threads: int = 1) -> SiteGroups:
    """Group the R haplotypes within each interval of `bounds` and over blocks of markers, from the
    sites' np.packbits rows (J, ceil(R / 8)), as the model file stores them, and the (M, R) uint8
    alleles at the markers."""
    group_of, n_groups, alt_ptr, alt_group = copying_kernels.group_intervals(packed, n_ref, np.asarray(bounds), threads)
    block_bounds = marker_blocks(bounds)
    block_of = copying_kernels.group_blocks(packed, np.packbits(np.asarray(markers, dtype=np.uint8), axis=1), n_ref,
                                            np.asarray(bounds), block_bounds, threads)
    return SiteGroups(bounds, group_of, n_groups, alt_ptr, alt_group, block_bounds, block_of)


def site_weights(marker_cm: np.ndarray, site_cm: np.ndarray, bounds: list[int], rate_per_cm, n_states: int):
    """(4, J) weights of the a*g, a, g and uniform terms of each site's posterior, in the
    precision of the positions (float32 as the engine passes them).

    Between markers m - 1 and m, with switch probabilities p1 from the left marker and
    p2 to the right one, a state's posterior is proportional to
    (1-p1)(1-p2) a g + (1-p1) p2 a / K + p1 (1-p2) g / K + p1 p2 / K^2, where a is
    its forward probability at m - 1 and g its backward probability at m. Before the
    first marker only g (at marker 0) and after the last only a (at marker M - 1) is
    defined: (1-p) g + p / K and (1-p) a + p / K.
    """
    n_markers = len(marker_cm)
    rate = np.asarray(rate_per_cm, dtype=site_cm.dtype)
    interval = np.repeat(np.arange(n_markers + 1), np.diff(bounds))
    p1 = switch_probability(site_cm - marker_cm[np.maximum(interval - 1, 0)], rate)
    p2 = switch_probability(marker_cm[np.minimum(interval, n_markers - 1)] - site_cm, rate)
    k = float(n_states)
    inner = np.stack([(1 - p1) * (1 - p2), (1 - p1) * p2 / k, p1 * (1 - p2) / k, p1 * p2 / (k * k)])
    zero = np.zeros_like(p1)
    before = np.stack([zero, zero, 1 - p2, p2 / k])
    after = np.stack([zero, 1 - p1, zero, p1 / k])
    return np.where(interval == 0, before, np.where(interval == n_markers, after, inner))


def segment_cuts(n_markers: int, segment_markers: int = SEGMENT_MARKERS) -> list[int]:
    """Bounds of the marker segments of candidate preselection: as equal as can be, each at most `segment_markers`."""
    n_segments = max(1, -(-n_markers // segment_markers))
    return np.linspace(0, n_markers, n_segments + 1).round().astype(np.int64).tolist()


def top_candidates(priority: np.ndarray, n_candidates: int, *, threads: int = 1) -> np.ndarray:
    """(Q, K) int32 indices of each row's K highest priorities, ties to the lower index, increasing;
    rows in `threads` parts at once (a compiled selection: `copying_kernels.top_rows`)."""
    return copying_kernels.top_rows(priority, n_candidates, threads=threads)


def local_first(priority: np.ndarray, local: np.ndarray) -> np.ndarray:
    """(Q, R) int64 priorities that rank the chunks' own picks (`local`, bool) above every other row,
    each group ordered by `priority` (exact integers)."""
    priority = priority.astype(np.int64)
    span = int(priority.max() - priority.min()) + 1 if priority.size else 1
    return priority + local.astype(np.int64) * span


def pool_size(n_ref: int, n_candidates: int) -> int:
    """Haplotypes `select_candidates` ranks per query: all R, or a pool of POOL_STATES x K in a larger panel."""
    return min(n_ref, POOL_STATES * n_candidates)


def selection_bytes(n_ref: int, n_candidates: int) -> int:
    """Bytes per query of `select_candidates`' rankings (float32 priorities over the whole run and a
    chunk, the chunks' picks, their int64 ranks), besides the PBWT's matches (`pbwt.SELECTION_BYTES`)."""
    return 17 * pool_size(n_ref, n_candidates) + 4 * n_candidates


def select_candidates(markers: np.ndarray, query: np.ndarray, n_candidates: int, *, threads: int = 1) -> np.ndarray:
    """Reference haplotypes that each query copies from most plausibly, as IMPUTE5 preselects states.

    The markers are cut into segments; a haplotype ranks by how close its match over some
    segment and its two neighbours comes to the best match there, so that every stretch
    keeps its own close templates (what template switching needs); ties go to the better
    match over all markers. Each chunk of markers (`pbwt.chunk_cuts`) first picks its
    `pbwt.chunk_quota` best rows by that rank over its own markers; the rest are filled by the
    rank over all of them. In a panel of more than POOL_STATES times K haplotypes, only each
    query's pool is ranked: the POOL_STATES * K with the longest exact matches to it
    (`pbwt.select_candidates`), so that the cost does not grow with the panel.

    Args:
        markers: (M, R) uint8 reference alleles at the markers, marker-major.
        query: (Q, M) int8 query alleles, -1 where missing.
        n_candidates: K <= R states to keep per query.

    Returns:
        (Q, K) int32 indices into the reference rows, increasing along each row.
    """
    n_markers, n_ref = markers.shape
    if pool_size(n_ref, n_candidates) < n_ref:
        pool = pbwt.select_candidates(markers, query, pool_size(n_ref, n_candidates), threads=threads)
    else:
        pool = np.broadcast_to(np.arange(n_ref, dtype=np.int32), (query.shape[0], n_ref))
    priority = copying_kernels.candidate_priority(markers, query, np.asarray(segment_cuts(n_markers)), pool,
                                                  threads=threads)
    chunks = pbwt.chunk_cuts(n_markers)
    if len(chunks) > 2:
        quota = pbwt.chunk_quota(n_candidates, len(chunks) - 1)
        local = np.zeros(priority.shape, dtype=bool)
        for lo, hi in itertools.pairwise(chunks):
            own = copying_kernels.candidate_priority(markers[lo:hi], query[:, lo:hi], np.asarray(segment_cuts(hi - lo)),
                                                     pool, threads=threads)
            np.put_along_axis(local, top_candidates(own, quota, threads=threads).astype(np.int64), True, axis=1)
        priority = local_first(priority, local)
    return np.take_along_axis(pool, top_candidates(priority, n_candidates, threads=threads), axis=1)


def posteriors(markers, query, candidates, marker_cm, site_cm, groups: SiteGroups, rate_per_cm, error, *,
               threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(Q, J) float32 posterior ALT probabilities of the sites for each query, and (Q, J, EVIDENCE_FEATURES)
    float32 the evidence behind them (`copying_kernels.copy_posteriors`).

    Args:
        markers: (M, R) uint8 reference alleles at the typed markers (M >= 1), marker-major.
        query: (Q, M) int8 query alleles, -1 where missing.
        candidates: (Q, K) reference rows that are each query's states, or None for all R.
        marker_cm, site_cm: (M,) and (J,) genetic positions, sorted.
        groups: the reference haplotypes grouped within the intervals of these markers and sites.
        rate_per_cm, error: switch rate per cM and mismatch probability.
    """
    n_ref = markers.shape[1]
    if candidates is None:
        candidates = np.broadcast_to(np.arange(n_ref, dtype=np.int32), (query.shape[0], n_ref))
    n_states = candidates.shape[1]
    weights = site_weights(marker_cm, site_cm, groups.bounds, rate_per_cm, n_states)
    return copying_kernels.copy_posteriors(
        markers, query, candidates, switch_jump(marker_cm, rate_per_cm, n_states), float(error),
        np.asarray(groups.bounds), (groups.group_of, groups.n_groups, groups.alt_ptr, groups.alt_group),
        (groups.block_bounds, groups.block_of), weights.astype(np.float64), threads=threads,
    )


def frequency_posteriors(alt_freq: np.ndarray, n_query: int, n_ref: int) -> tuple[np.ndarray, np.ndarray]:
    """`posteriors` where no typed marker is in reach: every panel haplotype equally likely a template,
    so each site's ALT probability and its carriers' shares are its panel frequency, and the chance of
    copying one template across it is 1 / n_ref. Read-only broadcasts, (Q, J) and (Q, J, EVIDENCE_FEATURES)."""
    freq = np.asarray(alt_freq, dtype=np.float32)
    evidence = np.stack([freq, freq, freq, np.full_like(freq, -np.log10(max(1, n_ref)))], axis=-1)
    return (np.broadcast_to(freq, (n_query, len(freq))),
            np.broadcast_to(evidence, (n_query, len(freq), EVIDENCE_FEATURES)))
