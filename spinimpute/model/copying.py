"""Li-Stephens haplotype copying model, written as differentiable torch code.

This is the semi-parametric path of the model: each query haplotype is explained as a
mosaic of reference haplotypes, and switching between templates along the window is
what lets it follow recombination, as an HMM-based imputer does. The forward-backward
pass runs over the typed markers only; posteriors at every other site are obtained in
closed form from the flanking markers, so the cost is O(Q * R * (M + J)) and the
per-site work is a few matrix products. This torch code is what training
differentiates and what runs on a GPU; on a CPU without gradients `impute_sites` hands
the same arithmetic to `spinimpute.model.copying_numpy` (numpy around compiled loops), which CPU
imputation also calls directly, without torch.

Shapes: Q query haplotypes, R reference haplotypes, M typed markers, J sites to impute.
"""

from __future__ import annotations

import numpy as np
import torch

from spinimpute.model import copying_numpy
from spinimpute.model.config import EVIDENCE_FEATURES
from spinimpute.model.copying_numpy import SiteGroups


def switch_probability(distance_cm: torch.Tensor, rate_per_cm: torch.Tensor) -> torch.Tensor:
    """Probability of at least one template switch over a genetic distance."""
    return -torch.expm1(-rate_per_cm * distance_cm.clamp(min=0.0))


def switch_jump(marker_cm: torch.Tensor, rate_per_cm: torch.Tensor, n_states: int) -> torch.Tensor:
    """(M-1,) p / ((1 - p) K) for the switch probability p between neighbouring markers.

    (1 - p) a + p / K is proportional to a + p / ((1 - p) K): one operation fewer per
    step of the forward and backward passes.
    """
    switch = switch_probability(marker_cm[1:] - marker_cm[:-1], rate_per_cm).clamp(max=1.0 - 1e-6)
    return switch / ((1.0 - switch) * n_states)


def runs_compiled(*tensors: torch.Tensor) -> bool:
    """Whether `impute_sites` hands these inputs to the compiled kernels: on a CPU, no gradient needed."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return tensors[0].device.type == "cpu" and not needs_grad


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
    jump = switch_jump(marker_cm, rate_per_cm, n_ref)
    emit = emission(ref_typed, query_typed, observed, error)  # (M, Q, R)
    alphas = []
    a = emit[0] / emit[0].sum(dim=1, keepdim=True)
    alphas.append(a)
    for m in range(1, n_markers):
        a = emit[m] * (a + jump[m - 1])
        a = a / a.sum(dim=1, keepdim=True)
        alphas.append(a)
    gammas: list[torch.Tensor] = [emit[0]] * n_markers  # each filled below
    g = emit[n_markers - 1] / emit[n_markers - 1].sum(dim=1, keepdim=True)
    gammas[n_markers - 1] = g
    for m in range(n_markers - 2, -1, -1):
        # g is the normalised product of backward and emission at m+1; sums to one.
        g = emit[m] * (g + jump[m])
        g = g / g.sum(dim=1, keepdim=True)
        gammas[m] = g
    return torch.stack(alphas, dim=1), torch.stack(gammas, dim=1)


def select_candidates(ref_typed: torch.Tensor, query_typed: torch.Tensor, observed: torch.Tensor,
                      n_candidates: int) -> torch.Tensor:
    """Reference haplotypes that each query copies from most plausibly (`copying_numpy.select_candidates`,
    on the CPU whatever the tensors' device: its PBWT pass is sequential over markers).

    Args:
        ref_typed: (R, M) reference alleles at the markers.
        query_typed: (Q, M) query alleles; observed: (Q, M) bool.
        n_candidates: K <= R states to keep per query.

    Returns:
        (Q, K) long indices into the reference rows, increasing along each row, on the tensors' device.
    """
    markers, query = _kernel_alleles(ref_typed.cpu(), query_typed.cpu(), observed.cpu())
    chosen = copying_numpy.select_candidates(markers, query, n_candidates, threads=torch.get_num_threads())
    return torch.from_numpy(chosen).to(ref_typed.device, torch.int64)


class GroupSequences:
    """Each interval's distinct sequences as (U_k, S_k) float 0/1 matrices (`sequences[k]`), built on
    `device` from the groups' lists of ALT sequences, which go to the device once rather than once per
    interval (the GPU profile: BENCHMARKS.md, GPU)."""

    def __init__(self, groups: SiteGroups, device=None):
        self.groups, self.device = groups, device
        self.alt_group = torch.from_numpy(groups.alt_group.astype(np.int64)).to(device)
        counts = np.diff(groups.alt_ptr)
        self.site_of_alt = torch.from_numpy(np.repeat(np.arange(len(counts), dtype=np.int64), counts)).to(device)

    def __getitem__(self, k: int) -> torch.Tensor:
        g = self.groups
        lo, hi = g.bounds[k], g.bounds[k + 1]
        first, last = int(g.alt_ptr[lo]), int(g.alt_ptr[hi])
        dense = torch.zeros(int(g.n_groups[k]), hi - lo, device=self.device)
        dense[self.alt_group[first:last], self.site_of_alt[first:last] - lo] = 1.0
        return dense


def interval_bounds(marker_cm: torch.Tensor, site_cm: torch.Tensor) -> list[int]:
    """Site index bounds of the M + 1 intervals cut by the markers (see `SiteGroups`)."""
    return copying_numpy.interval_bounds(marker_cm.detach().cpu().numpy(), site_cm.detach().cpu().numpy())


def group_sites(ref_sites: torch.Tensor, ref_typed: torch.Tensor, bounds: list[int]) -> SiteGroups:
    """Group the reference haplotypes (R, J) within each interval of `bounds` and over blocks of
    the markers (R, M) (`copying_numpy.group_packed_sites`)."""
    by_site = ref_sites.detach().to("cpu", torch.uint8).T.numpy()
    return copying_numpy.group_packed_sites(np.packbits(by_site, axis=1), ref_sites.shape[0], bounds,
                                            ref_typed.detach().to("cpu", torch.uint8).T.numpy(),
                                            threads=torch.get_num_threads())


def site_weights(
    marker_cm: torch.Tensor, site_cm: torch.Tensor, bounds: list[int], rate_per_cm: torch.Tensor, n_states: int
) -> torch.Tensor:
    """(4, J) weights of the a*g, a, g and uniform terms of each site's posterior, as
    `copying_numpy.site_weights` (which states the formula) computes them, but differentiable in
    the switch rate, which training learns through them."""
    n_markers = marker_cm.shape[0]
    interval = torch.repeat_interleave(
        torch.arange(n_markers + 1, device=site_cm.device), torch.tensor(np.diff(bounds), device=site_cm.device)
    )
    p1 = switch_probability(site_cm - marker_cm[(interval - 1).clamp(min=0)], rate_per_cm)
    p2 = switch_probability(marker_cm[interval.clamp(max=n_markers - 1)] - site_cm, rate_per_cm)
    k = float(n_states)
    inner = torch.stack([(1 - p1) * (1 - p2), (1 - p1) * p2 / k, p1 * (1 - p2) / k, p1 * p2 / (k * k)])
    zero = torch.zeros_like(p1)
    before = torch.stack([zero, zero, 1 - p2, p2 / k])
    after = torch.stack([zero, 1 - p1, zero, p1 / k])
    return torch.where(interval == 0, before, torch.where(interval == n_markers, after, inner))


def impute_sites(
    ref_typed: torch.Tensor,
    query_typed: torch.Tensor,
    observed: torch.Tensor,
    marker_cm: torch.Tensor,
    ref_sites: torch.Tensor | None,
    site_cm: torch.Tensor,
    rate_per_cm: torch.Tensor,
    error: torch.Tensor,
    *,
    candidates: torch.Tensor | None = None,
    groups: SiteGroups | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior probability of the ALT allele at each site for each query haplotype, and the evidence
    behind it (`spinimpute.model.copying_kernels.copy_posteriors` defines its EVIDENCE_FEATURES).

    On a CPU, when no gradient is needed, the compiled kernels of `spinimpute.model.copying_kernels`
    do the same arithmetic (far fewer, larger steps than torch operations can take).

    Args:
        ref_typed: (R, M) reference alleles at the typed markers (M >= 1).
        query_typed: (Q, M) query alleles at the typed markers.
        observed: (Q, M) bool mask of observed query alleles.
        marker_cm: (M,) genetic positions of the markers, sorted.
        ref_sites: (R, J) reference alleles at the sites to impute; not read when `groups` is given.
        site_cm: (J,) genetic positions of those sites, sorted.
        rate_per_cm, error: HMM parameters (scalars).
        candidates: optional (Q, K) reference rows that each query copies from (see
            `select_candidates`); all R rows when None.
        groups: `group_sites(ref_sites, ref_typed, interval_bounds(marker_cm, site_cm))`, to reuse
            it across batches of queries; made here when None.

    Returns:
        (Q, J) probabilities in [0, 1] and (Q, J, EVIDENCE_FEATURES) evidence.
    """
    if groups is None:
        if ref_sites is None:
            raise ValueError("impute_sites needs ref_sites or groups")
        groups = group_sites(ref_sites, ref_typed, interval_bounds(marker_cm, site_cm))
    if runs_compiled(ref_typed, rate_per_cm, error):
        return _impute_sites_compiled(ref_typed, query_typed, observed, marker_cm, site_cm, rate_per_cm, error,
                                      candidates, groups)
    n_states = ref_typed.shape[0] if candidates is None else candidates.shape[1]
    weights = site_weights(marker_cm, site_cm, groups.bounds, rate_per_cm, n_states)
    if candidates is None:
        states = ref_typed
        group_of = torch.from_numpy(groups.group_of).to(ref_typed.device, torch.int64)
        group_of = group_of.unsqueeze(1).expand(-1, query_typed.shape[0], -1)  # (M+1, Q, R)
    else:
        states = ref_typed[candidates]  # (Q, K, M)
        group_of = torch.from_numpy(groups.group_of).to(ref_typed.device, torch.int64)[:, candidates]  # (M+1, Q, K)
    alpha, gamma = forward_backward(states, query_typed, observed, marker_cm, rate_per_cm, error)
    n_query, n_markers = query_typed.shape[0], marker_cm.shape[0]
    weights = weights.to(alpha.dtype)
    out = torch.empty(n_query, site_cm.shape[0], dtype=alpha.dtype, device=alpha.device)
    evidence = torch.empty(n_query, site_cm.shape[0], EVIDENCE_FEATURES, dtype=alpha.dtype, device=alpha.device)
    ones = torch.ones(n_query, n_states, dtype=alpha.dtype, device=alpha.device)
    bounds = groups.bounds
    sequences = GroupSequences(groups, alpha.device)
    for k in range(n_markers + 1):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi:
            continue
        a = alpha[:, k - 1] if k > 0 else gamma[:, 0]
        g = gamma[:, k] if k < n_markers else alpha[:, -1]
        ag = a * g
        rows = torch.cat([ag, a, g, ones])
        summed = torch.zeros(4 * n_query, int(groups.n_groups[k]), dtype=alpha.dtype, device=alpha.device)
        summed = summed.scatter_add(1, group_of[k].repeat(4, 1), rows)
        products = (summed @ sequences[k].to(alpha.dtype)).view(4, n_query, -1)
        w = weights[:, lo:hi]
        num = (w.unsqueeze(1) * products).sum(dim=0)
        ag_total = ag.sum(dim=1, keepdim=True)
        den = w[0] * ag_total + w[1] + w[2] + w[3] * n_states
        out[:, lo:hi] = num / den
        evidence[:, lo:hi] = torch.stack([products[1].clamp(max=1.0), products[2].clamp(max=1.0),
                                          products[3] / n_states,
                                          torch.log10(ag_total.clamp(min=1e-30)).expand(-1, hi - lo)], dim=-1)
    return out.clamp(0.0, 1.0), evidence


def _kernel_alleles(ref_typed, query_typed, observed) -> tuple[np.ndarray, np.ndarray]:
    """The kernels' inputs: (M, R) uint8 reference alleles, marker-major, and (Q, M) int8 query alleles, -1 missing."""
    query = torch.where(observed, query_typed.detach().round(), -1.0).to(torch.int8)
    return ref_typed.detach().T.to(torch.uint8).numpy(), query.numpy()


def _impute_sites_compiled(ref_typed, query_typed, observed, marker_cm, site_cm, rate_per_cm, error, candidates,
                           groups) -> tuple[torch.Tensor, torch.Tensor]:
    markers, query = _kernel_alleles(ref_typed, query_typed, observed)
    out, evidence = copying_numpy.posteriors(
        markers, query, None if candidates is None else candidates.to(torch.int32).numpy(), marker_cm.numpy(),
        site_cm.numpy(), groups, rate_per_cm.detach().numpy(), float(error), threads=torch.get_num_threads(),
    )
    return torch.from_numpy(out).to(ref_typed.dtype), torch.from_numpy(evidence).to(ref_typed.dtype)
