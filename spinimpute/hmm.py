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

import torch


def switch_probability(distance_cm: torch.Tensor, rate_per_cm: torch.Tensor) -> torch.Tensor:
    """Probability of at least one template switch over a genetic distance."""
    return -torch.expm1(-rate_per_cm * distance_cm.clamp(min=0.0))


def emission(
    ref_alleles: torch.Tensor, query_alleles: torch.Tensor, observed: torch.Tensor, error: torch.Tensor
) -> torch.Tensor:
    """Emission probabilities at each marker, marker-major so that each step reads contiguous memory.

    Args:
        ref_alleles: (R, M) 0/1 reference alleles.
        query_alleles: (Q, M) 0/1 query alleles.
        observed: (Q, M) bool, False where the query allele is missing.
        error: scalar mismatch probability.

    Returns:
        (M, Q, R) probabilities: 1 - error on a match, error on a mismatch, 1 where missing.
    """
    r = ref_alleles.T.unsqueeze(1)
    q = query_alleles.T.unsqueeze(2)
    match = q * r + (1.0 - q) * (1.0 - r)
    e = error + (1.0 - 2.0 * error) * match
    return torch.where(observed.T.unsqueeze(2), e, torch.ones_like(e))


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
        ref_typed: (R, M) reference alleles at the typed markers.
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
    n_ref, n_markers = ref_typed.shape
    dtype = ref_typed.dtype
    switch = switch_probability(marker_cm[1:] - marker_cm[:-1], rate_per_cm)  # (M-1,)
    emit = emission(ref_typed, query_typed, observed, error)  # (M, Q, R)
    alphas = []
    a = emit[0] / n_ref
    a = a / a.sum(dim=1, keepdim=True)
    alphas.append(a)
    for m in range(1, n_markers):
        p = switch[m - 1]
        a = emit[m] * ((1.0 - p) * a + p / n_ref)
        a = a / a.sum(dim=1, keepdim=True)
        alphas.append(a)
    gammas = [None] * n_markers
    g = emit[n_markers - 1]
    g = g / g.sum(dim=1, keepdim=True)
    gammas[n_markers - 1] = g
    for m in range(n_markers - 2, -1, -1):
        p = switch[m]
        # g is the normalised product of backward and emission at m+1; sums to one.
        g = emit[m] * ((1.0 - p) * g + p / n_ref)
        g = g / g.sum(dim=1, keepdim=True)
        gammas[m] = g
    if n_query == 0:
        empty = torch.zeros(0, n_markers, n_ref, dtype=dtype)
        return empty, empty
    return torch.stack(alphas, dim=1), torch.stack(gammas, dim=1)


def impute_sites(
    ref_typed: torch.Tensor,
    query_typed: torch.Tensor,
    observed: torch.Tensor,
    marker_cm: torch.Tensor,
    ref_sites: torch.Tensor,
    site_cm: torch.Tensor,
    rate_per_cm: torch.Tensor,
    error: torch.Tensor,
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

    Returns:
        (Q, J) probabilities in [0, 1].
    """
    n_ref = ref_typed.shape[0]
    n_query = query_typed.shape[0]
    alpha, gamma = forward_backward(ref_typed, query_typed, observed, marker_cm, rate_per_cm, error)
    n_markers = marker_cm.shape[0]
    # Interval k holds the sites with k markers at or before them: 0 = before the first.
    interval = torch.searchsorted(marker_cm.contiguous(), site_cm.contiguous(), right=True)
    out = torch.empty(n_query, site_cm.shape[0], dtype=ref_sites.dtype)
    bounds = torch.searchsorted(interval, torch.arange(n_markers + 2, dtype=interval.dtype))
    for k in range(n_markers + 1):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        if lo == hi:
            continue
        cols = ref_sites[:, lo:hi]  # (R, S)
        cm = site_cm[lo:hi]
        alt_total = cols.sum(dim=0)  # (S,)
        if k == 0:
            # Before the first marker: only the backward message carries information.
            p2 = switch_probability(marker_cm[0] - cm, rate_per_cm)
            num = (1.0 - p2) * (gamma[:, 0] @ cols) + p2 * alt_total / n_ref
            out[:, lo:hi] = num
            continue
        if k == n_markers:
            p1 = switch_probability(cm - marker_cm[-1], rate_per_cm)
            num = (1.0 - p1) * (alpha[:, -1] @ cols) + p1 * alt_total / n_ref
            out[:, lo:hi] = num
            continue
        a = alpha[:, k - 1]  # (Q, R), sums to 1
        g = gamma[:, k]  # (Q, R), sums to 1
        p1 = switch_probability(cm - marker_cm[k - 1], rate_per_cm)  # (S,)
        p2 = switch_probability(marker_cm[k] - cm, rate_per_cm)
        ag = a * g
        stacked = torch.cat([ag, a, g], dim=0) @ cols  # (3Q, S)
        ag_cols, a_cols, g_cols = stacked[:n_query], stacked[n_query : 2 * n_query], stacked[2 * n_query :]
        w_ag = (1.0 - p1) * (1.0 - p2)
        w_a = (1.0 - p1) * p2 / n_ref
        w_g = p1 * (1.0 - p2) / n_ref
        w_1 = p1 * p2 / (n_ref * n_ref)
        num = w_ag * ag_cols + w_a * a_cols + w_g * g_cols + w_1 * alt_total
        den = w_ag * ag.sum(dim=1, keepdim=True) + w_a + w_g + w_1 * n_ref
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
