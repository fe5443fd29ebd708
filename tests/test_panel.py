import numpy as np
import pytest

from spinimpute.model.features import site_features
from spinimpute.panel import Strings, layout_windows


@pytest.mark.parametrize("n_sites,core,flank", [(1, 5, 2), (10, 3, 2), (1000, 128, 64), (999, 1000, 10)])
def test_cores_partition_the_sites(n_sites, core, flank):
    windows = layout_windows(n_sites, core=core, flank=flank)
    covered = np.concatenate([np.arange(w.core_start, w.core_stop) for w in windows])
    assert np.array_equal(covered, np.arange(n_sites))
    for w in windows:
        assert 0 <= w.start <= w.core_start < w.core_stop <= w.stop <= n_sites
        assert w.core_start - w.start <= flank and w.stop - w.core_stop <= flank
        assert w.core_stop - w.core_start <= core + 1


def test_site_features_shape_and_centre():
    f = site_features(np.array([0.0, 0.5, 0.99]), np.array([1.0, 1.5, 2.0]))
    assert f.shape == (3, 3)
    assert f[1, 2] == pytest.approx(0.0)


def test_strings_index_slice_iterate_and_join():
    values = ["rs1", ".", "ACGT", "é<DEL>", "", "T"]
    table = Strings.of(values)
    assert len(table) == 6 and list(table) == values and table == values
    assert [table[i] for i in range(-6, 6)] == values + values
    part = table[2:5]
    assert isinstance(part, Strings) and list(part) == values[2:5] and part[0] == "ACGT" and len(table[4:2]) == 0
    assert Strings.concat([table[:3], Strings.of([]), table[3:]]) == values
    assert Strings.from_lines(part.lines()) == values[2:5]
    with pytest.raises(IndexError):
        table[6]
    with pytest.raises(ValueError, match="newline"):
        Strings.from_lines(np.frombuffer(b"A\nB", dtype=np.uint8))
