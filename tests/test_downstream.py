"""The output is read by the tools downstream of imputation (skipped where they are not installed)."""

import shutil
import subprocess

import cyvcf2
import numpy as np
import pytest

from spinimpute.cli import main


@pytest.fixture(scope="module")
def output(trained_model, small_benchmark, tmp_path_factory):
    from click.testing import CliRunner

    out = tmp_path_factory.mktemp("downstream") / "out.vcf.gz"
    result = CliRunner().invoke(main, ["-q", "impute", "--target", str(small_benchmark / "target.vcf.gz"),
                                       "--model", str(trained_model), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.skipif(shutil.which("bcftools") is None, reason="bcftools not installed")
def test_bcftools_reads_dr2_and_regions(output):
    dr2 = subprocess.run(["bcftools", "query", "-f", "%INFO/DR2\n", str(output)], capture_output=True, text=True,
                         check=True).stdout.split()
    expected = [r.INFO["DR2"] for r in cyvcf2.VCF(str(output))]
    assert np.allclose([float(x) for x in dr2], expected, atol=0.005)
    first = next(iter(cyvcf2.VCF(str(output))))
    hits = subprocess.run(["bcftools", "view", "-H", "-r", f"20:{first.POS}-{first.POS}", str(output)],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(hits) >= 1


@pytest.mark.skipif(shutil.which("plink2") is None, reason="plink2 not installed")
def test_plink2_imports_dosages(output, tmp_path):
    prefix = tmp_path / "pl"
    subprocess.run(["plink2", "--vcf", str(output), "dosage=DS", "--make-pgen", "--out", str(prefix),
                    "--threads", "1"], capture_output=True, text=True, check=True)
    subprocess.run(["plink2", "--pfile", str(prefix), "--export", "A", "--out", str(prefix), "--threads", "1"],
                   capture_output=True, text=True, check=True)
    lines = (tmp_path / "pl.raw").read_text().splitlines()
    header, rows = lines[0].split(), [line.split() for line in lines[1:]]
    n_sites = sum(1 for _ in cyvcf2.VCF(str(output)))
    assert len(rows) == len(cyvcf2.VCF(str(output)).samples)
    assert len(header) - 6 == n_sites
    # plink counts the ALT allele here (A1 = ALT); its dosages match DS to 2 decimals.
    ds = np.stack([r.format("DS")[:, 0] for r in cyvcf2.VCF(str(output))]).T
    plink = np.array([[float(x) for x in row[6:]] for row in rows])
    assert np.abs(plink - ds).max() <= 0.01 or np.abs((2 - plink) - ds).max() <= 0.01
