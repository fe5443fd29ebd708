"""Li-Stephens haplotype copying model, written as differentiable torch code.

This is the semi-parametric path of the model: each query haplotype is explained as a
mosaic of reference haplotypes, and switching between templates along the window is
what lets it follow recombination, as an HMM-based imputer does. The forward-backward
pass runs over the typed markers only; posteriors at every other site are obtained in
closed form from the flanking markers, so the cost is O(Q * R * (M + J)) and the
per-site work is a few matrix products.

Shapes: Q query haplotypes, R reference haplotypes, M typed markers, J sites to impute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def switch_probability(distance_cm: torch.Tensor, rate_per_cm: torch.Tensor) -> torch.Tensor:
    """Probability of at least one template switch over a genetic distance."""
    return -torch.expm1(-rate_per_cm * distance_cm.clamp(min=0.0))


def emission(
    ref_alleles: torch.Tensor, query_alleles: torch.Tensor, observed: torch.Tensor, error: torch.Tensor
) -> torch.Tensor:
    """Emission probabilities at each marker, marker-major so that each step reads contiguous memory.

    Only ratios between states matter at a marker, so a missing query allele, which
    every state explains equally, gets the same value as a match.

    Args:
        ref_alleles: (R, M) 0/1 reference alleles shared by all queries, or (Q, R, M)
            each query's own reference states.
        query_alleles: (Q, M) 0/1 query alleles.
        observed: (Q, M) bool, False where the query allele is missing.
        error: scalar mismatch probability.

    Returns:
        (M, Q, R) probabilities: error on an observed mismatch, 1 - error otherwise.
    """
    r = ref_alleles.movedim(-1, 0).contiguous()  # marker-major, so each step reads one block
    if r.dim() == 2:
        r = r.unsqueeze(1)
    mismatch = (r != query_alleles.T.unsqueeze(2)) & observed.T.unsqueeze(2)
    return torch.where(mismatch, error, 1.0 - error).to(ref_alleles.dtype)


def forward_backward(
    ref_typed: torch.Tensor,
    query_typed: torch.Tensor,
    observed: torch.Tensor,
    marker_cm: torch.Tensor,
    rate_per_cm: torch.Tensor,
    error: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled forward and backward passes over the typed markers.

    Args:
        ref_typed: (R, M) reference alleles at the typed markers, or (Q, R, M) when each
            query has its own R candidate states.
        query_typed: (Q, M) query alleles at the typed markers.
        observed: (Q, M) bool mask of observed query alleles.
        marker_cm: (M,) genetic positions of the markers, non-decreasing.
        rate_per_cm: scalar template switch rate per cM.
        error: scalar mismatch probability.

    Returns:
        alpha: (Q, M, R) forward state probabilities after each marker's emission, each
            row summing to one.
        gamma: (Q, M, R) backward probabilities including each marker's emission,
            each row summing to one.
    """
    n_query = query_typed.shape[0]
    n_ref, n_markers = ref_typed.shape[-2:]
    dtype = ref_typed.dtype
    if n_query == 0:
        empty = torch.zeros(0, n_markers, n_ref, dtype=dtype, device=ref_typed.device)
        return empty, empty
    switch = switch_probability(marker_cm[1:] - marker_cm[:-1], rate_per_cm).clamp(max=1.0 - 1e-6)  # (M-1,)
    # (1 - p) a + p / R is proportional to a + p / ((1 - p) R): one operation fewer per step.
    jump = switch / ((1.0 - switch) * n_ref)
    emit = emission(ref_typed, query_typed, observed, error)  # (M, Q, R)
    alphas = []
    a = emit[0] / emit[0].sum(dim=1, keepdim=True)
    alphas.append(a)
    for m in range(1, n_markers):
        a = emit[m] * (a + jump[m - 1])
        a = a / a.sum(dim=1, keepdim=True)
        alphas.append(a)
    gammas = [None] * n_markers
    g = emit[n_markers - 1] / emit[n_markers - 1].sum(dim=1, keepdim=True)
    gammas[n_markers - 1] = g
    for m in range(n_markers - 2, -1, -1):
        # g is the normalised product of backward and emission at m+1; sums to one.
        g = emit[m] * (g + jump[m])
        g = g / g.sum(dim=1, keepdim=True)
        gammas[m] = g
    return torch.stack(alphas, dim=1), torch.stack(gammas, dim=1)


def select_candidates(
    ref_typed: torch.Tensor, query_typed: torch.Tensor, observed: torch.Tensor, n_candidates: int,
    *, segment_markers: int = 16,
) -> torch.Tensor:
    """Reference haplotypes that each query copies from most plausibly, as IMPUTE5 preselects states.

    The markers are cut into segments; a haplotype ranks by how close its match over
    some segment and its two neighbours comes to the best match there, so that every
    stretch of the window keeps its own close templates (what template switching
    needs); ties go to the better match over the whole window. Cost: one
    (Q, M) x (M, R) product and one top-k.

    Args:
        ref_typed: (R, M) reference alleles at the markers.
        query_typed: (Q, M) query alleles; observed: (Q, M) bool.
        n_candidates: K < R states to keep per query.

    Returns:
        (Q, K) long indices into the reference rows, increasing along each row.
    """
    n_markers = ref_typed.shape[1]
    x = (2.0 * query_typed - 1.0) * observed  # +1 ALT, -1 REF, 0 missing
    y = 2.0 * ref_typed - 1.0
    n_segments = max(1, -(-n_markers // segment_markers))
    cuts = torch.linspace(0, n_markers, n_segments + 1).round().long().tolist()
    per_segment = torch.stack(
        [x[:, lo:hi] @ y[:, lo:hi].T for lo, hi in zip(cuts[:-1], cuts[1:])], dim=1
    )  # (Q, S, R) matches minus mismatches
    local = per_segment.clone()
    local[:, 1:] += per_segment[:, :-1]
    local[:, :-1] += per_segment[:, 1:]
    shortfall = (local - local.amax(dim=2, keepdim=True)).amax(dim=1)  # (Q, R), 0 for some segment's best
    total = per_segment.sum(dim=1)
    priority = shortfall * (4.0 * n_markers + 4.0) + total
    return torch.topk(priority, n_candidates, dim=1, sorted=False).indices.sort(dim=1).values


@dataclass
class SiteGroups:
    """Reference haplotypes grouped, between each pair of neighbouring markers, by their alleles there.

    Haplotypes with the same alleles over an interval's sites add up to one term of the
    posterior there, so imputing an interval costs O(U) per query for U distinct
    sequences (far fewer than the panel's haplotypes), as in Minimac's state reduction.

    Attributes:
        bounds: interval k holds sites [bounds[k], bounds[k + 1]); interval 0 lies
            before the first marker and interval M after the last.
        group_of: (M + 1, R) long, each haplotype's sequence in each interval.
        sequences: per interval, (U_k, S_k) 0/1 alleles of its distinct sequences.
    """

    bounds: list[int]
    group_of: torch.Tensor
    sequences: list[torch.Tensor]


def _distinct_rows(block: np.ndarray, key: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """First index of each distinct row of a (R, S) 0/1 uint8 block and each row's group.

    `key` is an optional (R,) hash of the rows: grouping by one number per row is far
    faster than sorting whole rows; a collision is caught and the rows are then sorted.
    """
    if key is not None:
        _, first, group = np.unique(key, return_index=True, return_inverse=True)
        if np.array_equal(block[first][group], block):
            return first, group.reshape(-1)
    _, first, group = np.unique(block, axis=0, return_index=True, return_inverse=True)
    return first, group.reshape(-1)


# Random integer weights of the sites for the row hashes; below 2**16, so that a sum over
# an interval of up to 2**15 sites fits in 31 bits (and float64 adds it up exactly).
_HASH_WEIGHTS = np.random.default_rng(20230401).integers(1, 2**16, size=(2, 1 << 15), dtype=np.int32)
_HASH_CHUNK_SITES = 2048  # bounds the (R, sites) temporary


def _row_hashes(alleles: np.ndarray, bounds: list[int]) -> np.ndarray:
    """(R, n_intervals) int64 hash of each haplotype's alleles over each interval.

    Two sums of random site weights per interval and haplotype, as products of
    block-sparse (intervals, sites) weight matrices with the site-major alleles, over
    chunks of whole intervals; float64 adds these integers up exactly.
    """
    by_site = np.ascontiguousarray(alleles.T)  # (J, R); free when alleles is a transposed view
    n_intervals = len(bounds) - 1
    keys = np.zeros((alleles.shape[0], n_intervals), dtype=np.int64)
    first = 0
    while first < n_intervals:
        last = first + 1  # chunk of intervals [first, last), at least one
        while last < n_intervals and bounds[last + 1] - bounds[first] <= _HASH_CHUNK_SITES:
            last += 1
        lo, hi = bounds[first], bounds[last]
        if hi > lo:
            interval = np.repeat(np.arange(last - first), np.diff(bounds[first : last + 1]))
            block = by_site[lo:hi].astype(np.float64)
            for weights in _HASH_WEIGHTS:
                w = np.zeros((last - first, hi - lo))
                w[interval, np.arange(hi - lo)] = weights[np.arange(lo, hi) % len(weights)]
                keys[:, first:last] = (keys[:, first:last] << 31) | (w @ block).T.astype(np.int64)
        first = last
    return keys


def interval_bounds(marker_cm: torch.Tensor, site_cm: torch.Tensor) -> list[int]:
    """Site index bounds of the M + 1 intervals cut by the markers (see `SiteGroups`)."""
    interval = torch.searchsorted(marker_cm.contiguous(), site_cm.contiguous(), right=True)
    n_markers = marker_cm.shape[0]
    return torch.searchsorted(interval, torch.arange(n_markers + 2, dtype=interval.dtype,
                                                     device=interval.device)).tolist()


def group_sites(ref_sites: torch.Tensor, bounds: list[int]) -> SiteGroups:
    """Group the reference haplotypes (R, J) within each interval of `bounds`.

    ref_sites may be uint8 to save memory; the sequences come back as float32.
    """
    alleles = ref_sites.detach().to("cpu", torch.uint8).numpy()
    keys = _row_hashes(alleles, bounds)
    n_ref = alleles.shape[0]
    group_of = np.zeros((len(bounds) - 1, n_ref), dtype=np.int64)
    sequences = []
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        if lo == hi:
            sequences.append(torch.zeros(1, 0, device=ref_sites.device))
            continue
        first, group_of[k] = _distinct_rows(alleles[:, lo:hi], keys[:, k] if hi - lo <= len(_HASH_WEIGHTS[0]) else None)
        sequences.append(ref_sites[torch.from_numpy(first).to(ref_sites.device), lo:hi].float())
    return SiteGroups(bounds, torch.from_numpy(group_of).to(ref_sites.device), sequences)


def impute_sites(
    ref_typed: torch.Tensor,
    query_typed: torch.Tensor,
    observed: torch.Tensor,
    marker_cm: torch.Tensor,
    ref_sites: torch.Tensor,
    site_cm: torch.Tensor,
    rate_per_cm: torch.Tensor,
    error: torch.Tensor,
    *,
    candidates: torch.Tensor | None = None,
    groups: SiteGroups | None = None,
) -> torch.Tensor:
    """Posterior probability of the ALT allele at each site for each query haplotype.

    Args:
        ref_typed: (R, M) reference alleles at the typed markers (M >= 1).
        query_typed: (Q, M) query alleles at the typed markers.
        observed: (Q, M) bool mask of observed query alleles.
        marker_cm: (M,) genetic positions of the markers, sorted.
        ref_sites: (R, J) reference alleles at the sites to impute.
        site_cm: (J,) genetic positions of those sites, sorted.
        rate_per_cm, error: HMM parameters (scalars).
        candidates: optional (Q, K) reference rows that each query copies from (see
            `select_candidates`); all R rows when None.
        groups: `group_sites(ref_sites, interval_bounds(marker_cm, site_cm))`, to reuse
            it across batches of queries; made here when None.

    Returns:
        (Q, J) probabilities in [0, 1].
    """
    n_query = query_typed.shape[0]
    if groups is None:
        groups = group_sites(ref_sites, interval_bounds(marker_cm, site_cm))
    if candidates is None:
        states = ref_typed
        n_states = ref_typed.shape[0]
        group_of = groups.group_of.unsqueeze(1).expand(-1, n_query, -1)  # (M+1, Q, R)
    else:
        states = ref_typed[candidates]  # (Q, K, M)
        n_states = candidates.shape[1]
        group_of = groups.group_of[:, candidates]  # (M+1, Q, K)
    alpha, gamma = forward_backward(states, query_typed, observed, marker_cm, rate_per_cm, error)
    n_markers = marker_cm.shape[0]
    out = torch.empty(n_query, site_cm.shape[0], dtype=alpha.dtype, device=alpha.device)
    ones = torch.ones(n_query, n_states, dtype=alpha.dtype, device=alpha.device)
    bounds = groups.bounds
    for k in range(n_markers + 1):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi:
            continue
        cm = site_cm[lo:hi]
        # Rows whose sums over each group are multiplied by the group's alleles; the last
        # one counts ALT alleles among the states, for switches to a uniform state.
        if k == 0:
            rows = [gamma[:, 0], ones]
        elif k == n_markers:
            rows = [alpha[:, -1], ones]
        else:
            a, g = alpha[:, k - 1], gamma[:, k]
            rows = [a * g, a, g, ones]
        seqs = groups.sequences[k]
        index = group_of[k].repeat(len(rows), 1)
        summed = torch.zeros(len(rows) * n_query, seqs.shape[0], dtype=alpha.dtype, device=alpha.device)
        summed = summed.scatter_add(1, index, torch.cat(rows))
        products = (summed @ seqs.to(summed.dtype)).view(len(rows), n_query, -1)
        if k == 0:
            p2 = switch_probability(marker_cm[0] - cm, rate_per_cm)
            out[:, lo:hi] = (1.0 - p2) * products[0] + p2 * products[1] / n_states
            continue
        if k == n_markers:
            p1 = switch_probability(cm - marker_cm[-1], rate_per_cm)
            out[:, lo:hi] = (1.0 - p1) * products[0] + p1 * products[1] / n_states
            continue
        ag_cols, a_cols, g_cols, alt_total = products
        p1 = switch_probability(cm - marker_cm[k - 1], rate_per_cm)  # (S,)
        p2 = switch_probability(marker_cm[k] - cm, rate_per_cm)
        w_ag = (1.0 - p1) * (1.0 - p2)
        w_a = (1.0 - p1) * p2 / n_states
        w_g = p1 * (1.0 - p2) / n_states
        w_1 = p1 * p2 / (n_states * n_states)
        num = w_ag * ag_cols + w_a * a_cols + w_g * g_cols + w_1 * alt_total
        den = w_ag * rows[0].sum(dim=1, keepdim=True) + w_a + w_g + w_1 * n_states
        out[:, lo:hi] = num / den
    return out.clamp(0.0, 1.0)


def leave_one_out(
    ref_typed: torch.Tensor,
    query_typed: torch.Tensor,
    observed: torch.Tensor,
    marker_cm: torch.Tensor,
    rate_per_cm: torch.Tensor,
    error: torch.Tensor,
) -> torch.Tensor:
    """ALT probability at each marker given all the other markers' observations.

    The forward message before a marker's emission and the backward message after it
    give the posterior with that marker's own allele left out.

    Args: as `forward_backward`.

    Returns:
        (Q, M) probabilities.
    """
    n_ref, n_markers = ref_typed.shape
    alpha, gamma = forward_backward(ref_typed, query_typed, observed, marker_cm, rate_per_cm, error)
    switch = switch_probability(marker_cm[1:] - marker_cm[:-1], rate_per_cm)  # (M-1,)
    before = torch.full_like(alpha, 1.0 / n_ref)
    before[:, 1:] = (1.0 - switch[None, :, None]) * alpha[:, :-1] + switch[None, :, None] / n_ref
    after = torch.ones_like(gamma)
    after[:, :-1] = (1.0 - switch[None, :, None]) * gamma[:, 1:] + switch[None, :, None] / n_ref
    weight = before.mul_(after)
    return torch.einsum("qmr,rm->qm", weight, ref_typed) / weight.sum(-1)
