"""Compiled CPU kernels (numba): the copying model's inner loops, the VCF genotype text and INFO sums.

The torch code in `spinimpute.hmm` is what training differentiates and what runs on a
GPU; on a CPU its forward-backward is thousands of tiny tensor operations per window, so
imputation there runs these loops instead: the same arithmetic (tests check that both
agree), one query haplotype at a time, on `threads` threads that release the GIL.

Shapes: Q query haplotypes, K states per query, R reference haplotypes, M typed
markers, J sites to impute; interval k holds the sites between markers k - 1 and k.
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np


def _compiled(function):
    """Compile without the GIL; the machine code is cached beside the module, or in
    NUMBA_CACHE_DIR, so that only the first run pays for compiling (a few seconds). Where
    no cache can be written (a read-only install, no writable home) it compiles every run."""
    try:
        return numba.njit(nogil=True, cache=True)(function)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(function)


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    cuts = np.linspace(0, n, max(1, min(parts, n)) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(cuts) if b > a]


def run_parts(kernel, n: int, threads: int, *args) -> None:
    """kernel(*args, lo, hi) over [0, n) cut into `threads` parts, in parallel (threads: the
    kernel must release the GIL, as the compiled ones here do)."""
    parts = _split(n, threads)
    if len(parts) <= 1:
        for lo, hi in parts:
            kernel(*args, lo, hi)
        return
    with ThreadPoolExecutor(len(parts)) as pool:
        for future in [pool.submit(kernel, *args, lo, hi) for lo, hi in parts]:
            future.result()


@_compiled
def _allele(packed_row, r):  # pragma: no cover - compiled
    """Haplotype r's allele in a row of np.packbits (big bit order)."""
    return (packed_row[r >> 3] >> (7 - (r & 7))) & 1


@_compiled
def _label_intervals(packed, n_ref, bounds, group_of, n_groups, first_member, k_lo, k_hi):  # pragma: no cover
    """Exact grouping: at each site the ALT carriers of a group split off into a new group.

    Only a site's carriers are visited (found a byte at a time), so the many rare sites
    of a large panel cost little more than reading their bytes.
    """
    labels = np.empty(n_ref, np.int32)
    size = np.zeros(n_ref, np.int32)  # members of each label
    moving = np.zeros(n_ref, np.int32)  # the current site's carriers in each label
    split = np.empty(n_ref, np.int32)  # the label those carriers move to, -1 if they are the whole label
    touched = np.empty(n_ref, np.int32)
    carriers = np.empty(n_ref, np.int32)
    number = np.empty(n_ref, np.int32)
    n_bytes = packed.shape[1]
    for k in range(k_lo, k_hi):
        labels[:] = 0
        size[0] = n_ref
        n = 1
        for j in range(bounds[k], bounds[k + 1]):
            row = packed[j]
            c = 0
            for b in range(n_bytes):
                byte = row[b]
                if byte:
                    for bit in range(8):
                        r = 8 * b + bit
                        if (byte >> (7 - bit)) & 1 and r < n_ref:
                            carriers[c] = r
                            c += 1
            n_touched = 0
            for i in range(c):
                g = labels[carriers[i]]
                if moving[g] == 0:
                    touched[n_touched] = g
                    n_touched += 1
                moving[g] += 1
            for t in range(n_touched):
                g = touched[t]
                if moving[g] < size[g]:
                    split[g] = n
                    size[n] = moving[g]
                    size[g] -= moving[g]
                    n += 1
                else:
                    split[g] = -1
            for i in range(c):
                r = carriers[i]
                if split[labels[r]] >= 0:
                    labels[r] = split[labels[r]]
            for t in range(n_touched):
                moving[touched[t]] = 0
        # Number the groups in order of first appearance; each group's first member comes with it.
        number[:n] = -1
        m = 0
        for r in range(n_ref):
            g = labels[r]
            if number[g] < 0:
                number[g] = m
                first_member[k, m] = r
                m += 1
            group_of[k, r] = number[g]
        n_groups[k] = m


@_compiled
def _count_alt_groups(packed, bounds, n_groups, first_member, counts, k_lo, k_hi):  # pragma: no cover - compiled
    for k in range(k_lo, k_hi):
        for j in range(bounds[k], bounds[k + 1]):
            c = 0
            for u in range(n_groups[k]):
                c += _allele(packed[j], first_member[k, u])
            counts[j] = c


@_compiled
def _fill_alt_groups(packed, bounds, n_groups, first_member, alt_ptr, alt_group, k_lo, k_hi):  # pragma: no cover
    for k in range(k_lo, k_hi):
        for j in range(bounds[k], bounds[k + 1]):
            t = alt_ptr[j]
            for u in range(n_groups[k]):
                if _allele(packed[j], first_member[k, u]):
                    alt_group[t] = u
                    t += 1


def group_intervals(packed: np.ndarray, n_ref: int, bounds: np.ndarray, threads: int = 1):
    """Group the reference haplotypes by their alleles within each interval.

    Args:
        packed: (J, ceil(R / 8)) uint8, each site's 0/1 alleles of the R haplotypes as
            np.packbits packs them (the model file's layout, read without unpacking).
        n_ref: R.
        bounds: (n_intervals + 1,) int64 site bounds of the intervals.

    Returns:
        group_of (n_intervals, R) int32 group of each haplotype in each interval,
        numbered in order of first appearance; n_groups (n_intervals,) int32; and, for
        each site j, the groups of its interval whose sequence carries ALT there:
        alt_group[alt_ptr[j]:alt_ptr[j + 1]] (int32, increasing).
    """
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    if packed.shape[1] != -(-n_ref // 8):
        raise ValueError(f"{packed.shape[1]} bytes per site cannot hold {n_ref} haplotypes")
    bounds = np.ascontiguousarray(bounds, dtype=np.int64)
    n_intervals = len(bounds) - 1
    group_of = np.zeros((n_intervals, n_ref), dtype=np.int32)
    n_groups = np.zeros(n_intervals, dtype=np.int32)
    first_member = np.zeros((n_intervals, n_ref), dtype=np.int32)
    run_parts(_label_intervals, n_intervals, threads, packed, n_ref, bounds, group_of, n_groups, first_member)
    counts = np.zeros(packed.shape[0], dtype=np.int64)
    run_parts(_count_alt_groups, n_intervals, threads, packed, bounds, n_groups, first_member, counts)
    alt_ptr = np.zeros(packed.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=alt_ptr[1:])
    alt_group = np.empty(int(alt_ptr[-1]), dtype=np.int32)
    run_parts(_fill_alt_groups, n_intervals, threads, packed, bounds, n_groups, first_member, alt_ptr, alt_group)
    return group_of, n_groups, alt_ptr, alt_group


_POPCOUNT16 = np.array([v.bit_count() for v in range(1 << 16)], dtype=np.int32)


@_compiled
def _pack_segments(bits, cuts, packed, lo, hi):  # pragma: no cover - compiled
    """packed[i, c] = the bits of column c over the markers of segment i (bits: (M, C) 0/1)."""
    for i in range(lo, hi):
        for m in range(cuts[i], cuts[i + 1]):
            shift = m - cuts[i]
            for c in range(bits.shape[1]):
                packed[i, c] |= np.uint16(bits[m, c]) << shift


@_compiled
def _candidate_priority(ref_packed, alt_packed, observed_packed, scale, popcount, priority, q_lo,
                        q_hi):  # pragma: no cover - compiled
    n_segments, n_ref = ref_packed.shape
    rolling = np.zeros((3, n_ref), np.int64)  # segment scores: before, here, after (rotating rows)
    total = np.zeros(n_ref, np.int64)
    shortfall = np.zeros(n_ref, np.int64)
    for q in range(q_lo, q_hi):
        total[:] = 0
        for slot in range(min(2, n_segments)):
            _segment_score(ref_packed[slot], alt_packed[slot, q], observed_packed[slot, q], popcount, rolling[(slot + 1) % 3])
        for i in range(n_segments):
            before, here, after = rolling[i % 3], rolling[(i + 1) % 3], rolling[(i + 2) % 3]
            best = -(1 << 40)
            for r in range(n_ref):
                local = here[r]
                if i > 0:
                    local += before[r]
                if i + 1 < n_segments:
                    local += after[r]
                before[r] = local  # the row of segment i - 1 is free from here on
                best = max(best, local)
            for r in range(n_ref):
                gap = before[r] - best
                if i == 0 or gap > shortfall[r]:
                    shortfall[r] = gap
                total[r] += here[r]
            if i + 2 < n_segments:
                _segment_score(ref_packed[i + 2], alt_packed[i + 2, q], observed_packed[i + 2, q], popcount, before)
        for r in range(n_ref):
            priority[q, r] = shortfall[r] * scale + total[r]


@_compiled
def _segment_score(ref_bits, alt, observed, popcount, out):  # pragma: no cover - compiled
    """Matches minus mismatches of one query with every reference row over a segment."""
    n_observed = popcount[observed]
    for r in range(ref_bits.shape[0]):
        out[r] = n_observed - 2 * popcount[(ref_bits[r] ^ alt) & observed]


def candidate_priority(markers: np.ndarray, query: np.ndarray, cuts: np.ndarray, *, threads: int = 1) -> np.ndarray:
    """Each reference row's priority as a copying state of each query (see `spinimpute.hmm.select_candidates`).

    Over the marker segments [cuts[i], cuts[i + 1]) (at most 16 markers each), a row's
    score in a segment is its matches minus mismatches with the query's observed alleles;
    its local score adds the two neighbouring segments; its shortfall is the most that
    some local score comes to below the best row's there (0 where it is the best), and
    ties go to the larger total over all segments.

    Args:
        markers: (M, R) uint8 reference alleles at the markers, marker-major.
        query: (Q, M) int8 query alleles, -1 where missing.
        cuts: (S + 1,) int64 segment bounds, from 0 to M.

    Returns:
        (Q, R) float32 shortfall * (4 M + 4) + total, exact integers.
    """
    n_markers, n_ref = markers.shape
    n_segments = len(cuts) - 1
    cuts = np.ascontiguousarray(cuts, dtype=np.int64)
    if n_segments < 1 or np.diff(cuts).max() > 16:
        raise ValueError("segments must hold 1 to 16 markers")
    ref_packed = np.zeros((n_segments, n_ref), np.uint16)
    run_parts(_pack_segments, n_segments, threads, np.ascontiguousarray(markers, dtype=np.uint8), cuts, ref_packed)
    query = np.ascontiguousarray(query.T, dtype=np.int8)  # (M, Q)
    alt_packed = np.zeros((n_segments, query.shape[1]), np.uint16)
    observed_packed = np.zeros((n_segments, query.shape[1]), np.uint16)
    _pack_segments(np.ascontiguousarray(query == 1, dtype=np.uint8), cuts, alt_packed, 0, n_segments)
    _pack_segments(np.ascontiguousarray(query >= 0, dtype=np.uint8), cuts, observed_packed, 0, n_segments)
    priority = np.empty((query.shape[1], n_ref), np.float32)
    run_parts(_candidate_priority, query.shape[1], threads, ref_packed, alt_packed, observed_packed,
              4 * n_markers + 4, _POPCOUNT16, priority)
    return priority


@_compiled
def _interval_posteriors(k, a, a_scale, g, g_scale, cand, group_of, n_groups, bounds, weights, alt_ptr, alt_group,
                         sums, out_row):  # pragma: no cover - compiled
    """Posteriors of interval k's sites from the forward message a * a_scale before it and the
    backward message g * g_scale after it (both normalised to sum to one once scaled)."""
    lo, hi = bounds[k], bounds[k + 1]
    if lo == hi:
        return
    n_states = cand.shape[0]
    n = n_groups[k]
    sums[:n] = 0.0
    labels = group_of[k]
    for s in range(n_states):
        u = labels[cand[s]]
        a_s = a[s] * a_scale
        g_s = g[s] * g_scale
        sums[u, 0] += a_s * g_s
        sums[u, 1] += a_s
        sums[u, 2] += g_s
        sums[u, 3] += 1.0
    ag_total = 0.0  # summed over the groups, not the states: no chain of additions in the loop above
    for u in range(n):
        ag_total += sums[u, 0]
    for j in range(lo, hi):
        s_ag = 0.0
        s_a = 0.0
        s_g = 0.0
        s_1 = 0.0
        for t in range(alt_ptr[j], alt_ptr[j + 1]):
            u = alt_group[t]
            s_ag += sums[u, 0]
            s_a += sums[u, 1]
            s_g += sums[u, 2]
            s_1 += sums[u, 3]
        num = weights[0, j] * s_ag + weights[1, j] * s_a + weights[2, j] * s_g + weights[3, j] * s_1
        den = weights[0, j] * ag_total + weights[1, j] + weights[2, j] + weights[3, j] * n_states
        p = num / den
        out_row[j] = min(1.0, max(0.0, p))


@_compiled
def _emit(step, prev, prev_scale, states, allele, match, mismatch, out):  # pragma: no cover - compiled
    """out = emission * (prev * prev_scale + step), unnormalised; returns 1 / its sum.

    step < 0: the emission alone. states: the states' alleles at this marker. Leaving each
    message unnormalised and carrying its scale saves a pass over the states per marker.
    """
    total = 0.0
    for s in range(states.shape[0]):
        e = match if allele < 0 or states[s] == allele else mismatch
        v = e * (prev[s] * prev_scale + step) if step >= 0 else e
        out[s] = v
        total += v
    return 1.0 / total


@_compiled
def _copy_posteriors(markers, query, candidates, jump, error, bounds, group_of, n_groups, alt_ptr, alt_group, weights,
                     out, q_lo, q_hi):  # pragma: no cover - compiled
    n_markers = markers.shape[0]
    n_states = candidates.shape[1]
    alpha = np.empty((n_markers, n_states), np.float64)
    alpha_scale = np.empty(n_markers, np.float64)
    g = np.empty(n_states, np.float64)
    states = np.empty((n_markers, n_states), np.uint8)
    sums = np.empty((max(1, n_groups.max()), 4), np.float64)  # a group's four sums share a cache line
    match, mismatch = 1.0 - error, error
    last = n_markers - 1
    for q in range(q_lo, q_hi):
        cand = candidates[q]
        x = query[q]
        out_row = out[q]
        for m in range(n_markers):  # the states' alleles, gathered once for both passes
            row = markers[m]
            for s in range(n_states):
                states[m, s] = row[cand[s]]
        alpha_scale[0] = _emit(-1.0, g, 1.0, states[0], x[0], match, mismatch, alpha[0])
        for m in range(1, n_markers):
            alpha_scale[m] = _emit(jump[m - 1], alpha[m - 1], alpha_scale[m - 1], states[m], x[m], match, mismatch,
                                   alpha[m])
        # Backward; each interval is imputed as soon as the backward message of its right marker is known.
        _interval_posteriors(n_markers, alpha[last], alpha_scale[last], alpha[last], alpha_scale[last], cand, group_of,
                             n_groups, bounds, weights, alt_ptr, alt_group, sums, out_row)
        g_scale = _emit(-1.0, g, 1.0, states[last], x[last], match, mismatch, g)
        for m in range(last, -1, -1):
            if m < last:
                g_scale = _emit(jump[m], g, g_scale, states[m], x[m], match, mismatch, g)
            if m > 0:
                _interval_posteriors(m, alpha[m - 1], alpha_scale[m - 1], g, g_scale, cand, group_of, n_groups, bounds,
                                     weights, alt_ptr, alt_group, sums, out_row)
            else:
                _interval_posteriors(0, g, g_scale, g, g_scale, cand, group_of, n_groups, bounds, weights, alt_ptr,
                                     alt_group, sums, out_row)


def copy_posteriors(markers, query, candidates, jump, error, bounds, groups, weights, *, threads: int = 1,
                    dtype=np.float32) -> np.ndarray:
    """Posterior ALT probability of each site for each query (see `spinimpute.hmm.impute_sites`).

    Args:
        markers: (M, R) uint8 reference alleles at the typed markers, marker-major.
        query: (Q, M) int8 query alleles, -1 where missing.
        candidates: (Q, K) int32 reference rows that are each query's states.
        jump: (M - 1,) float64, switch / ((1 - switch) K) between neighbouring markers.
        error: mismatch probability.
        bounds: (M + 2,) int64 site bounds of the M + 1 intervals.
        groups: (group_of, n_groups, alt_ptr, alt_group) from `group_intervals` over those intervals.
        weights: (4, J) float64 weights of the a*g, a, g and uniform terms at each site.

    Returns:
        (Q, J) probabilities of `dtype` (the arithmetic is float64).
    """
    out = np.empty((query.shape[0], weights.shape[1]), dtype=dtype)
    if out.size == 0:
        return out
    args = (
        np.ascontiguousarray(markers, dtype=np.uint8), np.ascontiguousarray(query, dtype=np.int8),
        np.ascontiguousarray(candidates, dtype=np.int32), np.ascontiguousarray(jump, dtype=np.float64),
        float(error), np.ascontiguousarray(bounds, dtype=np.int64), *groups,
        np.ascontiguousarray(weights, dtype=np.float64), out,
    )
    run_parts(_copy_posteriors, query.shape[0], threads, *args)
    return out


@_compiled
def _diploid_text(hap_prob, gt_ds_bytes, gt_ds_length, gp_bytes, gp_length, out, ends, row_lo, row_hi,
                  pos):  # pragma: no cover - compiled
    hundred, one, half = np.float32(100.0), np.float32(1.0), np.float32(0.5)
    n_samples = hap_prob.shape[1] // 2
    for i in range(row_lo, row_hi):
        out[pos] = 9  # tab
        pos += 1
        for s in range(n_samples):
            p1, p2 = hap_prob[i, 2 * s], hap_prob[i, 2 * s + 1]
            # float32 arithmetic and round-half-even, as numpy does in vcf._diploid_codes.
            ds = int(np.rint((p1 + p2) * hundred))
            gp0 = int(np.rint((one - p1) * (one - p2) * hundred))
            gp2 = int(np.rint(p1 * p2 * hundred))
            gt = 2 * (p1 >= half) + (p2 >= half)
            code = gt * 201 + ds
            for b in range(gt_ds_length[code]):
                out[pos + b] = gt_ds_bytes[code, b]
            pos += gt_ds_length[code]
            code = gp0 * 101 + gp2
            for b in range(gp_length[code]):
                out[pos + b] = gp_bytes[code, b]
            pos += gp_length[code]
        pos -= 1  # the tab after the last field
        ends[i] = pos


def diploid_text(hap_prob: np.ndarray, gt_ds_bytes, gt_ds_length, gp_bytes, gp_length) -> tuple[np.ndarray, np.ndarray]:
    """The sample columns of each site as text, from fixed-width field tables (see `vcf.format_genotype_rows`).

    Returns:
        (text uint8, ends int64): row i is text[ends[i - 1]:ends[i]] (from 0 for row 0).
    """
    hap_prob = np.ascontiguousarray(hap_prob, dtype=np.float32)
    n_sites = hap_prob.shape[0]
    out = np.empty(n_sites * (1 + (hap_prob.shape[1] // 2) * (gt_ds_bytes.shape[1] + gp_bytes.shape[1])), np.uint8)
    ends = np.zeros(n_sites, np.int64)
    if n_sites:
        _diploid_text(hap_prob, gt_ds_bytes, gt_ds_length.astype(np.int64), gp_bytes, gp_length.astype(np.int64), out,
                      ends, 0, n_sites, 0)
    return out, ends


@_compiled
def _site_sums(hap_prob, haploid, sums, lo, hi):  # pragma: no cover - compiled
    n_samples = hap_prob.shape[1] // 2
    has_ploidy = haploid.shape[0] > 0
    for i in range(lo, hi):
        dose_total = 0.0
        dose_sq = 0.0
        expected_sq = 0.0
        alleles = 0.0
        for s in range(n_samples):
            p1, p2 = np.float64(hap_prob[i, 2 * s]), np.float64(hap_prob[i, 2 * s + 1])
            if has_ploidy and haploid[i, s]:
                d = 0.5 * (p1 + p2)
                e = d
                alleles += 1.0
            else:
                d = p1 + p2
                e = d + 2.0 * p1 * p2
                alleles += 2.0
            dose_total += d
            dose_sq += d * d
            expected_sq += e
        sums[0, i] = dose_total
        sums[1, i] = dose_sq
        sums[2, i] = expected_sq
        sums[3, i] = alleles


def site_sums(hap_prob: np.ndarray, haploid: np.ndarray | None, threads: int = 1) -> np.ndarray:
    """Per-site sums over samples of the dose d, d², E[x²] and the ploidy (see `spinimpute.impute.site_statistics`).

    Args:
        hap_prob: (n_sites, n_haplotypes) float32 ALT probabilities, sample i at 2i and 2i+1.
        haploid: (n_sites, n_samples) bool or None; a haploid call's dose is the mean of its slots.

    Returns:
        (4, n_sites) float64.
    """
    hap_prob = np.ascontiguousarray(hap_prob, dtype=np.float32)
    ploidy = np.zeros((0, 0), np.uint8) if haploid is None else np.ascontiguousarray(haploid, dtype=np.uint8)
    sums = np.zeros((4, hap_prob.shape[0]), np.float64)
    run_parts(_site_sums, hap_prob.shape[0], threads, hap_prob, ploidy, sums)
    return sums


@_compiled
def _pair_viterbi(genotypes, first, second, anchored, templates, jump, error, path, lo, hi):  # pragma: no cover
    n_markers, k = templates.shape[1], templates.shape[2]
    v = np.empty((k, k))
    back = np.empty((n_markers, k * k), np.int32)
    # Each row's and column's best state and the best of all, of the previous marker's v.
    row_max, col_max, new_col_max = np.empty(k), np.empty(k), np.empty(k)
    row_arg, col_arg, new_col_arg = np.empty(k, np.int64), np.empty(k, np.int64), np.empty(k, np.int64)
    emit = np.array([1.0, error, error * error])  # by the number of mismatching alleles
    here = np.empty(4)  # emissions by 2 * allele_a + allele_b
    for s in range(lo, hi):
        g, h = genotypes[s], templates[s]
        top, top_arg = 1.0, 0
        for m in range(n_markers):
            _pair_emissions(g[m], anchored[s, m], first[s, m], second[s, m], emit, here)
            p = jump[m - 1] if m > 0 else 0.0
            # v is kept unnormalised: the previous marker's best, `top`, divides this step instead
            # (so a switch of both templates, from the best state, weighs (p / k)² * top / top).
            stay, one, both = (1.0 - p) * (1.0 - p) / top, (1.0 - p) * p / k / top, (p / k) * (p / k)
            new_col_max[:] = -1.0
            new_top, new_top_arg = -1.0, 0
            for a in range(k):
                here_a = 2 * h[m, a]
                row_a, row_source = one * row_max[a], a * k + row_arg[a]
                best_in_row, best_b = -1.0, 0
                for b in range(k):
                    if m == 0:
                        best, source = 1.0, -1
                    else:
                        best, source = stay * v[a, b], a * k + b
                        if row_a > best:
                            best, source = row_a, row_source
                        x = one * col_max[b]
                        if x > best:
                            best, source = x, col_arg[b] * k + b
                        if both > best:
                            best, source = both, top_arg
                    y = here[here_a + h[m, b]] * best
                    v[a, b] = y
                    back[m, a * k + b] = source
                    if y > best_in_row:
                        best_in_row, best_b = y, b
                    if y > new_col_max[b]:
                        new_col_max[b], new_col_arg[b] = y, a
                row_max[a], row_arg[a] = best_in_row, best_b
                if best_in_row > new_top:
                    new_top, new_top_arg = best_in_row, a * k + best_b
            col_max[:] = new_col_max
            col_arg[:] = new_col_arg
            top, top_arg = new_top, new_top_arg
        state = top_arg
        for m in range(n_markers - 1, -1, -1):
            path[s, m] = state
            if m > 0:
                state = back[m, state]


def pair_viterbi(genotypes, first, second, anchored, templates, jump, error: float, *, threads: int = 1) -> np.ndarray:
    """Most likely pair of templates along the markers for each sample, under a diploid
    Li-Stephens model: each of the two haplotypes copies one of its sample's K templates
    and switches to any of them with probability `jump` between neighbouring markers.

    Args:
        genotypes: (S, M) int8 ALT counts, -1 missing.
        first, second: (S, M) int8 ALT of each slot, used where `anchored`.
        anchored: (S, M) bool, genotypes whose phase is fixed: the first template must
            carry `first`, the second `second`; elsewhere the unordered sum must match.
        templates: (S, M, K) uint8 each sample's candidate haplotypes at the markers.
        jump: (M - 1,) float64 switch probability of one haplotype between markers.
        error: probability of each mismatching allele.

    Returns:
        (S, M) int64 state a * K + b: the templates copied by the first (a) and second (b) slot.
    """
    path = np.zeros(np.shape(templates)[:2], dtype=np.int64)
    run_parts(_pair_viterbi, len(path), threads,
              *_pair_model_arrays(genotypes, first, second, anchored, templates, jump, error), path)
    return path


def _pair_model_arrays(genotypes, first, second, anchored, templates, jump, error: float) -> tuple:
    """The pair models' inputs in the types and layout their kernels take."""
    return (np.ascontiguousarray(genotypes, dtype=np.int8), np.ascontiguousarray(first, dtype=np.int8),
            np.ascontiguousarray(second, dtype=np.int8), np.ascontiguousarray(anchored, dtype=np.bool_),
            np.ascontiguousarray(templates, dtype=np.uint8), np.ascontiguousarray(jump, dtype=np.float64),
            float(error))


@_compiled
def _pair_emissions(genotype, anchored, first, second, emit, out):  # pragma: no cover - compiled
    """out[2 * allele_a + allele_b]: P(genotype | the first slot copies allele_a, the second allele_b)."""
    for allele_a in range(2):
        for allele_b in range(2):
            if genotype < 0:
                e = 1.0
            elif anchored:  # ordered alleles: the first template copies the first slot
                e = emit[int(allele_a != first) + int(allele_b != second)]
            else:
                e = emit[abs(allele_a + allele_b - genotype)]
            out[2 * allele_a + allele_b] = e


# Orientation of a heterozygote by 2 * allele_a + allele_b: 0 where the first template carries
# its ALT, 1 the second, -1 neither or both.
_HET_ORIENTATION = np.array([-1, 1, 0, -1], dtype=np.int64)


@_compiled
def _pair_relative_phase(genotypes, first, second, anchored, templates, jump, error, orientation, same, lo, hi):  # pragma: no cover
    n_markers, k = templates.shape[1], templates.shape[2]
    emit = np.array([1.0, error, error * error])
    # Backward messages of the marker ahead and of this one; only heterozygotes' are kept (float32:
    # rescaled per marker, 7 digits of each are plenty), which bounds memory for dense targets.
    after, current = np.empty((k, k)), np.empty((k, k))
    # Forward probabilities split by the orientation of the last heterozygote (0: ALT on the
    # first template), each with its row sums, column sums and total: a transition from
    # (a, b) keeps both templates, changes one (to any of K) or both, so one step costs K².
    fwd = np.empty((2, k, k))
    rows, cols, total = np.empty((2, k)), np.empty((2, k)), np.empty(2)
    new_rows, new_cols, new_total = np.empty((2, k)), np.empty((2, k)), np.empty(2)
    here, ahead = np.empty(4), np.empty(4)  # emissions by 2 * allele_a + allele_b
    for s in range(lo, hi):
        g, h = genotypes[s], templates[s]
        n_het = 0
        for m in range(n_markers):
            n_het += g[m] == 1
        het_backward = np.empty((n_het, k, k), np.float32)
        het = n_het - 1  # slot of the heterozygote the backward pass is at or after
        # Backward: backward[m] = T (emission[m + 1] * backward[m + 1]), rescaled by the total of that product.
        m = n_markers - 1
        _pair_emissions(g[m], anchored[s, m], first[s, m], second[s, m], emit, here)
        rows[0, :] = 0.0
        cols[0, :] = 0.0
        total[0] = 0.0
        for a in range(k):
            for b in range(k):
                after[a, b] = 1.0
                x = here[2 * h[m, a] + h[m, b]]
                rows[0, a] += x
                cols[0, b] += x
                total[0] += x
        if g[m] == 1:
            het_backward[het] = after
            het -= 1
        for m in range(n_markers - 2, -1, -1):
            ahead[:] = here
            _pair_emissions(g[m], anchored[s, m], first[s, m], second[s, m], emit, here)
            p, scale = jump[m], 1.0 / total[0]
            stay, one, both = (1 - p) * (1 - p) * scale, (1 - p) * p / k * scale, (p / k) * (p / k) * scale
            new_rows[0, :] = 0.0
            new_cols[0, :] = 0.0
            new_total[0] = 0.0
            for a in range(k):
                ahead_a, here_a, row_a = 2 * h[m + 1, a], 2 * h[m, a], one * rows[0, a] + both * total[0]
                row_sum = 0.0
                for b in range(k):
                    y = stay * ahead[ahead_a + h[m + 1, b]] * after[a, b] + row_a + one * cols[0, b]
                    current[a, b] = y
                    x = here[here_a + h[m, b]] * y
                    row_sum += x
                    new_cols[0, b] += x
                new_rows[0, a] = row_sum
                new_total[0] += row_sum
            rows[0, :] = new_rows[0]
            cols[0, :] = new_cols[0]
            total[0] = new_total[0]
            if g[m] == 1:
                het_backward[het] = current
                het -= 1
            after, current = current, after
        # Forward. Before the first heterozygote all mass is in part 0; it never enters a posterior.
        fwd[:] = 0.0
        rows[:] = 0.0
        cols[:] = 0.0
        total[:] = 0.0
        seen_het = False
        het = 0
        for m in range(n_markers):
            is_het = g[m] == 1
            _pair_emissions(g[m], anchored[s, m], first[s, m], second[s, m], emit, here)
            if m == 0:
                stay, one, both = 1.0, 0.0, 0.0
            else:
                p, scale = jump[m - 1], 1.0 / (total[0] + total[1])
                stay, one, both = (1 - p) * (1 - p) * scale, (1 - p) * p / k * scale, (p / k) * (p / k) * scale
            new_rows[:] = 0.0
            new_cols[:] = 0.0
            new_total[:] = 0.0
            p00 = p01 = p10 = p11 = 0.0  # P(orientation at the last het, orientation here), unnormalised
            for a in range(k):
                here_a = 2 * h[m, a]
                row0, row1 = one * rows[0, a] + both * total[0], one * rows[1, a] + both * total[1]
                if m > 0 and not is_het:  # the common case, without branches
                    sum0 = sum1 = 0.0
                    for b in range(k):
                        e = here[here_a + h[m, b]]
                        x0 = e * (stay * fwd[0, a, b] + row0 + one * cols[0, b])
                        x1 = e * (stay * fwd[1, a, b] + row1 + one * cols[1, b])
                        fwd[0, a, b] = x0
                        fwd[1, a, b] = x1
                        sum0 += x0
                        sum1 += x1
                        new_cols[0, b] += x0
                        new_cols[1, b] += x1
                    new_rows[0, a] = sum0
                    new_rows[1, a] = sum1
                    new_total[0] += sum0
                    new_total[1] += sum1
                    continue
                for b in range(k):
                    e = here[here_a + h[m, b]]
                    if m == 0:
                        x0, x1 = e, 0.0
                    else:
                        x0 = e * (stay * fwd[0, a, b] + row0 + one * cols[0, b])
                        x1 = e * (stay * fwd[1, a, b] + row1 + one * cols[1, b])
                    if is_het:
                        o = orientation[here_a + h[m, b]]
                        w = het_backward[het, a, b]
                        if o == 0:
                            p00 += x0 * w
                            p10 += x1 * w
                            x0, x1 = x0 + x1, 0.0
                        elif o == 1:
                            p01 += x0 * w
                            p11 += x1 * w
                            x0, x1 = 0.0, x0 + x1
                        else:  # explained by an error: no orientation
                            x0 = x1 = 0.5 * (x0 + x1)
                    fwd[0, a, b] = x0
                    fwd[1, a, b] = x1
                    new_rows[0, a] += x0
                    new_cols[0, b] += x0
                    new_total[0] += x0
                    new_rows[1, a] += x1
                    new_cols[1, b] += x1
                    new_total[1] += x1
            if is_het:
                if seen_het and p00 + p01 + p10 + p11 > 0:
                    same[s, m] = (p00 + p11) / (p00 + p01 + p10 + p11)
                seen_het = True
                het += 1
            rows[:] = new_rows
            cols[:] = new_cols
            total[:] = new_total


def pair_relative_phase(genotypes, first, second, anchored, templates, jump, error: float, *,
                        threads: int = 1) -> np.ndarray:
    """Posterior probability, under `pair_viterbi`'s diploid model summed over all template
    paths (forward-backward), that each heterozygote's ALT is on the same haplotype as the
    previous heterozygote's ALT.

    Args: as `pair_viterbi`.

    Returns:
        (S, M) float64: at each heterozygous marker after a sample's first, P(same
        orientation as the previous heterozygous marker); NaN elsewhere.
    """
    same = np.full(np.shape(templates)[:2], np.nan)
    run_parts(_pair_relative_phase, len(same), threads,
              *_pair_model_arrays(genotypes, first, second, anchored, templates, jump, error), _HET_ORIENTATION, same)
    return same


@_compiled
def _gelu(x, out):  # pragma: no cover - compiled
    flat_in, flat_out = x.ravel(), out.ravel()
    for i in range(flat_in.size):
        v = flat_in[i]
        flat_out[i] = 0.5 * v * (1.0 + math.erf(v * 0.7071067811865476))


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU with the exact error function (torch.nn.GELU's default), float32; numpy has no erf."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x)
    _gelu(x, out)
    return out


def warm_up() -> None:
    """Compile (or load from the cache) every kernel with the argument types that imputation uses."""
    rng = np.random.default_rng(0)
    by_site = (rng.random((6, 8)) < 0.5).astype(np.uint8)
    bounds = np.array([0, 2, 4, 6])
    packed = np.packbits(by_site, axis=1)
    groups = group_intervals(packed, 8, bounds)
    packed.setflags(write=False)  # as the model file's rows are read
    group_intervals(packed, 8, bounds)
    query = np.array([[0, 1]], dtype=np.int8)
    copy_posteriors(by_site[[1, 3]], query, np.arange(8, dtype=np.int32)[None], np.array([0.01]), 0.001, bounds, groups,
                    np.full((4, 6), 0.25))
    gt_ds, gp = np.zeros((4 * 201, 8), np.uint8), np.zeros((101 * 101, 16), np.uint8)  # as vcf's tables
    diploid_text(np.zeros((1, 2), np.float32), gt_ds, np.ones(len(gt_ds), np.int64), gp, np.ones(len(gp), np.int64))
    candidate_priority(by_site[[1, 3]], query, np.array([0, 2]))
    site_sums(np.zeros((1, 2), np.float32), None)
    gelu(np.zeros((1, 2), np.float32))
    pair_viterbi(np.ones((1, 2), np.int8), np.ones((1, 2), np.int8), np.zeros((1, 2), np.int8),
                 np.zeros((1, 2), bool), by_site[:2, :2][None], np.array([0.01]), 0.001)
    pair_relative_phase(np.ones((1, 2), np.int8), np.ones((1, 2), np.int8), np.zeros((1, 2), np.int8),
                        np.zeros((1, 2), bool), by_site[:2, :2][None], np.array([0.01]), 0.001)
    site_sums(np.zeros((1, 2), np.float32), np.ones((1, 1), bool))
