"""Pretraining writes network weights that `train` starts from, and preparing a panel takes no gradient step."""

import numpy as np
import pytest
import torch

from spinimpute.io.modelfile import PRETRAINED_WEIGHTS, load_model, load_weights
from spinimpute.jobs import train_job
from spinimpute.training import pretrain
from spinimpute.training.trainer import TrainingOptions


def test_the_shipped_weights_load_without_running_code():
    shipped = load_weights()
    assert shipped.metadata["format"] == "spinimpute-network"
    assert shipped.metadata["pretraining"]["summary"]["kept"] == "trained"
    assert set(shipped.weights) >= {"log_ne", "head.weight", "predictor.ff.0.weight"}
    with open(PRETRAINED_WEIGHTS, "rb") as handle:
        assert b"pickle" not in handle.read(4096)  # safetensors: a JSON header and raw tensors


def test_the_shipped_weights_are_what_the_pretraining_commands_make():
    # Its panels and step counts as the script has them now, so that its two documented commands (a run
    # with the defaults, then `--init` from its weights with `--draws-seed 2`) reproduce them.
    info = load_weights().metadata["pretraining"]
    first = info["initialised_from"]["pretraining"]
    assert first.get("initialised_from") is None and info["summary"]["options"]["draws_seed"] == 2
    for run in (first, info):
        assert run["summary"]["options"]["steps"] == pretrain.STEPS
        assert run["summary"]["options"]["seed"] == 1
        assert run["panels"] == [{"seed": pretrain.FIRST_SEED + k, **p} for k, p in enumerate(pretrain.PANELS)]


def test_preparing_a_panel_takes_no_gradient_step(small_benchmark, tmp_path, monkeypatch):
    def no_step(*args, **kwargs):
        raise AssertionError("an optimiser step was taken")

    monkeypatch.setattr(torch.optim.AdamW, "step", no_step)
    out = tmp_path / "m.spin"
    train_job(ref_path=small_benchmark / "ref.vcf.gz", out_path=out, options=TrainingOptions(seed=3),
              window_sites=300, flank_sites=150, device="cpu", progress=False)
    shipped, model = load_weights(), load_model(out)
    assert model.metadata["training"]["weights"] == {"file": "pretrained", "sha256": shipped.sha256}
    for name, value in shipped.weights.items():
        np.testing.assert_array_equal(model.weights[name], value)  # the network as shipped
    assert model.config == shipped.config.replace(refinement_weight=model.config.refinement_weight)


def test_fine_tuning_and_other_weights(small_benchmark, trained_model, tmp_path):
    out = tmp_path / "m.spin"
    train_job(ref_path=small_benchmark / "ref.vcf.gz", out_path=out, options=TrainingOptions(steps=2, seed=3),
              weights_path=trained_model, window_sites=300, flank_sites=150, device="cpu", progress=False)
    model, start = load_model(out), load_weights(trained_model)
    assert model.metadata["training"]["weights"]["sha256"] == start.sha256
    assert model.metadata["training"]["kept"] in ("trained", "initial") and "validation_after" in model.metadata["training"]
    if model.metadata["training"]["kept"] == "trained":
        assert any(not np.array_equal(model.weights[k], start.weights[k]) for k in start.weights)


@pytest.mark.slow
def test_pretraining_writes_weights_train_can_start_from(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain, "PANELS", [{"demography": "ooa_ceu", "n_ref": 60, "length": 100_000},
                                             {"demography": "bottleneck", "n_ref": 80, "length": 100_000,
                                              "panel_error_rate": 0.001}])
    out = tmp_path / "w.safetensors"
    pretrain.main(["--steps", "3", "--out", str(out), "--work", str(tmp_path / "panels"), "--threads", "1"])
    weights = load_weights(out)
    info = weights.metadata["pretraining"]
    assert info["panels"][1]["seed"] == pretrain.FIRST_SEED + 1 and info["summary"]["panels"] == 2
    assert "validation_before" in info["summary"] and info["command"].endswith("--threads 1")
    assert info["initialised_from"] is None

    # Trained further from those weights, with new draws: the same individuals held out, measured
    # on the same windows, so the held-out loss goes on from where the first run left it.
    further = tmp_path / "w2.safetensors"
    pretrain.main(["--steps", "2", "--out", str(further), "--work", str(tmp_path / "panels"), "--threads", "1",
                   "--init", str(out), "--draws-seed", "2"])
    info2 = load_weights(further).metadata["pretraining"]
    assert info2["initialised_from"]["sha256"] == weights.sha256
    assert info2["initialised_from"]["pretraining"]["summary"]["options"]["steps"] == 3
    assert info2["summary"]["options"]["draws_seed"] == 2
    left = info["summary"]["validation_after" if info["summary"]["kept"] == "trained" else "validation_before"]
    assert info2["summary"]["validation_before"] == pytest.approx(left, rel=1e-6)
