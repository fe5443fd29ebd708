"""Accuracy guard on the real 1000 Genomes benchmark in ../shared (skipped when absent).

The model is built with no training steps, so this checks the copying path, windowing,
stitching, VCF output and scoring end to end on real data in well under a minute.
"""

import pytest
from conftest import SHARED_BENCH

pytestmark = pytest.mark.skipif(not SHARED_BENCH.exists(), reason="real benchmark in ../shared is absent")


def test_real_benchmark_overall_r2(tmp_path):
    from spinimpute.jobs import impute_job, train_job
    from spinimpute.tools.evaluate import evaluate
    from spinimpute.training.trainer import TrainingOptions

    model = tmp_path / "real.spin"
    train_job(ref_path=SHARED_BENCH / "ref.vcf.gz", out_path=model, map_path=SHARED_BENCH / "map.txt",
              options=TrainingOptions(steps=0), device="cpu", threads=2, progress=False)
    out = tmp_path / "real.vcf.gz"
    impute_job(target_path=SHARED_BENCH / "target.vcf.gz", model_path=model, out_path=out,
               device="cpu", threads=2, progress=False)
    ev = evaluate(SHARED_BENCH / "truth.vcf.gz", out, ref_path=SHARED_BENCH / "ref.vcf.gz",
                  target_path=SHARED_BENCH / "target.vcf.gz")
    assert ev.n_sites_missing == 0
    assert ev.overall["aggregate_r2"] >= 0.95
    common = [b for b in ev.bins if b["bin"] in ("(5,20%]", "(20,50%]")]
    assert all(b["aggregate_r2"] >= 0.94 for b in common)


def test_swapped_alleles_give_the_same_dosages(tmp_path):
    """REF/ALT swapped at a third of the target's sites: same dosages at every panel site."""
    import cyvcf2
    import numpy as np

    from spinimpute.jobs import impute_job, train_job
    from spinimpute.training.trainer import TrainingOptions

    model = tmp_path / "real.spin"
    train_job(ref_path=SHARED_BENCH / "ref.vcf.gz", out_path=model, map_path=SHARED_BENCH / "map.txt",
              options=TrainingOptions(steps=0), device="cpu", threads=2, progress=False)
    src = cyvcf2.VCF(str(SHARED_BENCH / "target.vcf.gz"))
    lines = [src.raw_header.rstrip("\n")]
    for k, rec in enumerate(src):
        ref, alt, gts = rec.REF, rec.ALT[0], ["|".join(str(a) for a in g[:2]) for g in rec.genotypes]
        if k % 3 == 0:
            ref, alt = alt, ref
            gts = [g.replace("0", "x").replace("1", "0").replace("x", "1") for g in gts]
        lines.append("\t".join([rec.CHROM, str(rec.POS), ".", ref, alt, ".", ".", ".", "GT", *gts]))
    swapped = tmp_path / "swapped.vcf"
    swapped.write_text("\n".join(lines) + "\n")
    outputs = []
    for name, target in (("orig", SHARED_BENCH / "target.vcf.gz"), ("swapped", swapped)):
        out = tmp_path / f"{name}.vcf.gz"
        impute_job(target_path=target, model_path=model, out_path=out, device="cpu", threads=2,
                   progress=False)
        outputs.append(np.stack([r.format("DS")[:, 0] for r in cyvcf2.VCF(str(out))]))
    assert outputs[0].shape == outputs[1].shape
    assert np.abs(outputs[0] - outputs[1]).max() <= 0.01
