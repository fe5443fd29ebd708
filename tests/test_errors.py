"""Bad input: one line naming the file and the problem, exit status 1, no traceback, no output."""

import gzip

import pytest
from click.testing import CliRunner

from spinimpute.cli import main

HEADER = ("##fileformat=VCFv4.2\n##contig=<ID=20>\n"
          '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
          '##FORMAT=<ID=DS,Number=1,Type=Float,Description="Dosage">\n')
COLUMNS = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT"


def _vcf(path, samples, rows):
    path.write_text(HEADER + "\t".join([COLUMNS, *samples]) + "\n" + "".join(r + "\n" for r in rows))
    return path


def _bad_targets(tmp_path, small_benchmark, trained_model):
    import cyvcf2

    rec = next(iter(cyvcf2.VCF(str(small_benchmark / "target.vcf.gz"))))
    pos, ref, alt = rec.POS, rec.REF, rec.ALT[0]
    data = (small_benchmark / "target.vcf.gz").read_bytes()
    truncated = tmp_path / "truncated.vcf.gz"
    truncated.write_bytes(data[: len(data) - 100])
    plain = tmp_path / "notvcf.vcf.gz"
    with gzip.open(plain, "wt") as f:
        f.write("this is not a VCF\n")
    return {
        "truncated BGZF": (truncated, "truncated"),
        "not a VCF": (plain, "VCF"),
        "unsorted": (_vcf(tmp_path / "unsorted.vcf", ["S"], [f"20\t{pos + 10}\t.\t{ref}\t{alt}\t.\t.\t.\tGT\t0|1",
                                                             f"20\t{pos}\t.\t{ref}\t{alt}\t.\t.\t.\tGT\t0|1"]),
                     "not sorted"),
        "duplicate samples": (_vcf(tmp_path / "dup.vcf", ["S", "S"], [f"20\t{pos}\t.\t{ref}\t{alt}\t.\t.\t.\tGT\t0|1\t0|0"]),
                              "duplicate sample"),
        "no samples": (tmp_path / "nosamples.vcf", "no samples"),
        "ploidy": (_vcf(tmp_path / "triploid.vcf", ["S"], [f"20\t{pos}\t.\t{ref}\t{alt}\t.\t.\t.\tGT\t0|1|1"]), "ploidy"),
        "no overlap": (_vcf(tmp_path / "nooverlap.vcf", ["S"], ["20\t1\t.\tA\tC\t.\t.\t.\tGT\t0|1"]), "no target site"),
        "dosages only": (_vcf(tmp_path / "dosages.vcf", ["S"], [f"20\t{pos}\t.\t{ref}\t{alt}\t.\t.\t.\tDS\t1"]),
                         "no genotypes (FORMAT/GT)"),
        "missing": (tmp_path / "absent.vcf.gz", "file not found"),
    }


CASES = ["truncated BGZF", "not a VCF", "unsorted", "duplicate samples", "no samples", "ploidy", "no overlap",
         "dosages only", "missing"]


@pytest.mark.parametrize("case", CASES)
def test_bad_target(case, tmp_path, small_benchmark, trained_model):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "nosamples.vcf").write_text(HEADER + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n20\t5\t.\tA\tC\t.\t.\t.\n")
    path, problem = _bad_targets(inputs, small_benchmark, trained_model)[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = CliRunner().invoke(main, ["-q", "impute", "--target", str(path), "--model", str(trained_model),
                                       "--out", str(out_dir / "o.vcf.gz")])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("spinimpute: error: ") and str(path) in lines[0] and problem in lines[0]
    assert list(out_dir.iterdir()) == []


def test_corrupt_model(tmp_path, small_benchmark):
    model = tmp_path / "bad.spin"
    model.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    result = CliRunner().invoke(main, ["-q", "impute", "--target", str(small_benchmark / "target.vcf.gz"),
                                       "--model", str(model), "--out", str(tmp_path / "o.vcf.gz")])
    assert result.exit_code == 1 and "bad.spin" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.vcf.gz").exists()


def test_debug_shows_traceback(tmp_path):
    result = CliRunner().invoke(main, ["--debug", "train", "--ref", str(tmp_path / "absent.vcf.gz"),
                                       "--out", str(tmp_path / "m.spin")])
    assert result.exit_code != 0 and result.exception is not None


@pytest.mark.parametrize(("call", "error", "message"), [
    ("pwrite", "ENOSPC", "cannot write a large cohort's results to a temporary file: No space left on device"),
    ("preadv", "EIO", "cannot read a large cohort's results back from a temporary file: Input/output error"),
])
def test_a_failing_temporary_file_is_one_line_and_leaves_no_output(tmp_path, small_benchmark, trained_model,
                                                                    monkeypatch, call, error, message):
    """A cohort whose results go to a temporary file, on a disk that fills up or fails to read back."""
    import errno
    import os

    from spinimpute.engine import impute

    def failing(*args):
        code = getattr(errno, error)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(impute, "GROUP_RESULT_BYTES", 1024)
    monkeypatch.setattr(impute.os, call, failing)
    out = tmp_path / "out.vcf.gz"
    result = CliRunner().invoke(main, ["-q", "impute", "--target", str(small_benchmark / "target.vcf.gz"),
                                       "--model", str(trained_model), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert message in result.output
    assert not out.exists() and not list(tmp_path.iterdir())
