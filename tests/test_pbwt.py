import numpy as np
import pytest

from spinimpute.model import pbwt


def _panel(seed: int, n_markers: int, n_ref: int, n_query: int, *, flip: float = 0.1):
    """(M, R) markers from four founders with flipped alleles, and (Q, M) queries copied from panel rows."""
    rng = np.random.default_rng(seed)
    founders = rng.integers(0, 2, (4, n_markers))
    markers = (founders[rng.integers(0, 4, n_ref)] ^ (rng.random((n_ref, n_markers)) < flip)).T.astype(np.uint8)
    query = markers[:, rng.integers(0, n_ref, n_query)].T ^ (rng.random((n_query, n_markers)) < flip)
    return markers, query.astype(np.int8)


def _run(equal: np.ndarray) -> int:
    """Length of the leading run of True."""
    return int(np.argmin(np.r_[equal, False]))


@pytest.mark.parametrize("seed", range(6))
def test_neighbours_are_the_longest_exact_matches(seed):
    rng = np.random.default_rng(100 + seed)
    n_markers, n_ref = int(rng.integers(1, 40)), int(rng.integers(2, 60))
    markers, query = _panel(seed, n_markers, n_ref, 4)
    samples = np.flatnonzero(rng.random(n_markers) < 0.5)
    n_neighbours = int(rng.integers(1, n_ref + 1))
    ids, lengths = pbwt.longest_matches(markers, query, samples, n_neighbours, threads=2)
    in_parts = pbwt.longest_matches(markers, query, samples, n_neighbours, threads=5)  # the queries in two parts
    np.testing.assert_array_equal(in_parts[0], ids)
    np.testing.assert_array_equal(in_parts[1], lengths)
    equal = markers.T[None] == query[:, None]  # (Q, R, M)
    for q in range(len(query)):
        for s, k in enumerate(samples):
            for direction, listed in ((0, s), (1, len(samples) - 1 - s)):
                if direction == 0:  # matches ending at k
                    true = np.array([_run(equal[q, h, : k + 1][::-1]) for h in range(n_ref)])
                else:  # matches starting at k
                    true = np.array([_run(equal[q, h, k:]) for h in range(n_ref)])
                got, got_lengths = ids[direction, q, listed], lengths[direction, q, listed]
                n = int((got >= 0).sum())
                assert (got[n:] < 0).all() and len(set(got[:n])) == n
                np.testing.assert_array_equal(true[got[:n]], got_lengths[:n])  # the lengths are true
                assert (np.diff(got_lengths[:n]) <= 0).all()  # longest first
                np.testing.assert_array_equal(got_lengths[:n], np.sort(true[true > 0])[::-1][:n_neighbours])


def test_a_missing_allele_keeps_the_copied_template():
    rng = np.random.default_rng(7)
    markers = rng.integers(0, 2, (80, 50)).astype(np.uint8)  # distinct haplotypes past a few markers
    query = markers[:, [13, 31]].T.astype(np.int8)
    query[:, 20:60:7] = -1  # 20 markers or more from either end, where no other haplotype ties with the template
    samples = np.arange(20, 60, 5)  # matches of 20 markers or more each way: no ties
    ids, lengths = pbwt.longest_matches(markers, query, samples, 3)
    for q, h in enumerate((13, 31)):
        np.testing.assert_array_equal(ids[0, q, :, 0], h)
        np.testing.assert_array_equal(lengths[0, q, :, 0], samples + 1)
        np.testing.assert_array_equal(ids[1, q, :, 0], h)
        np.testing.assert_array_equal(lengths[1, q, ::-1, 0], 80 - samples)


def test_each_stretch_keeps_its_own_template():
    """A query that copies one haplotype and then another gets both, though either alone matches it half the way."""
    rng = np.random.default_rng(3)
    markers = rng.integers(0, 2, (400, 300)).astype(np.uint8)
    query = np.concatenate([markers[:200, 41], markers[200:, 250]]).astype(np.int8)[None]
    assert len(pbwt.chunk_cuts(400)) == 5
    np.testing.assert_array_equal(pbwt.select_candidates(markers, query, 2), [[41, 250]])


@pytest.mark.parametrize("neighbours", [1, 128])  # 1: queries ask again, and at all 12 the rest is filled
@pytest.mark.parametrize("n_candidates", [1, 10, 12])
def test_candidates_do_not_depend_on_the_batch(n_candidates, neighbours, monkeypatch):
    monkeypatch.setattr(pbwt, "NEIGHBOURS", neighbours)
    markers, query = _panel(11, 230, 12, 9, flip=0.3)
    query[::2, 50:90] = -1
    together = pbwt.select_candidates(markers, query, n_candidates, threads=2)
    assert together.shape == (9, n_candidates) and together.dtype == np.int32
    assert ((together >= 0) & (together < 12)).all() and (np.diff(together, axis=1) > 0).all()
    alone = np.concatenate([pbwt.select_candidates(markers, query[q : q + 1], n_candidates) for q in range(9)])
    np.testing.assert_array_equal(alone, together)
    monkeypatch.setattr(pbwt, "SELECTION_BYTES", 1)  # one query a batch, within one call
    np.testing.assert_array_equal(pbwt.select_candidates(markers, query, n_candidates, threads=3), together)


def test_more_candidates_than_haplotypes_is_an_error():
    markers, query = _panel(1, 10, 5, 1)
    with pytest.raises(ValueError, match="cannot keep 6 of 5"):
        pbwt.select_candidates(markers, query, 6)
