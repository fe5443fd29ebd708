import itertools

import numpy as np
import pytest

from spinimpute.engine import phasing_kernels, statistics
from spinimpute.model import copying_kernels
from spinimpute.warmup import compile_kernels


def test_warm_up_compiles_every_kernel():
    compile_kernels()  # what the Docker image runs at build time


def test_groups_split_over_threads_equal_one_thread():
    rng = np.random.default_rng(1)
    by_site = (rng.random((300, 64)) < 0.1).astype(np.uint8)
    bounds = np.array([0, 0, 17, 100, 101, 250, 300])
    packed = np.packbits(by_site, axis=1)
    one = copying_kernels.group_intervals(packed, 64, bounds, threads=1)
    three = copying_kernels.group_intervals(packed, 64, bounds, threads=3)
    for a, b in zip(one, three):
        np.testing.assert_array_equal(a, b)
    group_of, _, alt_ptr, alt_group = one
    for k, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        for j in range(lo, hi):  # a site's ALT groups are exactly the groups of its ALT carriers
            np.testing.assert_array_equal(alt_group[alt_ptr[j] : alt_ptr[j + 1]], np.unique(group_of[k][by_site[j] == 1]))


def test_intervals_with_more_groups_than_first_members_recorded_group_alike(monkeypatch):
    """The grouping records the first haplotypes of FIRST_MEMBERS groups an interval as it labels;
    wider intervals find theirs afterwards: the same groups and ALT groups either way."""
    rng = np.random.default_rng(4)
    by_site = (rng.random((300, 90)) < 0.3).astype(np.uint8)
    bounds = np.array([0, 2, 40, 41, 200, 300])
    packed = np.packbits(by_site, axis=1)
    want = copying_kernels.group_intervals(packed, 90, bounds, threads=2)
    monkeypatch.setattr(copying_kernels, "FIRST_MEMBERS", 3)
    got = copying_kernels.group_intervals(packed, 90, bounds, threads=2)
    assert (want[1] > 3).sum() >= 3 and (want[1] <= 3).any()
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
    group_of, _, alt_ptr, alt_group = got
    for k, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        for j in range(lo, hi):
            np.testing.assert_array_equal(alt_group[alt_ptr[j] : alt_ptr[j + 1]], np.unique(group_of[k][by_site[j] == 1]))


@pytest.mark.parametrize("alt_rate,n_ref", [(0.002, 203), (0.05, 203), (0.5, 61), (1.0, 16)])
def test_groups_are_the_distinct_sequences_numbered_by_first_appearance(alt_rate, n_ref):
    rng = np.random.default_rng(3)
    by_site = (rng.random((400, n_ref)) < alt_rate).astype(np.uint8)
    by_site[:, n_ref // 2 :] = by_site[:, : n_ref - n_ref // 2]  # repeated sequences
    bounds = np.array([0, 0, 1, 40, 41, 200, 400])
    group_of, n_groups, _, _ = copying_kernels.group_intervals(np.packbits(by_site, axis=1), n_ref, bounds, threads=2)
    for k, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        sequences, first, inverse = np.unique(by_site[lo:hi].T, axis=0, return_index=True, return_inverse=True)
        order = np.argsort(first)  # groups in order of their first member
        want = np.empty(len(order), dtype=np.int64)
        want[order] = np.arange(len(order))
        assert n_groups[k] == len(sequences)
        np.testing.assert_array_equal(group_of[k], want[inverse.ravel()])


def test_block_groups_are_the_distinct_sequences_over_markers_and_inner_sites():
    rng = np.random.default_rng(4)
    n_ref = 90
    by_site = (rng.random((300, n_ref)) < 0.1).astype(np.uint8)
    by_site[:, 45:] = by_site[:, :45]
    by_site[::5, 60:] = 1 - by_site[::5, 60:]  # some copies differ at some sites only
    markers = by_site[[3, 50, 51, 120, 200, 260, 299]]
    markers[1, :3] = 1 - markers[1, :3]  # and three at a marker only
    by_site[[50, 119], [51, 52]] = 1 - by_site[[50, 119], [51, 52]]  # two at a block's first or last inner site
    bounds = np.array([0, 3, 50, 51, 120, 200, 260, 300, 300])  # the intervals of 7 markers
    block_bounds = np.array([0, 1, 4, 7])
    for threads in (1, 2):
        block_of = copying_kernels.group_blocks(np.packbits(by_site, axis=1), np.packbits(markers, axis=1), n_ref,
                                                bounds, block_bounds, threads)
        for b, (m0, m1) in enumerate(itertools.pairwise(block_bounds)):
            rows = np.vstack([markers[m0:m1], by_site[bounds[m0 + 1] : bounds[m1]]])  # its markers, inner sites
            want = np.unique(rows.T, axis=0, return_inverse=True)[1].ravel()
            # The same partition of the haplotypes: each label of one is one label of the other.
            pairs = np.unique(np.stack([block_of[b], want]), axis=1)
            assert pairs.shape[1] == len(np.unique(block_of[b])) == len(np.unique(want))


@pytest.mark.parametrize("dtype,scale", [(np.float32, 1), (np.float32, 3404), (np.int64, 10**9)])
def test_top_rows_keep_the_highest_priorities_and_the_lowest_index_ties(dtype, scale):
    rng = np.random.default_rng(5)
    priority = (rng.integers(-6, 7, (40, 3000)) * scale + rng.integers(-2, 2, (40, 3000))).astype(dtype)
    for n_top in (1, 17, 400, 2999, 3000):
        # The reference: sort by priority (highest first), then index (lowest first).
        order = np.lexsort((np.broadcast_to(np.arange(3000), priority.shape), -priority.astype(np.int64)), axis=1)
        expected = np.sort(order[:, :n_top], axis=1)
        for threads in (1, 3):
            np.testing.assert_array_equal(copying_kernels.top_rows(priority, n_top, threads=threads), expected)


@pytest.mark.parametrize("pooled", [False, True])
def test_candidate_priority_is_the_best_local_shortfall_then_the_total(pooled):
    """`candidate_priority` against its definition, over all rows and over per-query pools of rows."""
    rng = np.random.default_rng(9)
    n_markers, n_ref, n_query = 70, 50, 4
    markers = (rng.random((n_markers, n_ref)) < 0.4).astype(np.uint8)
    query = np.where(rng.random((n_query, n_markers)) < 0.1, -1, rng.random((n_query, n_markers)) < 0.4).astype(np.int8)
    cuts = np.array([0, 16, 30, 46, 62, 70])
    if pooled:
        pool = np.sort(np.stack([rng.choice(n_ref, 20, replace=False) for _ in range(n_query)]), axis=1).astype(np.int32)
    else:
        pool = np.broadcast_to(np.arange(n_ref, dtype=np.int32), (n_query, n_ref))
    got = copying_kernels.candidate_priority(markers, query, cuts, pool, threads=2)
    for q in range(n_query):
        rows = markers[:, pool[q]]  # (M, P)
        observed = query[q] >= 0
        agree = np.where(observed[:, None], np.where(rows == query[q][:, None], 1, -1), 0)
        segment = np.stack([agree[a:b].sum(axis=0) for a, b in itertools.pairwise(cuts)])  # (S, P)
        padded = np.pad(segment, ((1, 1), (0, 0)))
        local = padded[:-2] + padded[1:-1] + padded[2:]
        shortfall = (local - local.max(axis=1, keepdims=True)).max(axis=0)
        np.testing.assert_array_equal(got[q], shortfall * (4 * n_markers + 4) + segment.sum(axis=0))


def test_site_sums_follow_ploidy():
    rng = np.random.default_rng(2)
    p = rng.random((7, 10)).astype(np.float32)  # 5 samples
    haploid = rng.random((7, 5)) < 0.3
    pairs = p.reshape(7, 5, 2).astype(np.float64)
    dose = np.where(haploid, pairs.mean(axis=2), pairs.sum(axis=2))
    expected_sq = np.where(haploid, dose, dose + 2 * pairs.prod(axis=2))
    want = np.stack([dose.sum(1), (dose**2).sum(1), expected_sq.sum(1), np.where(haploid, 1, 2).sum(1)])
    for threads in (1, 3):
        np.testing.assert_allclose(statistics.site_sums(p, haploid, threads), want, rtol=1e-12)
    np.testing.assert_allclose(statistics.site_sums(p, None)[3], np.full(7, 10.0))



def test_pair_viterbi_explains_genotypes_with_two_templates_and_keeps_anchors():
    # Templates 0 and 1 are complements, 2 is all REF: heterozygotes everywhere are the pair (0, 1).
    t = np.array([[0, 1, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=np.uint8)  # (M, K)
    genotypes = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=np.int8)
    first = np.zeros_like(genotypes)
    second = np.zeros_like(genotypes)
    anchored = np.zeros(genotypes.shape, dtype=bool)
    first[0, 3], second[0, 3], anchored[0, 3] = 1, 0, True  # sample 0: ALT first at marker 3, i.e. template 1
    jump = np.full(4, 0.01)
    path = phasing_kernels.pair_viterbi(genotypes, first, second, anchored, np.stack([t, t]), jump, 1e-3, threads=2)
    a, b = path // 3, path % 3
    np.testing.assert_array_equal(a[0], 1)
    np.testing.assert_array_equal(b[0], 0)
    # Sample 1 is homozygous REF at the last marker: one haplotype switches to a REF template there.
    pair = {(int(x), int(y)) for x, y in zip(a[1, :4], b[1, :4])}
    assert len(pair) == 1 and pair <= {(0, 1), (1, 0)}
    assert t[4, a[1, 4]] + t[4, b[1, 4]] == 0 and (a[1, 4], b[1, 4]) != (a[1, 3], b[1, 3])


def _brute_force_relative_phase(genotypes, first, second, anchored, templates, jump, error):
    """`phasing_kernels.pair_relative_phase` for one sample by summing over every path of template pairs."""
    m_count, k = templates.shape
    states = [(a, b) for a in range(k) for b in range(k)]
    emit = [1.0, error, error * error]

    def emission(m, a, b):
        if genotypes[m] < 0:
            return 1.0
        if anchored[m]:
            return emit[int(templates[m, a] != first[m]) + int(templates[m, b] != second[m])]
        return emit[abs(int(templates[m, a]) + int(templates[m, b]) - int(genotypes[m]))]

    def orientation(m, a, b):
        return {(1, 0): 0, (0, 1): 1}.get((int(templates[m, a]), int(templates[m, b])), -1)

    hets = np.flatnonzero(genotypes == 1)
    same, total = np.zeros(m_count), np.zeros(m_count)
    for path in itertools.product(states, repeat=m_count):
        weight = np.prod([emission(m, *path[m]) for m in range(m_count)])
        for m in range(1, m_count):
            p = jump[m - 1]
            weight *= np.prod([(1 - p) * (x == y) + p / k for x, y in zip(path[m - 1], path[m])])
        for i, j in itertools.pairwise(hets):
            before, here = orientation(i, *path[i]), orientation(j, *path[j])
            if here >= 0:  # a path without an orientation before counts half to each
                same[j] += weight * (0.5 if before < 0 else float(before == here))
                total[j] += weight
    out = np.full(m_count, np.nan)
    out[hets[1:]] = same[hets[1:]] / total[hets[1:]]
    return out


def test_pair_relative_phase_sums_over_all_paths():
    rng = np.random.default_rng(3)
    m_count, k = 5, 3
    templates = (rng.random((m_count, k)) < 0.5).astype(np.uint8)
    templates[:, 0] = [0, 1, 1, 0, 1]
    templates[:, 1] = 1 - templates[:, 0]  # two complementary templates explain heterozygotes anywhere
    genotypes = np.array([[1, 1, -1, 1, 1], [1, 0, 1, 1, 2]], dtype=np.int8)
    first = np.where(genotypes == 1, 0, np.maximum(genotypes, 0) // 2).astype(np.int8)
    second = (np.maximum(genotypes, 0) - first).astype(np.int8)
    anchored = np.zeros(genotypes.shape, dtype=bool)
    first[1, 2], second[1, 2], anchored[1, 2] = 1, 0, True  # sample 1's heterozygote at marker 2 is phased
    jump = np.array([0.05, 0.3, 0.02, 0.1])
    stacked = np.stack([templates, templates])
    got = phasing_kernels.pair_relative_phase(genotypes, first, second, anchored, stacked, jump, 0.01, threads=2)
    for s in range(2):
        want = _brute_force_relative_phase(genotypes[s], first[s], second[s], anchored[s], templates, jump, 0.01)
        np.testing.assert_allclose(got[s], want, rtol=1e-5, equal_nan=True)
    # Complementary templates: markers 0 and 1 carry ALT on different ones, 3 and 4 too.
    assert got[0, 1] < 0.05 and got[0, 4] < 0.05
