"""Compiled loops of the copying model on the CPU (numba): grouping the panel's haplotypes
between markers, candidate preselection and the forward-backward posteriors.

`spinimpute.model.copying` holds the same Li-Stephens model as differentiable torch code,
which training differentiates and a GPU runs; on a CPU its forward-backward is thousands
of tiny tensor operations per window, so imputation there runs these loops instead: the
same arithmetic (tests check that both agree), one query haplotype at a time, on
`threads` threads that release the GIL.

Shapes: Q query haplotypes, K states per query, R reference haplotypes, M typed
markers, J sites to impute; interval k holds the sites between markers k - 1 and k.
"""

from __future__ import annotations

import numpy as np

from spinimpute.compiled import compiled, run_parts


@compiled
def _allele(packed_row, r):  # pragma: no cover - compiled
    """Haplotype r's allele in a row of np.packbits (big bit order)."""
    return (packed_row[r >> 3] >> (7 - (r & 7))) & 1


@compiled
def _split_groups(row, n_ref, labels, size, moving, split, touched, carriers, n):  # pragma: no cover - compiled
    """Split the n groups of `labels` by one site's alleles (a packbits row): the ALT carriers of a
    group that also has REF carriers move to a new group. Returns the new number of groups.

    Only the site's carriers are visited (found a byte at a time), so the many rare sites
    of a large panel cost little more than reading their bytes. `size` holds each group's
    members; `moving`, `split`, `touched` and `carriers` are scratch space of R entries
    (`moving` all zero between calls).
    """
    c = 0
    for b in range(row.shape[0]):
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
    return n


@compiled
def _label_intervals(packed, n_ref, bounds, group_of, n_groups, first_member, k_lo, k_hi):  # pragma: no cover
    """Exact grouping: at each site the ALT carriers of a group split off into a new group."""
    labels = np.empty(n_ref, np.int32)
    size = np.zeros(n_ref, np.int32)  # members of each label
    moving = np.zeros(n_ref, np.int32)  # the current site's carriers in each label
    split = np.empty(n_ref, np.int32)  # the label those carriers move to, -1 if they are the whole label
    touched = np.empty(n_ref, np.int32)
    carriers = np.empty(n_ref, np.int32)
    number = np.empty(n_ref, np.int32)
    for k in range(k_lo, k_hi):
        labels[:] = 0
        size[0] = n_ref
        n = 1
        for j in range(bounds[k], bounds[k + 1]):
            n = _split_groups(packed[j], n_ref, labels, size, moving, split, touched, carriers, n)
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


@compiled
def _count_alt_groups(packed, bounds, n_groups, first_member, counts, k_lo, k_hi):  # pragma: no cover - compiled
    for k in range(k_lo, k_hi):
        for j in range(bounds[k], bounds[k + 1]):
            c = 0
            for u in range(n_groups[k]):
                c += _allele(packed[j], first_member[k, u])
            counts[j] = c


@compiled
def _fill_alt_groups(packed, bounds, n_groups, first_member, alt_ptr, alt_group, k_lo, k_hi):  # pragma: no cover
    for k in range(k_lo, k_hi):
        for j in range(bounds[k], bounds[k + 1]):
            t = alt_ptr[j]
            for u in range(n_groups[k]):
                if _allele(packed[j], first_member[k, u]):
                    alt_group[t] = u
                    t += 1


@compiled
def _distinct_after_each(packed, n_ref, cap, out):  # pragma: no cover - compiled
    labels = np.zeros(n_ref, np.int32)
    size = np.zeros(n_ref, np.int32)
    size[0] = n_ref
    moving = np.zeros(n_ref, np.int32)
    split = np.empty(n_ref, np.int32)
    touched = np.empty(n_ref, np.int32)
    carriers = np.empty(n_ref, np.int32)
    n = 1
    for j in range(packed.shape[0]):
        n = _split_groups(packed[j], n_ref, labels, size, moving, split, touched, carriers, n)
        out[j] = n
        if n > cap:
            return j + 1
    return packed.shape[0]


def distinct_sequences(packed: np.ndarray, n_ref: int, cap: int) -> np.ndarray:
    """The number of distinct sequences of the R haplotypes over sites [0, j] for each j of the
    (J, ceil(R / 8)) packbits rows, up to and including the first count above `cap`."""
    out = np.zeros(packed.shape[0], dtype=np.int64)
    n = _distinct_after_each(np.ascontiguousarray(packed, dtype=np.uint8), n_ref, cap, out)
    return out[:n]


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


@compiled
def _pack_segments(bits, cuts, packed, lo, hi):  # pragma: no cover - compiled
    """packed[i, c] = the bits of column c over the markers of segment i (bits: (M, C) 0/1)."""
    for i in range(lo, hi):
        for m in range(cuts[i], cuts[i + 1]):
            shift = m - cuts[i]
            for c in range(bits.shape[1]):
                packed[i, c] |= np.uint16(bits[m, c]) << shift


@compiled
def _candidate_priority(ref_packed, alt_packed, observed_packed, pool, scale, priority, q_lo,
                        q_hi):  # pragma: no cover - compiled
    n_segments = ref_packed.shape[0]
    n_ref = pool.shape[1]  # the rows ranked: each query's pool
    rolling = np.zeros((3, n_ref), np.int16)  # segment scores: before, here, after (rotating rows)
    total = np.zeros(n_ref, np.int32)
    shortfall = np.zeros(n_ref, np.int16)
    for q in range(q_lo, q_hi):
        total[:] = 0
        rows = pool[q]
        for slot in range(min(2, n_segments)):
            _segment_score(ref_packed[slot], rows, alt_packed[slot, q], observed_packed[slot, q],
                           rolling[(slot + 1) % 3])
        for i in range(n_segments):
            before, here, after = rolling[i % 3], rolling[(i + 1) % 3], rolling[(i + 2) % 3]
            # Each case a loop of its own, without branches, so that it vectorises. The local
            # scores go to the row of segment i - 1, free from here on.
            best = np.int16(-(1 << 14))
            if i > 0 and i + 1 < n_segments:
                for r in range(n_ref):
                    before[r] = before[r] + here[r] + after[r]
                    best = max(best, before[r])
            elif i > 0:
                for r in range(n_ref):
                    before[r] = before[r] + here[r]
                    best = max(best, before[r])
            elif i + 1 < n_segments:
                for r in range(n_ref):
                    before[r] = here[r] + after[r]
                    best = max(best, before[r])
            else:
                for r in range(n_ref):
                    before[r] = here[r]
                    best = max(best, before[r])
            if i == 0:
                for r in range(n_ref):
                    shortfall[r] = before[r] - best
                    total[r] += here[r]
            else:
                for r in range(n_ref):
                    shortfall[r] = max(shortfall[r], before[r] - best)
                    total[r] += here[r]
            if i + 2 < n_segments:
                _segment_score(ref_packed[i + 2], rows, alt_packed[i + 2, q], observed_packed[i + 2, q], before)
        for r in range(n_ref):
            priority[q, r] = np.int64(shortfall[r]) * scale + total[r]


@compiled
def _popcount16(x):  # pragma: no cover - compiled
    """Set bits of a 16-bit value held in an int32, by arithmetic rather than a table, so that loops vectorise."""
    x = x - ((x >> 1) & 0x5555)
    x = (x & 0x3333) + ((x >> 2) & 0x3333)
    x = (x + (x >> 4)) & 0x0F0F
    return (x + (x >> 8)) & 0x1F


@compiled
def _segment_score(ref_bits, rows, alt, observed, out):  # pragma: no cover - compiled
    """Matches minus mismatches of one query with the reference rows `rows` over a segment."""
    alt_bits = np.int32(alt)
    observed_bits = np.int32(observed)
    n_observed = _popcount16(observed_bits)
    for j in range(rows.shape[0]):
        out[j] = np.int16(n_observed - 2 * _popcount16((np.int32(ref_bits[rows[j]]) ^ alt_bits) & observed_bits))


def candidate_priority(markers: np.ndarray, query: np.ndarray, cuts: np.ndarray, pool: np.ndarray, *,
                       threads: int = 1) -> np.ndarray:
    """The priority of each query's pool rows as its copying states (see `copying_numpy.select_candidates`).

    Over the marker segments [cuts[i], cuts[i + 1]) (at most 16 markers each), a row's
    score in a segment is its matches minus mismatches with the query's observed alleles;
    its local score adds the two neighbouring segments; its shortfall is the least that its
    local score falls below the best pool row's in some segment (0 where it is the best),
    and ties go to the larger total over all segments.

    Args:
        markers: (M, R) uint8 reference alleles at the markers, marker-major.
        query: (Q, M) int8 query alleles, -1 where missing.
        cuts: (S + 1,) int64 segment bounds, from 0 to M.
        pool: (Q, P) int32 reference rows to rank for each query.

    Returns:
        (Q, P) float32 shortfall * (4 M + 4) + total, exact integers.
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
    priority = np.empty(pool.shape, np.float32)
    run_parts(_candidate_priority, query.shape[1], threads, ref_packed, alt_packed, observed_packed, pool,
              4 * n_markers + 4, priority)
    return priority


@compiled
def _interval_posteriors(k, a, a_scale, g, g_scale, cand, groups_by_haplotype, n_groups, bounds, weights, alt_ptr,
                         alt_group, sums, out_row):  # pragma: no cover - compiled
    """Posteriors of interval k's sites from the forward message a * a_scale before it and the
    backward message g * g_scale after it (both normalised to sum to one once scaled).

    groups_by_haplotype[r, k]: haplotype r's group in interval k. The backward pass visits the
    intervals in turn, so each state's cache line of its row serves 16 intervals.
    """
    lo, hi = bounds[k], bounds[k + 1]
    if lo == hi:
        return
    n_states = cand.shape[0]
    n = n_groups[k]
    sums[:n] = 0.0
    for s in range(n_states):
        u = groups_by_haplotype[cand[s], k]
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


@compiled
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


@compiled
def _copy_posteriors(alleles, query, candidates, jump, error, bounds, groups_by_haplotype, n_groups, alt_ptr, alt_group,
                     weights, out, q_lo, q_hi):  # pragma: no cover - compiled
    n_markers = alleles.shape[1]
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
        # The states' alleles, gathered once for both passes: a contiguous row of each state's
        # haplotype, rather than K scattered reads in every marker's row.
        for s in range(n_states):
            row = alleles[cand[s]]
            for m in range(n_markers):
                states[m, s] = row[m]
        alpha_scale[0] = _emit(-1.0, g, 1.0, states[0], x[0], match, mismatch, alpha[0])
        for m in range(1, n_markers):
            alpha_scale[m] = _emit(jump[m - 1], alpha[m - 1], alpha_scale[m - 1], states[m], x[m], match, mismatch,
                                   alpha[m])
        # Backward; each interval is imputed as soon as the backward message of its right marker is known.
        _interval_posteriors(n_markers, alpha[last], alpha_scale[last], alpha[last], alpha_scale[last], cand,
                             groups_by_haplotype, n_groups, bounds, weights, alt_ptr, alt_group, sums, out_row)
        g_scale = _emit(-1.0, g, 1.0, states[last], x[last], match, mismatch, g)
        for m in range(last, -1, -1):
            if m < last:
                g_scale = _emit(jump[m], g, g_scale, states[m], x[m], match, mismatch, g)
            if m > 0:
                _interval_posteriors(m, alpha[m - 1], alpha_scale[m - 1], g, g_scale, cand, groups_by_haplotype, n_groups,
                                     bounds, weights, alt_ptr, alt_group, sums, out_row)
            else:
                _interval_posteriors(0, g, g_scale, g, g_scale, cand, groups_by_haplotype, n_groups, bounds, weights,
                                     alt_ptr, alt_group, sums, out_row)


def copy_posteriors(markers, query, candidates, jump, error, bounds, groups, weights, *, threads: int = 1,
                    dtype=np.float32) -> np.ndarray:
    """Posterior ALT probability of each site for each query (see `spinimpute.model.copying.impute_sites`).

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
    group_of, n_groups, alt_ptr, alt_group = groups
    # Haplotype-major copies (R, M) and (R, M + 1): each state's row is read whole. `group_packed_sites`
    # lays group_of out so that its copy costs nothing.
    args = (
        np.ascontiguousarray(np.asarray(markers, dtype=np.uint8).T), np.ascontiguousarray(query, dtype=np.int8),
        np.ascontiguousarray(candidates, dtype=np.int32), np.ascontiguousarray(jump, dtype=np.float64),
        float(error), np.ascontiguousarray(bounds, dtype=np.int64),
        np.ascontiguousarray(np.asarray(group_of, dtype=np.int32).T), n_groups, alt_ptr, alt_group,
        np.ascontiguousarray(weights, dtype=np.float64), out,
    )
    run_parts(_copy_posteriors, query.shape[0], threads, *args)
    return out


TOP_BINS = 4096  # histogram bins of a top-rows pass: a narrowing pass cuts a row's value range by 4096


@compiled
def _top_rows(priority, n_top, n_bins, out, q_lo, q_hi):  # pragma: no cover - compiled
    """out[q] = the indices of row q's n_top highest priorities (exact integers), ties to the lower
    index, increasing: the n_top-th highest value is found by narrowing histograms of at most
    n_bins bins over the row, then one pass keeps the rows above it and its lowest-index ties."""
    counts = np.zeros(n_bins, np.int64)
    n = priority.shape[1]
    for q in range(q_lo, q_hi):
        row = priority[q]
        lo_v = np.int64(row[0])
        hi_v = lo_v
        for r in range(n):
            v = np.int64(row[r])
            lo_v = min(lo_v, v)
            hi_v = max(hi_v, v)
        need = n_top  # rows still to take from the values in [lo_v, hi_v]
        while True:
            shift = 0
            while ((hi_v - lo_v) >> shift) >= n_bins:
                shift += 1
            used = ((hi_v - lo_v) >> shift) + 1
            counts[:used] = 0
            for r in range(n):
                v = np.int64(row[r])
                if lo_v <= v <= hi_v:
                    counts[(v - lo_v) >> shift] += 1
            above = 0
            b = used - 1
            while b > 0 and above + counts[b] < need:
                above += counts[b]
                b -= 1
            need -= above
            lo_v = lo_v + (b << shift)
            hi_v = min(hi_v, lo_v + (np.int64(1) << shift) - 1)
            if shift == 0:
                break
        j = 0
        for r in range(n):
            v = np.int64(row[r])
            if j < n_top and (v > lo_v or (v == lo_v and need > 0)):  # j < n_top: never past the row
                if v == lo_v:
                    need -= 1
                out[q, j] = r
                j += 1


def top_rows(priority: np.ndarray, n_top: int, *, threads: int = 1) -> np.ndarray:
    """(Q, n_top) int32 indices of each row's n_top highest priorities (exact integers, float32 or
    int64), ties to the lower index, increasing along each row."""
    if not 0 < n_top <= priority.shape[1]:
        raise ValueError(f"cannot keep {n_top} of {priority.shape[1]} rows")
    priority = np.ascontiguousarray(priority)
    out = np.empty((priority.shape[0], n_top), dtype=np.int32)
    run_parts(_top_rows, priority.shape[0], threads, priority, n_top, TOP_BINS, out)
    return out
