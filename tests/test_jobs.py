"""The jobs run the code path a user's command runs: one checked device type, the CPU backend on the CPU."""

import gzip

import pytest
import torch
from click.testing import CliRunner

from spinimpute.cli import main
from spinimpute.engine import cpu
from spinimpute.engine.device import select_device
from spinimpute.io.modelfile import load_model
from spinimpute.jobs import impute_job, make_backend


@pytest.mark.parametrize("device", [torch.device("cpu"), "gpu", "CPU", None])
def test_a_device_is_auto_cpu_or_cuda(device, trained_model, small_benchmark, tmp_path):
    # torch.device("cpu") != "cpu": accepting it once sent these tests down the torch path in bfloat16.
    with pytest.raises(TypeError, match="device must be one of 'auto', 'cpu', 'cuda'"):
        select_device(device)
    with pytest.raises(TypeError):
        impute_job(target_path=small_benchmark / "target.vcf.gz", model_path=trained_model,
                   out_path=tmp_path / "o.vcf.gz", device=device, progress=False)
    assert not (tmp_path / "o.vcf.gz").exists()


def test_cpu_backend_unless_torch_is_asked_for(trained_model):
    bundle = load_model(trained_model)
    cpu_model = cpu.CpuImputer(bundle.weights, bundle.config)
    assert make_backend(cpu_model, bundle, bundle.config, "cpu", "auto", 1) is cpu_model
    assert make_backend(cpu_model, bundle, bundle.config, "cpu", "float32", 1) is cpu_model
    from spinimpute.engine.torch_backend import TorchImputer

    assert isinstance(make_backend(cpu_model, bundle, bundle.config, "cpu", "mixed", 1), TorchImputer)


def _records(path):
    with gzip.open(path, "rt") as handle:
        return [line for line in handle if not line.startswith("#")]


def test_impute_job_and_the_cli_run_the_same_cpu_predictor(trained_model, small_benchmark, tmp_path, monkeypatch):
    calls = []
    predict = cpu.CpuImputer.predict

    def counted(self, **arrays):
        calls.append(arrays["hmm_prob"].shape)
        return predict(self, **arrays)

    monkeypatch.setattr(cpu.CpuImputer, "predict", counted)
    target = small_benchmark / "target.vcf.gz"
    impute_job(target_path=target, model_path=trained_model, out_path=tmp_path / "job.vcf.gz", device="cpu",
               progress=False)
    assert calls, "impute_job on the CPU did not run the CPU backend's predictor"
    n_job = len(calls)
    result = CliRunner().invoke(main, ["-q", "impute", "--target", str(target), "--model", str(trained_model),
                                       "--out", str(tmp_path / "cli.vcf.gz"), "--threads", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 2 * n_job  # the CLI took the same path
    assert _records(tmp_path / "job.vcf.gz") == _records(tmp_path / "cli.vcf.gz")
