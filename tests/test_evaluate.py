import pytest

from spinimpute.evaluate import evaluate


def test_truth_against_itself_is_perfect(small_benchmark, tmp_path):
    from spinimpute.vcf import read_dosages

    # The truth file has GT only; evaluate it as its own imputation by giving it DS.
    samples, dosages, _ = read_dosages(small_benchmark / "truth.vcf.gz", field="GT")
    lines = ["##fileformat=VCFv4.2", "##contig=<ID=20>",
             '##FORMAT=<ID=DS,Number=A,Type=Float,Description="dose">',
             '##INFO=<ID=IMP,Number=0,Type=Flag,Description="imputed">',
             "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples])]
    for (chrom, pos, ref, alt), ds in dosages.items():
        lines.append("\t".join([chrom, str(pos), ".", ref, alt, ".", ".", "IMP", "DS", *[f"{d:g}" for d in ds]]))
    path = tmp_path / "self.vcf"
    path.write_text("\n".join(lines) + "\n")
    result = evaluate(small_benchmark / "truth.vcf.gz", path, ref_path=small_benchmark / "ref.vcf.gz")
    assert result.overall["aggregate_r2"] == pytest.approx(1.0)
    assert result.overall["concordance"] == pytest.approx(1.0)
    assert result.n_sites_missing == 0
    with_target = evaluate(small_benchmark / "truth.vcf.gz", path, target_path=small_benchmark / "target.vcf.gz")
    assert with_target.n_typed_sites > 0
    assert with_target.n_untyped_sites < result.n_untyped_sites
