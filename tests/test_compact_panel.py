"""The panel's compact storage: what is decoded is exactly what was encoded, in far fewer bytes."""

import numpy as np
import pytest

from spinimpute.errors import ModelFileError
from spinimpute.io import compact_panel
from spinimpute.io.compact_panel import DENSE, SPARSE_ALT, SPARSE_REF


@pytest.fixture(scope="module")
def simulated_rows():
    """np.packbits rows of a seeded msprime panel of 1,203 haplotypes (not a multiple of 8), with
    some sites whose ALT is the common allele (REF and ALT swapped) and an all-ALT site."""
    from spinimpute.tools.simulate import simulate_haplotypes

    sim = simulate_haplotypes(n_individuals=602, length=300_000, seed=11)
    haplotypes = sim.haplotypes[:, :1203].copy()
    haplotypes[::7] ^= 1
    haplotypes[5] = 1
    return haplotypes, np.packbits(haplotypes, axis=1)


def test_round_trip_by_ranges_and_indices(simulated_rows):
    haplotypes, packed = simulated_rows
    compact = compact_panel.encode(packed, haplotypes.shape[1])
    assert compact.shape == packed.shape
    assert np.array_equal(np.asarray(compact), packed)
    assert np.array_equal(compact[100:350], packed[100:350])
    assert compact[7:7].shape == (0, packed.shape[1])
    rows = np.array([900, 3, 4, 40, 41, 2, 900])
    assert np.array_equal(compact[rows], packed[rows])
    # Every kind of site is there: rare ALT and rare REF lists, and blocks.
    assert {SPARSE_ALT, SPARSE_REF, DENSE} <= set(compact.code.tolist())
    assert compact.code[5] == SPARSE_REF and len(compact.carriers) > 0 and len(compact.block_sequences) > 1


def test_compact_is_much_smaller_than_packed_bits(simulated_rows):
    haplotypes, packed = simulated_rows
    compact = compact_panel.encode(packed, haplotypes.shape[1])
    stored = sum(a.nbytes for a in compact.tensors().values())
    assert stored < packed.nbytes / 4


def test_blocks_end_at_the_sequence_limit(simulated_rows, monkeypatch):
    haplotypes, packed = simulated_rows
    monkeypatch.setattr(compact_panel, "MAX_SEQUENCES", 16)
    compact = compact_panel.encode(packed, haplotypes.shape[1], threads=2)
    assert compact.block_sequences.max() <= 16
    assert np.array_equal(np.asarray(compact), packed)


def test_corrupt_indices_are_a_model_file_error(simulated_rows):
    haplotypes, packed = simulated_rows
    compact = compact_panel.encode(packed, haplotypes.shape[1])
    compact.source = "bad.spin"
    compact.hap_index[0, 0] = compact.block_sequences[0]
    with pytest.raises(ModelFileError, match="bad.spin: corrupt model file"):
        np.asarray(compact)


def test_arrays_that_disagree_are_rejected(simulated_rows):
    haplotypes, packed = simulated_rows
    arrays = compact_panel.encode(packed, haplotypes.shape[1]).tensors()
    assert np.array_equal(np.asarray(compact_panel.CompactHaplotypes.from_tensors(haplotypes.shape[1], arrays)),
                          packed)
    arrays["sequence_bits"] = arrays["sequence_bits"][:-1]
    with pytest.raises(ValueError, match="disagree"):
        compact_panel.CompactHaplotypes.from_tensors(haplotypes.shape[1], arrays)
