import json

import numpy as np
import pytest
import torch

from spinimpute.engine.torch_backend import network_from_weights
from spinimpute.errors import ModelFileError, OutputFileError
from spinimpute.io.modelfile import (
    FORMAT_VERSION,
    METADATA_KEY,
    PRETRAINED_WEIGHTS,
    WEIGHTS_VERSION,
    load_model,
    load_weights,
    save_model,
)


def test_round_trip_preserves_weights_and_panel(trained_model, small_benchmark):
    from spinimpute.io.reading import read_panel

    bundle = load_model(trained_model)
    panel = read_panel(small_benchmark / "ref.vcf.gz")
    pc = panel.contigs["20"]
    rc = bundle.contigs["20"]
    assert np.array_equal(rc.sites.positions, pc.sites.positions)
    assert rc.sites.refs == pc.sites.refs and rc.sites.alts == pc.sites.alts and rc.sites.ids == pc.sites.ids
    assert np.array_equal(rc.haplotypes(0, len(pc.sites)), pc.haplotypes)
    # The haplotypes stay in the file and are read by row ranges and row indices.
    packed = np.packbits(pc.haplotypes, axis=1)
    assert np.array_equal(rc.haplotypes(7, 19), pc.haplotypes[7:19])
    rows = np.array([3, 4, 40, 41, 2])
    assert np.array_equal(rc.packed_haplotypes[rows], packed[rows])
    assert np.array_equal(np.asarray(rc.packed_haplotypes), packed)
    assert rc.inducing.shape[0] == len(rc.windows)
    assert bundle.metadata["format_version"] == FORMAT_VERSION
    assert bundle.metadata["reference_samples"] == panel.samples
    assert all(torch.isfinite(p).all() for p in network_from_weights(bundle.weights, bundle.config).parameters())


def test_truncated_file_is_rejected(trained_model, tmp_path):
    data = trained_model.read_bytes()
    bad = tmp_path / "truncated.spin"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated.spin"):
        load_model(bad)


def test_foreign_file_is_rejected(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ModelFileError, match="not a spinimpute model"):
        load_model(foreign)
    junk = tmp_path / "junk.spin"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelFileError):
        load_model(junk)


def _with_metadata(model, path, edit):
    """A copy of `model` at `path` with its JSON metadata changed by `edit`."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(model), framework="pt") as f:
        meta = json.loads(f.metadata()[METADATA_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    edit(meta)
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta)})
    return path


@pytest.mark.parametrize("version", [1, FORMAT_VERSION + 1])
def test_incompatible_version_is_rejected(trained_model, tmp_path, version):
    # Version 1 stored the haplotypes bit-packed; its files must be prepared again.
    other = _with_metadata(trained_model, tmp_path / "other.spin", lambda meta: meta.update(format_version=version))
    with pytest.raises(ModelFileError, match=f"format version {version} .*re-run 'spinimpute train'"):
        load_model(other)


@pytest.mark.parametrize("version", [1, WEIGHTS_VERSION + 1])
def test_network_weights_of_another_version_are_rejected(tmp_path, version):
    # Version 1's network read the copying model's probabilities without their evidence.
    other = _with_metadata(PRETRAINED_WEIGHTS, tmp_path / "old.safetensors",
                           lambda meta: meta.update(format_version=version))
    with pytest.raises(ModelFileError, match=f"spinimpute-network format version {version} is not supported"):
        load_weights(other)


@pytest.mark.parametrize("weight", [2.0, "1", None])
def test_refinement_weight_outside_zero_one_is_rejected(trained_model, tmp_path, weight):
    bad = _with_metadata(trained_model, tmp_path / "weight.spin",
                         lambda meta: meta["hyperparameters"].update(refinement_weight=weight))
    with pytest.raises(ModelFileError, match="refinement_weight"):
        load_model(bad)


def test_failed_write_is_an_output_error_and_leaves_nothing(trained_model, tmp_path, monkeypatch):
    # A full disk (or a folder gone) after part of the file is written.
    import errno

    from spinimpute.io import modelfile

    def failing_write(path, tensors, metadata):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    bundle = load_model(trained_model)
    monkeypatch.setattr(modelfile, "write_safetensors", failing_write)
    with pytest.raises(OutputFileError, match="could not write: No space left on device"):
        save_model(tmp_path / "m.spin", bundle)
    assert list(tmp_path.iterdir()) == []


def test_model_files_are_safetensors_that_the_library_reads_whole(trained_model):
    """Written by spinimpute's own writer: the safetensors library validates and reads every tensor of it."""
    from safetensors.numpy import load_file

    tensors = load_file(str(trained_model))
    bundle = load_model(trained_model)
    (contig,) = bundle.contigs.values()
    stored = contig.packed_haplotypes
    assert np.array_equal(tensors["contig0.hap_index"], np.asarray(stored.hap_index))
    assert np.array_equal(tensors["contig0.carriers"], np.asarray(stored.carriers))
    assert np.array_equal(tensors["contig0.positions"], contig.sites.positions)
    assert all(np.array_equal(tensors[f"network.{k}"], v) for k, v in bundle.weights.items())
