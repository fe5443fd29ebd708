"""CUDA path: the same model gives the same dosages on the GPU as on the CPU."""

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def test_cuda_matches_cpu(trained_model, small_benchmark, tmp_path):
    import cyvcf2

    from spinimpute.jobs import impute_job

    outputs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.vcf.gz"
        impute_job(target_path=small_benchmark / "target.vcf.gz", model_path=trained_model, out_path=out,
                   device=device, progress=False)
        outputs[device] = np.stack([r.format("DS")[:, 0] for r in cyvcf2.VCF(str(out))])
    assert np.abs(outputs["cpu"] - outputs["cuda"]).max() <= 0.011
