"""Accuracy guard on the real 1000 Genomes benchmark in ../shared (skipped when absent).

The model is built with no training steps, so this checks the copying path, windowing,
stitching, VCF output and scoring end to end on real data in well under a minute.
"""

import pytest
import torch

from conftest import SHARED_BENCH

pytestmark = pytest.mark.skipif(not SHARED_BENCH.exists(), reason="real benchmark in ../shared is absent")


def test_real_benchmark_overall_r2(tmp_path):
    from spinimpute.evaluate import evaluate
    from spinimpute.training import TrainingOptions
    from spinimpute.workflows import impute_job, train_job

    model = tmp_path / "real.spin"
    train_job(ref_path=SHARED_BENCH / "ref.vcf.gz", out_path=model, map_path=SHARED_BENCH / "map.txt",
              options=TrainingOptions(steps=0), device=torch.device("cpu"), threads=2, progress=False)
    out = tmp_path / "real.vcf.gz"
    impute_job(target_path=SHARED_BENCH / "target.vcf.gz", model_path=model, out_path=out,
               device=torch.device("cpu"), threads=2, progress=False)
    ev = evaluate(SHARED_BENCH / "truth.vcf.gz", out, ref_path=SHARED_BENCH / "ref.vcf.gz",
                  target_path=SHARED_BENCH / "target.vcf.gz")
    assert ev.n_sites_missing == 0
    assert ev.overall["aggregate_r2"] >= 0.95
    common = [b for b in ev.bins if b["bin"] in ("(5,20%]", "(20,50%]")]
    assert all(b["aggregate_r2"] >= 0.94 for b in common)
