"""Shared fixtures.

Test data are seeded msprime simulations made once per session in a temporary folder:
`small_benchmark` is a 300 kb panel of 150 reference and 20 target samples, typed at
5 % of sites, in the layout of the real benchmark (ref, target, truth VCFs).
`trained_model` is that panel prepared as `spinimpute train` prepares it (the pretrained network); `unphased_target` is its target
with every genotype written unphased ('/', the ALT allele second).
"""

from pathlib import Path

import pytest
import torch

SHARED_BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "1kgp3-eur-chr20" / "bench-omniexpress"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the marker, not any test id that says "gpu"
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def small_benchmark(tmp_path_factory) -> Path:
    from spinimpute.tools.simulate import make_benchmark

    out = tmp_path_factory.mktemp("sim")
    make_benchmark(out, n_ref=150, n_target=20, length=300_000, typed_fraction=0.05, seed=7)
    return out


@pytest.fixture(scope="session")
def trained_model(small_benchmark, tmp_path_factory) -> Path:
    from spinimpute.jobs import train_job
    from spinimpute.training.trainer import TrainingOptions

    out = tmp_path_factory.mktemp("model") / "model.spin"
    train_job(
        ref_path=small_benchmark / "ref.vcf.gz",
        out_path=out,
        options=TrainingOptions(seed=3),  # the pretrained network, as `spinimpute train` prepares a panel
        window_sites=300,
        flank_sites=150,
        device="cpu",
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def unphased_target(small_benchmark, tmp_path_factory) -> Path:
    import cyvcf2

    src = cyvcf2.VCF(str(small_benchmark / "target.vcf.gz"))
    lines = [src.raw_header.rstrip("\n")]
    for rec in src:
        gts = ["/".join(map(str, sorted(g[:2]))) for g in rec.genotypes]
        lines.append("\t".join([rec.CHROM, str(rec.POS), ".", rec.REF, rec.ALT[0], ".", ".", ".", "GT", *gts]))
    path = tmp_path_factory.mktemp("unphased") / "target.vcf"
    path.write_text("\n".join(lines) + "\n")
    return path
