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

import math

import numpy as np

from spinimpute.compiled import compiled, run_parts
from spinimpute.model.config import EVIDENCE_FEATURES

_POPCOUNT = np.array([v.bit_count() for v in range(256)], dtype=np.int64)  # set bits of each byte value


@compiled
def _allele(packed_row, r):  # pragma: no cover - compiled
    """Haplotype r's allele in a row of np.packbits (big bit order)."""
    return (packed_row[r >> 3] >> (7 - (r & 7))) & 1


@compiled
def _split_groups(row, n_ref, labels, size, moving, split, touched, carriers, n):  # pragma: no cover - compiled
    """Split the n groups of `labels` by one site's alleles (a packbits row): the ALT carriers of a
    group that also has REF carriers move to a new group. Returns the new number of groups.

    Only the site's carriers are visited (found a byte at a time), so the many rare sites
    of a large panel cost little more than reading their bytes; where most haplotypes carry
    ALT, the REF carriers move instead (the same partition: the callers' labels name groups,
    in no order). `size` holds each group's members; `moving`, `split`, `touched` and
    `carriers` are scratch space of R entries (`moving` all zero between calls).
    """
    n_alt = 0
    for b in range(row.shape[0]):
        n_alt += _POPCOUNT[row[b]]
    invert = 0xFF if 2 * n_alt > n_ref else 0
    last = row.shape[0] - 1
    c = 0
    for b in range(row.shape[0]):
        byte = row[b] ^ invert
        if b == last:  # no haplotypes beyond R
            byte &= (0xFF << (8 * row.shape[0] - n_ref)) & 0xFF
        if byte:
            # Each bit's haplotype written, kept where the bit is set: no branch on the bits
            # (`carriers` has room for 8 beyond R).
            for bit in range(8):
                carriers[c] = 8 * b + bit
                c += (byte >> (7 - bit)) & 1
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
def _split_scratch(n_ref):  # pragma: no cover - compiled
    """`_split_groups`' arrays for R haplotypes, all in one group: labels, each label's size, the
    current site's carriers in each label (all zero between calls), the label they move to, the
    labels touched and the carriers (R + 8)."""
    labels = np.zeros(n_ref, np.int32)
    size = np.zeros(n_ref, np.int32)
    if n_ref > 0:
        size[0] = n_ref
    return (labels, size, np.zeros(n_ref, np.int32), np.empty(n_ref, np.int32), np.empty(n_ref, np.int32),
            np.empty(n_ref + 8, np.int32))


@compiled
def _label_intervals(packed, n_ref, bounds, group_of, n_groups, first_member, k_lo, k_hi):  # pragma: no cover
    """Exact grouping: at each site the ALT carriers of a group split off into a new group."""
    labels, size, moving, split, touched, carriers = _split_scratch(n_ref)
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
                if m < first_member.shape[1]:  # wider intervals: `_first_members` afterwards
                    first_member[k, m] = r
                m += 1
            group_of[k, r] = number[g]
        n_groups[k] = m


@compiled
def _first_members(group_of, n_groups, first_member, intervals):  # pragma: no cover - compiled
    """Each group's first haplotype in the `intervals` (group_of numbers groups by first appearance)."""
    for k in intervals:
        m = 0
        for r in range(group_of.shape[1]):
            if group_of[k, r] == m:
                first_member[k, m] = r
                m += 1
                if m == n_groups[k]:
                    break


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
    labels, size, moving, split, touched, carriers = _split_scratch(n_ref)
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


FIRST_MEMBERS = 1024  # groups an interval whose first haplotypes the grouping records as it labels


def group_intervals(packed: np.ndarray, n_ref: int, bounds: np.ndarray, threads: int = 1):
    """Group the reference haplotypes by their alleles within each interval.

    Args:
        packed: (J, ceil(R / 8)) uint8, each site's 0/1 alleles of the R haplotypes as
            np.packbits packs them (the model file's layout, read without unpacking).
        n_ref: R.
        bounds: (n_intervals + 1,) int64 site bounds of the intervals.

    Returns:
        group_of (n_intervals, R) int32 group of each haplotype in each interval (laid out haplotype by haplotype),
        numbered in order of first appearance; n_groups (n_intervals,) int32; and, for
        each site j, the groups of its interval whose sequence carries ALT there:
        alt_group[alt_ptr[j]:alt_ptr[j + 1]] (int32, increasing).
    """
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    if packed.shape[1] != -(-n_ref // 8):
        raise ValueError(f"{packed.shape[1]} bytes per site cannot hold {n_ref} haplotypes")
    bounds = np.ascontiguousarray(bounds, dtype=np.int64)
    n_intervals = len(bounds) - 1
    # Laid out haplotype by haplotype (indexed [interval, haplotype]): the copying model reads its
    # states' groups over all intervals, a contiguous row each (`copy_posteriors`).
    group_of = np.zeros((n_ref, n_intervals), dtype=np.int32).T
    n_groups = np.zeros(n_intervals, dtype=np.int32)
    # Room for FIRST_MEMBERS groups an interval (few intervals have more): an (intervals x R)
    # array would be new memory, written at a few entries a row.
    first_member = np.zeros((n_intervals, min(n_ref, FIRST_MEMBERS)), dtype=np.int32)
    run_parts(_label_intervals, n_intervals, threads, packed, n_ref, bounds, group_of, n_groups, first_member)
    if n_intervals and n_groups.max() > first_member.shape[1]:
        wider = np.zeros((n_intervals, int(n_groups.max())), dtype=np.int32)
        wider[:, : first_member.shape[1]] = first_member
        first_member = wider
        _first_members(group_of, n_groups, first_member, np.flatnonzero(n_groups > FIRST_MEMBERS))
    counts = np.zeros(packed.shape[0], dtype=np.int64)
    run_parts(_count_alt_groups, n_intervals, threads, packed, bounds, n_groups, first_member, counts)
    alt_ptr = np.zeros(packed.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=alt_ptr[1:])
    alt_group = np.empty(int(alt_ptr[-1]), dtype=np.int32)
    run_parts(_fill_alt_groups, n_intervals, threads, packed, bounds, n_groups, first_member, alt_ptr, alt_group)
    return group_of, n_groups, alt_ptr, alt_group


@compiled
def pack_segments(bits, cuts, packed, lo, hi):  # pragma: no cover - compiled
    """packed[i, c] |= the bits of column c over the markers of segment i, the segment's first in
    the lowest bit (bits: (M, C) 0/1; packed: (S, C) unsigned integers as wide as the segments)."""
    for i in range(lo, hi):
        for m in range(cuts[i], cuts[i + 1]):
            shift = np.uint64(m - cuts[i])
            for c in range(bits.shape[1]):
                packed[i, c] |= np.uint64(bits[m, c]) << shift


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
    run_parts(pack_segments, n_segments, threads, np.ascontiguousarray(markers, dtype=np.uint8), cuts, ref_packed)
    query = np.ascontiguousarray(query.T, dtype=np.int8)  # (M, Q)
    alt_packed = np.zeros((n_segments, query.shape[1]), np.uint16)
    observed_packed = np.zeros((n_segments, query.shape[1]), np.uint16)
    pack_segments(np.ascontiguousarray(query == 1, dtype=np.uint8), cuts, alt_packed, 0, n_segments)
    pack_segments(np.ascontiguousarray(query >= 0, dtype=np.uint8), cuts, observed_packed, 0, n_segments)
    priority = np.empty(pool.shape, np.float32)
    run_parts(_candidate_priority, query.shape[1], threads, ref_packed, alt_packed, observed_packed, pool,
              4 * n_markers + 4, priority)
    return priority


@compiled
def _label_blocks(packed, packed_markers, n_ref, bounds, block_bounds, block_of, b_lo, b_hi):  # pragma: no cover
    """Exact grouping over each block of markers: its markers' alleles and its inner intervals' sites."""
    labels, size, moving, split, touched, carriers = _split_scratch(n_ref)
    for b in range(b_lo, b_hi):
        m0, m1 = block_bounds[b], block_bounds[b + 1]
        labels[:] = 0
        size[0] = n_ref
        n = 1
        for m in range(m0, m1):
            n = _split_groups(packed_markers[m], n_ref, labels, size, moving, split, touched, carriers, n)
        for j in range(bounds[m0 + 1], bounds[m1]):  # the sites of intervals m0 + 1 .. m1 - 1
            n = _split_groups(packed[j], n_ref, labels, size, moving, split, touched, carriers, n)
        for r in range(n_ref):
            block_of[r, b] = labels[r]


def group_blocks(packed: np.ndarray, packed_markers: np.ndarray, n_ref: int, bounds: np.ndarray,
                 block_bounds: np.ndarray, threads: int = 1) -> np.ndarray:
    """Group the reference haplotypes by their alleles over each block of markers.

    Block b holds markers [block_bounds[b], block_bounds[b + 1]); two haplotypes share a
    group there when they carry the same alleles at those markers and at the sites of the
    intervals between them (so also the same group in each of those intervals).

    Args:
        packed: (J, ceil(R / 8)) np.packbits rows of the sites, cut into intervals by `bounds`.
        packed_markers: (M, ceil(R / 8)) np.packbits rows of the markers.

    Returns:
        (n_blocks, R) int32 group labels (below R; not numbered in any order), laid out
        haplotype by haplotype: the copying model reads each state's labels block after block.
    """
    block_bounds = np.ascontiguousarray(block_bounds, dtype=np.int64)
    n_blocks = len(block_bounds) - 1
    by_haplotype = np.zeros((n_ref, n_blocks), dtype=np.int32)
    run_parts(_label_blocks, n_blocks, threads, np.ascontiguousarray(packed, dtype=np.uint8),
              np.ascontiguousarray(packed_markers, dtype=np.uint8), n_ref, np.ascontiguousarray(bounds, dtype=np.int64),
              block_bounds, by_haplotype)
    return by_haplotype.T


@compiled
def _alt_sites(bounds, n_groups, alt_ptr, alt_group):  # pragma: no cover - compiled
    """The transpose of the sites' ALT groups: the sites of interval k where its group u carries
    ALT are alt_site[site_ptr[group_base[k] + u]:site_ptr[group_base[k] + u + 1]] (increasing)."""
    n_intervals = len(bounds) - 1
    group_base = np.zeros(n_intervals + 1, np.int64)
    for k in range(n_intervals):
        group_base[k + 1] = group_base[k] + n_groups[k]
    site_ptr = np.zeros(group_base[n_intervals] + 1, np.int64)
    for k in range(n_intervals):
        for j in range(bounds[k], bounds[k + 1]):
            for t in range(alt_ptr[j], alt_ptr[j + 1]):
                site_ptr[group_base[k] + alt_group[t] + 1] += 1
    for g in range(group_base[n_intervals]):
        site_ptr[g + 1] += site_ptr[g]
    fill = site_ptr[:-1].copy()
    alt_site = np.empty(len(alt_group), np.int32)
    for k in range(n_intervals):
        for j in range(bounds[k], bounds[k + 1]):
            for t in range(alt_ptr[j], alt_ptr[j + 1]):
                g = group_base[k] + alt_group[t]
                alt_site[fill[g]] = j
                fill[g] += 1
    return group_base, site_ptr, alt_site


@compiled
def _occupy(sums, u, occupied, n_occ):  # pragma: no cover - compiled
    """Note group u as holding states (before its first count is added); the new count."""
    if sums[u, 3] == 0.0:
        occupied[n_occ] = u
        return n_occ + 1
    return n_occ


@compiled
def _write_evidence(evidence_row, j, s_a, s_g, s_1, n_states, log_ag):  # pragma: no cover - compiled
    evidence_row[j, 0] = min(1.0, s_a)
    evidence_row[j, 1] = min(1.0, s_g)
    evidence_row[j, 2] = s_1 / n_states
    evidence_row[j, 3] = log_ag


@compiled
def _site_posteriors(k, sums, occupied, n_occ, n_states, bounds, weights, alt_ptr, alt_group, sites, acc,
                     out_row, evidence_row):  # pragma: no cover - compiled
    """Posteriors of interval k's sites from its groups' sums of a*g, a, g and states (`sums`, (U_k, 4)),
    a and g the forward message before it and the backward message after it, each summing to one;
    and each site's evidence (`evidence_row`, (J, EVIDENCE_FEATURES)): the ALT carriers' shares of
    a, of g and of the states, and log10 of the sum of a*g over all states (see `copy_posteriors`).

    Only the groups occupied[:n_occ] hold states (the others' sums are zero); `sums` is left zero.
    A site where none of them carries ALT has no ALT mass: probability 0. Where few groups hold
    states (a large panel's few hundred states among its sequences), the sites are reached from
    those groups' ALT sites (`sites`: `_alt_sites`); otherwise each site sums its ALT groups.
    Either way a site's sums are added in increasing group order: the same values.
    """
    n = sums.shape[0]
    lo, hi = bounds[k], bounds[k + 1]
    sparse = 4 * n_occ < n
    if sparse:  # increasing group order, as the dense sums run
        for i in range(1, n_occ):
            u = occupied[i]
            t = i
            while t > 0 and occupied[t - 1] > u:
                occupied[t] = occupied[t - 1]
                t -= 1
            occupied[t] = u
    else:
        n_occ = 0
        for u in range(n):
            if sums[u, 3] != 0.0:
                occupied[n_occ] = u
                n_occ += 1
    ag_total = 0.0  # summed over the groups, not the states: no chain of additions in the callers' loops
    for i in range(n_occ):
        ag_total += sums[occupied[i], 0]
    log_ag = math.log10(max(ag_total, 1e-30))
    if sparse:
        group_base, site_ptr, alt_site = sites
        for j in range(lo, hi):
            out_row[j] = 0.0
            _write_evidence(evidence_row, j, 0.0, 0.0, 0.0, n_states, log_ag)  # no ALT carrier among the states
        for i in range(n_occ):
            u = occupied[i]
            g = group_base[k] + u
            for t in range(site_ptr[g], site_ptr[g + 1]):
                j = alt_site[t] - lo
                acc[j, 0] += sums[u, 0]
                acc[j, 1] += sums[u, 1]
                acc[j, 2] += sums[u, 2]
                acc[j, 3] += sums[u, 3]
        for i in range(n_occ):
            g = group_base[k] + occupied[i]
            for t in range(site_ptr[g], site_ptr[g + 1]):
                j = alt_site[t]
                if acc[j - lo, 3] == 0.0:  # done: reached from an earlier group
                    continue
                num = (weights[0, j] * acc[j - lo, 0] + weights[1, j] * acc[j - lo, 1]
                       + weights[2, j] * acc[j - lo, 2] + weights[3, j] * acc[j - lo, 3])
                den = weights[0, j] * ag_total + weights[1, j] + weights[2, j] + weights[3, j] * n_states
                out_row[j] = min(1.0, max(0.0, num / den))
                _write_evidence(evidence_row, j, acc[j - lo, 1], acc[j - lo, 2], acc[j - lo, 3], n_states, log_ag)
                acc[j - lo, :] = 0.0
    else:
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
            out_row[j] = min(1.0, max(0.0, num / den))
            _write_evidence(evidence_row, j, s_a, s_g, s_1, n_states, log_ag)
    for i in range(n_occ):
        sums[occupied[i], :] = 0.0


@compiled
def _interval_posteriors(k, a, g, cand, groups_by_haplotype, n_groups, bounds, weights, alt_ptr, alt_group, sites,
                         sums, occupied, acc, out_row, evidence_row):  # pragma: no cover - compiled
    """Posteriors of interval k's sites from each state's forward message a before it and backward
    message g after it (each summing to one)."""
    if bounds[k] == bounds[k + 1]:
        return
    n_occ = 0
    for s in range(cand.shape[0]):
        u = groups_by_haplotype[cand[s], k]
        n_occ = _occupy(sums, u, occupied, n_occ)
        sums[u, 0] += a[s] * g[s]
        sums[u, 1] += a[s]
        sums[u, 2] += g[s]
        sums[u, 3] += 1.0
    _site_posteriors(k, sums[: n_groups[k]], occupied, n_occ, cand.shape[0], bounds, weights, alt_ptr, alt_group,
                     sites, acc, out_row, evidence_row)


@compiled
def _copy_posteriors(alleles, query, candidates, jump, error, block_bounds, blocks_by_haplotype, bounds,
                     groups_by_haplotype, n_groups, alt_ptr, alt_group, sites, weights, out, evidence, q_lo,
                     q_hi):  # pragma: no cover - compiled
    """The forward-backward over each query's states, a block of markers at a time.

    Within a block, the states that share a group of `blocks_by_haplotype` (a class) share
    their emissions, so each state's forward message is P(u) a(s) + C(u): its message a(s)
    before the block times a factor of its class u, plus a term of its class. The passes
    carry P and C per class (O(U) per marker for U classes rather than O(K)); a state's own
    message is formed only at the block's ends, and the sites between the block's markers
    take their posteriors from sums per class (each class lies in one group of each
    interval there), as Minimac's state reduction does.
    """
    n_markers = alleles.shape[1]
    n_states = candidates.shape[1]
    n_blocks = len(block_bounds) - 1
    entry = np.empty((n_blocks + 1, n_states), np.float64)  # forward message before each block (sums to one; ones before the first)
    class_of = np.empty((n_blocks, n_states), np.int32)
    first = np.empty((n_blocks, n_states), np.int32)  # each class's first state's haplotype
    count = np.empty((n_blocks, n_states), np.float64)  # each class's states
    n_classes = np.empty(n_blocks, np.int64)
    base = np.empty(n_blocks + 1, np.int64)
    fwd_p = np.empty(0, np.float64)  # P and C of each block's markers and classes, in turn (grown as needed)
    fwd_c = np.empty(0, np.float64)
    sigma = np.empty(n_markers, np.float64)  # 1 / the forward message's sum at each marker
    local = np.full(blocks_by_haplotype.shape[0], -1, np.int32)  # a block's groups -> their class, -1 elsewhere
    a_sum = np.empty(n_states, np.float64)
    b_sum = np.empty(n_states, np.float64)
    ab_sum = np.empty(n_states, np.float64)
    bwd_q = np.empty(n_states, np.float64)
    bwd_d = np.empty(n_states, np.float64)
    g_after = np.empty(n_states, np.float64)
    g_here = np.empty(n_states, np.float64)
    sums = np.zeros((max(1, n_groups.max()), 4), np.float64)  # a group's four sums share a cache line
    occupied = np.empty(sums.shape[0], np.int32)  # the groups of an interval that hold states
    widest = 1
    for k in range(len(bounds) - 1):
        widest = max(widest, bounds[k + 1] - bounds[k])
    acc = np.zeros((widest, 4), np.float64)  # an interval's sites' sums over the occupied groups
    match, mismatch = 1.0 - error, error
    for q in range(q_lo, q_hi):
        cand = candidates[q]
        x = query[q]
        out_row = out[q]
        evidence_row = evidence[q]
        base[0] = 0
        for b in range(n_blocks):
            n_u = 0
            for s in range(n_states):
                label = blocks_by_haplotype[cand[s], b]
                u = local[label]
                if u < 0:
                    u = n_u
                    local[label] = u
                    first[b, u] = cand[s]
                    count[b, u] = 0.0
                    n_u += 1
                class_of[b, s] = u
                count[b, u] += 1.0
            for u in range(n_u):
                local[blocks_by_haplotype[first[b, u], b]] = -1
            n_classes[b] = n_u
            base[b + 1] = base[b] + n_u * (block_bounds[b + 1] - block_bounds[b])
        if base[n_blocks] > fwd_p.shape[0]:
            fwd_p = np.empty(base[n_blocks], np.float64)
            fwd_c = np.empty(base[n_blocks], np.float64)
        # Forward.
        entry[0, :] = 1.0  # no message before the first marker: its emission alone
        for b in range(n_blocks):
            m0, m1, n_u = block_bounds[b], block_bounds[b + 1], n_classes[b]
            a_sum[:n_u] = 0.0
            for s in range(n_states):
                a_sum[class_of[b, s]] += entry[b, s]
            step = jump[m0 - 1] if m0 > 0 else 0.0
            for m in range(m0, m1):
                at = base[b] + (m - m0) * n_u
                total = 0.0
                for u in range(n_u):
                    e = match if x[m] < 0 or alleles[first[b, u], m] == x[m] else mismatch
                    if m == m0:
                        p, c = e, e * step
                    else:
                        p = e * sigma[m - 1] * fwd_p[at - n_u + u]
                        c = e * (sigma[m - 1] * fwd_c[at - n_u + u] + jump[m - 1])
                    fwd_p[at + u] = p
                    fwd_c[at + u] = c
                    total += p * a_sum[u] + count[b, u] * c
                sigma[m] = 1.0 / total
            at = base[b] + (m1 - 1 - m0) * n_u
            for s in range(n_states):
                u = class_of[b, s]
                entry[b + 1, s] = sigma[m1 - 1] * (fwd_p[at + u] * entry[b, s] + fwd_c[at + u])
        _interval_posteriors(n_markers, entry[n_blocks], entry[n_blocks], cand, groups_by_haplotype, n_groups, bounds,
                             weights, alt_ptr, alt_group, sites, sums, occupied, acc, out_row, evidence_row)
        # Backward; each interval is imputed as soon as the backward message of its right marker is known.
        g_after[:] = 1.0  # no message after the last marker
        for b in range(n_blocks - 1, -1, -1):
            m0, m1, n_u = block_bounds[b], block_bounds[b + 1], n_classes[b]
            a_sum[:n_u] = 0.0
            b_sum[:n_u] = 0.0
            ab_sum[:n_u] = 0.0
            for s in range(n_states):
                u = class_of[b, s]
                a_sum[u] += entry[b, s]
                b_sum[u] += g_after[s]
                ab_sum[u] += entry[b, s] * g_after[s]
            step = jump[m1 - 1] if m1 < n_markers else 0.0
            tau = 1.0
            for m in range(m1 - 1, m0 - 1, -1):
                total = 0.0
                for u in range(n_u):
                    e = match if x[m] < 0 or alleles[first[b, u], m] == x[m] else mismatch
                    if m == m1 - 1:
                        bwd_q[u], bwd_d[u] = e, e * step
                    else:
                        bwd_d[u] = e * (tau * bwd_d[u] + jump[m])
                        bwd_q[u] = e * tau * bwd_q[u]
                    total += bwd_q[u] * b_sum[u] + count[b, u] * bwd_d[u]
                tau = 1.0 / total
                if m > m0 and bounds[m] < bounds[m + 1]:  # interval m lies within the block
                    at = base[b] + (m - 1 - m0) * n_u
                    n_occ = 0
                    for u in range(n_u):
                        p, c, qq, d = fwd_p[at + u], fwd_c[at + u], bwd_q[u], bwd_d[u]
                        w = groups_by_haplotype[first[b, u], m]
                        n_occ = _occupy(sums, w, occupied, n_occ)
                        sums[w, 0] += sigma[m - 1] * tau * (p * qq * ab_sum[u] + p * d * a_sum[u]
                                                             + c * qq * b_sum[u] + c * d * count[b, u])
                        sums[w, 1] += sigma[m - 1] * (p * a_sum[u] + c * count[b, u])
                        sums[w, 2] += tau * (qq * b_sum[u] + d * count[b, u])
                        sums[w, 3] += count[b, u]
                    _site_posteriors(m, sums[: n_groups[m]], occupied, n_occ, n_states, bounds, weights, alt_ptr,
                                     alt_group, sites, acc, out_row, evidence_row)
            for s in range(n_states):
                u = class_of[b, s]
                g_here[s] = tau * (bwd_q[u] * g_after[s] + bwd_d[u])
            # Interval m0, between this block and the one before (interval 0: before the first marker).
            _interval_posteriors(m0, entry[b] if m0 > 0 else g_here, g_here, cand, groups_by_haplotype, n_groups,
                                 bounds, weights, alt_ptr, alt_group, sites, sums, occupied, acc, out_row, evidence_row)
            g_after, g_here = g_here, g_after


def copy_posteriors(markers, query, candidates, jump, error, bounds, groups, blocks, weights, *,
                    threads: int = 1, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Posterior ALT probability of each site for each query, and the evidence behind it (see
    `spinimpute.model.copying.impute_sites`).

    Args:
        markers: (M, R) uint8 reference alleles at the typed markers, marker-major.
        query: (Q, M) int8 query alleles, -1 where missing.
        candidates: (Q, K) int32 reference rows that are each query's states.
        jump: (M - 1,) float64, switch / ((1 - switch) K) between neighbouring markers.
        error: mismatch probability.
        bounds: (M + 2,) int64 site bounds of the M + 1 intervals.
        groups: (group_of, n_groups, alt_ptr, alt_group) from `group_intervals` over those intervals.
        blocks: (block_bounds, block_of): marker bounds of blocks of markers that cover them all, and
            `group_blocks` over them.
        weights: (4, J) float64 weights of the a*g, a, g and uniform terms at each site.

    Returns:
        (Q, J) probabilities of `dtype` (the arithmetic is float64), and (Q, J, EVIDENCE_FEATURES)
        float32 evidence: at each site the ALT carriers' shares of the forward message at the marker
        before it and of the backward message at the marker after it, the share of the states that
        carry ALT there, and log10 of the sum over the states of the two messages' product (the chance
        of copying one template across the interval: near 0 where both flanks agree on one template,
        about -log10(K) where they spread over all K states).
    """
    out = np.empty((query.shape[0], weights.shape[1]), dtype=dtype)
    evidence = np.empty((query.shape[0], weights.shape[1], EVIDENCE_FEATURES), dtype=np.float32)
    if out.size == 0:
        return out, evidence
    group_of, n_groups, alt_ptr, alt_group = groups
    block_bounds, block_of = blocks
    # Haplotype-major copies (R, M), (R, n_blocks) and (R, M + 1): each state's row is read whole.
    # `copying_numpy.group_packed_sites` lays the groups out so that their copies cost nothing.
    args = (
        np.ascontiguousarray(np.asarray(markers, dtype=np.uint8).T), np.ascontiguousarray(query, dtype=np.int8),
        np.ascontiguousarray(candidates, dtype=np.int32), np.ascontiguousarray(jump, dtype=np.float64),
        float(error), np.ascontiguousarray(block_bounds, dtype=np.int64),
        np.ascontiguousarray(np.asarray(block_of, dtype=np.int32).T), np.ascontiguousarray(bounds, dtype=np.int64),
        np.ascontiguousarray(np.asarray(group_of, dtype=np.int32).T), n_groups, alt_ptr, alt_group,
        _alt_sites(np.ascontiguousarray(bounds, dtype=np.int64), n_groups, alt_ptr, alt_group),
        np.ascontiguousarray(weights, dtype=np.float64), out, evidence,
    )
    run_parts(_copy_posteriors, query.shape[0], threads, *args)
    return out, evidence


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
