"""The Snakemake workflow on the example data, with the local and the cluster-generic executors."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cyvcf2
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _snakemake():
    exe = Path(sys.executable).parent / "snakemake"
    if exe.exists():
        return str(exe)
    found = shutil.which("snakemake")
    if found is None:
        pytest.skip("snakemake is not installed (pip install -e '.[workflow]')")
    return found


@pytest.mark.parametrize("executor", [[], ["--executor", "cluster-generic", "--cluster-generic-submit-cmd", "bash"]],
                         ids=["local", "cluster-generic"])
def test_workflow_runs_and_covers_every_panel_site(executor, tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    out = tmp_path / "wf"
    example = REPO / "data" / "example"
    # Run in tmp_path so that Snakemake's .snakemake/ state stays out of the source tree.
    cmd = [_snakemake(), "-s", str(REPO / "workflow" / "Snakefile"), "--configfile",
           str(REPO / "workflow" / "config.yaml"), "--directory", str(tmp_path), "--config",
           f"panel={example / 'ref.vcf.gz'}", f"target={example / 'target.vcf.gz'}", f"outdir={out}",
           "fine_tune=0", "chunk_size=250kb", "-j", "2", "-c", "2", "-q", *executor]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    chunks = [line for line in (out / "chunks" / "all.tsv").read_text().splitlines() if not line.startswith("#")]
    assert len(chunks) >= 3
    panel = [(r.POS, r.ALT[0]) for r in cyvcf2.VCF(str(REPO / "data" / "example" / "ref.vcf.gz"))]
    imputed = [(r.POS, r.ALT[0]) for r in cyvcf2.VCF(str(out / "imputed" / "20.vcf.gz"))]
    assert imputed == panel
    left = sorted(p.name for p in (out / "chunks" / "all").iterdir())
    assert left == sorted(f"{i}.summary.json" for i in range(len(chunks)))  # chunk VCFs are temporary


def _renamed(source: Path, contig: str, out: Path) -> Path:
    """The example VCF with its contig (20) renamed, as another chromosome's file."""
    import gzip

    import pysam

    with gzip.open(source, "rt") as handle:
        text = handle.read().replace("##contig=<ID=20", f"##contig=<ID={contig}").replace("\n20\t", f"\n{contig}\t")
    plain = out.with_suffix("")
    plain.write_text(text)
    pysam.tabix_compress(str(plain), str(out), force=True)
    pysam.tabix_index(str(out), preset="vcf", force=True)
    return out


def test_workflow_prepares_each_chromosome_in_its_own_job(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    example, out = REPO / "data" / "example", tmp_path / "wf"
    for contig in ("20", "21"):
        for name in ("ref", "target"):
            _renamed(example / f"{name}.vcf.gz", contig, tmp_path / f"{name}.chr{contig}.vcf.gz")
    config = tmp_path / "config.yaml"
    config.write_text(f"panel: {tmp_path}/ref.chr{{contig}}.vcf.gz\ntarget: {tmp_path}/target.chr{{contig}}.vcf.gz\n"
                      f"contigs: [20, 21]\nmap: ''\noutdir: {out}\nchunk_size: 400kb\nfine_tune: 0\nthreads: 1\n")
    cmd = [_snakemake(), "-s", str(REPO / "workflow" / "Snakefile"), "--configfile", str(config), "--directory",
           str(tmp_path), "-j", "2", "-c", "2", "-q"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in (out / "models").iterdir()) == ["20.spin", "21.spin"]
    panel = [(r.POS, r.ALT[0]) for r in cyvcf2.VCF(str(example / "ref.vcf.gz"))]
    for contig in ("20", "21"):
        imputed = list(cyvcf2.VCF(str(out / "imputed" / f"{contig}.vcf.gz")))
        assert {r.CHROM for r in imputed} == {contig} and [(r.POS, r.ALT[0]) for r in imputed] == panel
