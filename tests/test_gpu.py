"""The CUDA path: `--device cuda` imputes and prepares through the torch module on the GPU, and gives
the CPU's dosages (the torch copying model, candidate selection and predictor on the device)."""

import json

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _dosages(path) -> np.ndarray:
    import cyvcf2

    return np.stack([r.format("DS")[:, 0] for r in cyvcf2.VCF(str(path))])


def _impute(target, model, out, **kwargs) -> np.ndarray:
    from spinimpute.jobs import impute_job

    impute_job(target_path=target, model_path=model, out_path=out, progress=False, **kwargs)
    return _dosages(out)


@pytest.mark.parametrize("phased", [True, False])
@pytest.mark.parametrize("states", [None, 60])  # 60 of 300 panel haplotypes: candidate selection on the GPU
def test_cuda_imputation_matches_the_cpu(trained_model, small_benchmark, unphased_target, tmp_path, phased, states):
    target = small_benchmark / "target.vcf.gz" if phased else unphased_target
    cpu = _impute(target, trained_model, tmp_path / "cpu.vcf.gz", device="cpu", copying_states=states)
    summary = tmp_path / "cuda.json"
    cuda = _impute(target, trained_model, tmp_path / "cuda.vcf.gz", device="cuda", copying_states=states,
                   precision="float32", summary_path=summary)
    assert np.abs(cpu - cuda).max() <= 0.011  # DS has two decimals
    recorded = json.loads(summary.read_text())
    assert recorded["device"] == "cuda" and recorded["precision"] == "float32"
    assert recorded["gpu_peak_memory_mb"] > 0


def test_cuda_mixed_precision_is_the_default_and_close_to_float32(trained_model, small_benchmark, tmp_path):
    target = small_benchmark / "target.vcf.gz"
    summary = tmp_path / "mixed.json"
    mixed = _impute(target, trained_model, tmp_path / "mixed.vcf.gz", device="cuda", summary_path=summary)
    assert json.loads(summary.read_text())["precision"] == "mixed"
    exact = _impute(target, trained_model, tmp_path / "f32.vcf.gz", device="cuda", precision="float32")
    difference = np.abs(mixed - exact)
    assert difference.max() <= 0.05 and difference.mean() <= 1e-3


def test_cuda_preparation_encodes_the_panel_as_the_cpu_does(small_benchmark, tmp_path):
    from spinimpute.io.modelfile import load_model
    from spinimpute.jobs import train_job
    from spinimpute.training.trainer import TrainingOptions

    for device in ("cpu", "cuda"):  # no gradient step: the network moves to the GPU to encode the panel
        train_job(ref_path=small_benchmark / "ref.vcf.gz", out_path=tmp_path / f"{device}.spin",
                  options=TrainingOptions(seed=3), window_sites=300, flank_sites=150, device=device, progress=False)
    cpu, cuda = (load_model(tmp_path / f"{device}.spin") for device in ("cpu", "cuda"))
    for name, contig in cpu.contigs.items():
        np.testing.assert_allclose(cuda.contigs[name].inducing, contig.inducing, atol=1e-3)


def test_cuda_preparation_with_fine_tuning_imputes_like_the_cpu(small_benchmark, tmp_path):
    from spinimpute.jobs import train_job
    from spinimpute.training.trainer import TrainingOptions

    models, training = {}, {}
    for device in ("cpu", "cuda"):
        models[device] = tmp_path / f"{device}.spin"
        training[device] = train_job(ref_path=small_benchmark / "ref.vcf.gz", out_path=models[device],
                                     options=TrainingOptions(seed=3, steps=3), window_sites=300, flank_sites=150,
                                     device=device, progress=False).training
    # The same held-out windows give the same loss through the torch model on either device,
    # and three gradient steps (no dropout, the same batches) move it alike.
    before = [training[d]["validation_before"]["loss"] for d in ("cpu", "cuda")]
    assert before[1] == pytest.approx(before[0], rel=1e-4)
    after = [training[d]["final_training_loss"] for d in ("cpu", "cuda")]
    assert after[1] == pytest.approx(after[0], rel=0.05)
    from spinimpute.tools.evaluate import evaluate

    target = small_benchmark / "target.vcf.gz"
    r2 = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.vcf.gz"
        _impute(target, models[device], out, device="cpu")
        r2[device] = evaluate(small_benchmark / "truth.vcf.gz", out, target_path=target).overall["aggregate_r2"]
    assert r2["cpu"] > 0.8 and r2["cuda"] == pytest.approx(r2["cpu"], abs=0.01)
