import numpy as np
import pytest

from spinimpute.tools.evaluate import evaluate, expected_calibration_error, scored_sites


def test_truth_against_itself_is_perfect(small_benchmark, tmp_path):
    from spinimpute.io.reading import read_dosages

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


def _write_vcf(path, *, info_header: list[str], format_fields: str, records: list[tuple]) -> None:
    """A plain-text VCF of samples s0..s3 on contig 20; records are (pos, info, [sample fields])."""
    lines = ["##fileformat=VCFv4.2", "##contig=<ID=20>", *info_header,
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts0\ts1\ts2\ts3"]
    for pos, info, fields in records:
        lines.append("\t".join(["20", str(pos), ".", "A", "G", ".", ".", info, format_fields, *fields]))
    path.write_text("\n".join(lines) + "\n")


TRUTH_GT = ["0|0", "0|1", "1|0", "1|1"]  # true ALT counts 0, 1, 1, 2 at every site
IMP = ['##INFO=<ID=IMP,Number=0,Type=Flag,Description="imputed">']
DS_GP = ['##FORMAT=<ID=DS,Number=A,Type=Float,Description="dose">',
         '##FORMAT=<ID=GP,Number=G,Type=Float,Description="genotype probabilities">']


def _truth(path, positions):
    _write_vcf(path, info_header=['##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">'],
               format_fields="GT", records=[(p, ".", TRUTH_GT) for p in positions])


def test_expected_calibration_error_by_hand(tmp_path):
    # Site 100: confidence 0.95 for all four calls, three correct (the last truth is 2).
    # Site 200: confidence 0.6, two correct. ECE = 4/8 |0.75 - 0.95| + 4/8 |0.5 - 0.6| = 0.15.
    _truth(tmp_path / "truth.vcf", [100, 200])
    site1 = ["0.05:0.95,0.05,0", "0.95:0.05,0.95,0", "0.95:0.05,0.95,0", "0.95:0.05,0.95,0"]
    site2 = ["0.4:0.6,0.4,0", "0.6:0.4,0.6,0", "0.4:0.6,0.4,0", "1.4:0,0.6,0.4"]
    _write_vcf(tmp_path / "imputed.vcf", info_header=IMP + DS_GP, format_fields="DS:GP",
               records=[(100, "IMP", site1), (200, "IMP", site2)])
    result = evaluate(tmp_path / "truth.vcf", tmp_path / "imputed.vcf")
    assert result.overall["ece"] == pytest.approx(0.15, abs=1e-6)
    assert result.bins[-1]["ece"] == pytest.approx(0.15, abs=1e-6)  # both sites have MAF 0.5
    assert np.isnan(result.ece_rare)  # no site of MAF <= 5 %
    assert result.dr2_correlation is None and result.dr2_field is None
    assert "gp_ece" in result.table() and result.as_dict()["overall"]["ece"] == result.overall["ece"]


def test_expected_calibration_error_function():
    truth = np.array([0, 1, 2, 1])
    perfect = np.eye(3)[truth]
    assert expected_calibration_error(perfect, truth) == 0.0
    assert expected_calibration_error(np.eye(3)[[1, 2, 0, 0]], truth) == 1.0  # sure and always wrong
    assert np.isnan(expected_calibration_error(np.full((4, 3), np.nan), truth))


@pytest.mark.parametrize("field", ["DR2", "R2"])
def test_dr2_correlation_with_true_r2(tmp_path, field):
    # True per-site r² of these dosages against (0, 1, 1, 2): DS (0, 1, 1, 2) gives 1,
    # (0, 1, 2, 1) gives r = 1/2, (0, 0, 0, 2) gives r = 2 / sqrt(6), so r² = 1, 1/4, 2/3.
    # An estimate that is a rising linear function of them correlates exactly 1, a falling one -1.
    _truth(tmp_path / "truth.vcf", [100, 200, 300, 400])
    doses = [["0", "1", "1", "2"], ["0", "1", "2", "1"], ["0", "0", "0", "2"], ["1", "1", "1", "1"]]
    true_r2 = [1.0, 0.25, 2 / 3]  # site 400 has constant DS: r² undefined, left out
    header = IMP + [f'##INFO=<ID={field},Number=1,Type=Float,Description="estimated r2">',
                    '##FORMAT=<ID=DS,Number=A,Type=Float,Description="dose">']
    for sign in (1, -1):
        estimates = [0.5 + sign * 0.4 * r for r in true_r2] + [0.9]
        _write_vcf(tmp_path / "imputed.vcf", info_header=header, format_fields="DS",
                   records=[(100 * (i + 1), f"IMP;{field}={e:.6f}", d) for i, (e, d) in enumerate(zip(estimates, doses))])
        result = evaluate(tmp_path / "truth.vcf", tmp_path / "imputed.vcf")
        assert result.dr2_field == field
        assert result.dr2_correlation == pytest.approx(sign, abs=1e-5)
        assert result.overall["ece"] is None and result.ece_rare is None  # no GP in this file
        # The arrays evaluate scores: every untyped site in the truth's order, with its estimate.
        sites = scored_sites(tmp_path / "truth.vcf", tmp_path / "imputed.vcf")
        assert sites.r2_field == field and sites.gp is None and sites.samples == ["s0", "s1", "s2", "s3"]
        np.testing.assert_allclose(sites.r2_estimate, estimates, atol=1e-5)
        np.testing.assert_array_equal(sites.ds, np.array(doses, dtype=float))
        np.testing.assert_array_equal(sites.truth, np.tile([0.0, 1.0, 1.0, 2.0], (4, 1)))
