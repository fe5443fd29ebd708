"""End-to-end tests of the command line on a seeded simulation."""

import json
import stat

import cyvcf2
import numpy as np
import pytest
from click.testing import CliRunner

from spinimpute import __version__
from spinimpute.cli import main


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_impute_help_states_the_phase_draws_default():
    from spinimpute.engine.phasing import PHASE_DRAWS

    result = CliRunner().invoke(main, ["impute", "--help"], terminal_width=200)
    assert result.exit_code == 0 and f"[default: {PHASE_DRAWS}]" in " ".join(result.output.split())


@pytest.fixture(scope="module")
def imputed(trained_model, small_benchmark, tmp_path_factory):
    out = tmp_path_factory.mktemp("imputed") / "out.vcf.gz"
    result = CliRunner().invoke(
        main, ["-q", "impute", "--target", str(small_benchmark / "target.vcf.gz"), "--model", str(trained_model),
               "--out", str(out), "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    return out


def test_impute_writes_every_panel_site_with_beagle_fields(imputed, small_benchmark):
    assert imputed.with_name(imputed.name + ".tbi").exists()
    ref = cyvcf2.VCF(str(small_benchmark / "ref.vcf.gz"))
    ref_keys = [(r.CHROM, r.POS, r.REF, r.ALT[0]) for r in ref]
    target = cyvcf2.VCF(str(small_benchmark / "target.vcf.gz"))
    typed = {(r.CHROM, r.POS): r.genotype.array()[:, :2].sum(axis=1) for r in target}
    vcf = cyvcf2.VCF(str(imputed))
    header = vcf.raw_header
    for field in ("##INFO=<ID=AF", "##INFO=<ID=DR2", "##INFO=<ID=IMP", "##FORMAT=<ID=GT", "##FORMAT=<ID=DS",
                  "##FORMAT=<ID=GP", "##spinimpute_version=", "##spinimpute_command=", "##contig=<ID=20"):
        assert field in header
    keys = []
    for rec in vcf:
        keys.append((rec.CHROM, rec.POS, rec.REF, rec.ALT[0]))
        ds = rec.format("DS")[:, 0]
        gp = rec.format("GP")
        assert np.all((ds >= 0) & (ds <= 2))
        assert np.allclose(gp.sum(axis=1), 1.0, atol=0.02)
        assert 0 <= rec.INFO["DR2"] <= 1
        gt = rec.genotype.array()
        assert gt[:, 2].all()  # phased
        palindromic = {rec.REF, rec.ALT[0]} in ({"A", "T"}, {"C", "G"})
        if (rec.CHROM, rec.POS) in typed and not (palindromic and rec.INFO.get("IMP")):
            assert rec.INFO.get("IMP") is None
            assert np.array_equal(ds, typed[(rec.CHROM, rec.POS)])
        else:
            assert rec.INFO.get("IMP") is True
    assert keys == ref_keys
    summary = json.loads(imputed.with_name("out.summary.json").read_text())
    counts = summary["target_sites"]
    assert counts["matched"] + counts["ambiguous_dropped"] == counts["records"] == len(typed)
    assert len(counts["ambiguous_sites"]) == (counts["ambiguous_dropped"] + counts["ambiguous_resolved"]
                                              + counts["ambiguous_linkage"])
    assert sum(s.endswith(" by linkage") for s in counts["ambiguous_sites"]) == counts["ambiguous_linkage"]
    assert sum(s.endswith(" dropped") for s in counts["ambiguous_sites"]) == counts["ambiguous_dropped"]
    assert summary["sites_written"] == len(ref_keys)


def test_evaluate_reports_accuracy(imputed, small_benchmark, tmp_path):
    out_json = tmp_path / "eval.json"
    result = CliRunner().invoke(
        main, ["evaluate", "--truth", str(small_benchmark / "truth.vcf.gz"), "--imputed", str(imputed),
               "--ref", str(small_benchmark / "ref.vcf.gz"), "--target", str(small_benchmark / "target.vcf.gz"),
               "--json", str(out_json)]
    )
    assert result.exit_code == 0, result.output
    assert "overall" in result.output
    data = json.loads(out_json.read_text())
    # A broken model or HMM lands far below this; a working one is near 0.9 on this tiny panel.
    assert data["overall"]["aggregate_r2"] > 0.8
    assert data["n_sites_missing"] == 0
    assert data["switch_error_rate"] == 0.0  # phased input keeps its phase at typed sites


def test_same_inputs_give_identical_output(imputed, trained_model, small_benchmark, tmp_path):
    again = tmp_path / "again.vcf.gz"
    result = CliRunner().invoke(
        main, ["-q", "impute", "--target", str(small_benchmark / "target.vcf.gz"), "--model", str(trained_model),
               "--out", str(again), "--threads", "1"]
    )
    assert result.exit_code == 0
    a = [r.format("DS").tobytes() for r in cyvcf2.VCF(str(imputed))]
    b = [r.format("DS").tobytes() for r in cyvcf2.VCF(str(again))]
    assert a == b


@pytest.mark.parametrize(
    "args,problem",
    [
        (["impute", "--target", "MISSING.vcf.gz", "--model", "MODEL", "--out", "OUT"], "file not found"),
        (["impute", "--target", "TARGET", "--model", "MISSING.spin", "--out", "OUT"], "file not found"),
        (["impute", "--target", "TARGET", "--model", "MODEL", "--out", "/nonexistent/dir/o.vcf.gz"], "does not exist"),
        (["train", "--ref", "MISSING.vcf.gz", "--out", "OUT"], "file not found"),
        # Every output is checked before the work starts, not after training or imputing.
        (["train", "--ref", "TARGET", "--out", "/nonexistent/dir/m.spin"], "does not exist"),
        (["impute", "--target", "TARGET", "--model", "MODEL", "--out", "OUT", "--summary", "/nonexistent/dir/s.json"],
         "does not exist"),
        (["evaluate", "--truth", "TARGET", "--imputed", "TARGET", "--json", "/nonexistent/dir/e.json"],
         "does not exist"),
        (["chunk", "--model", "MODEL", "--out", "/nonexistent/dir/c.tsv"], "does not exist"),
        (["beagle", "gt=t.vcf.gz", "ref=m.spin", "out=/nonexistent/dir/p"], "does not exist"),
        (["evaluate", "--truth", "TARGET", "--imputed", "TARGET"], "no FORMAT/DS in the header"),
        (["evaluate", "--truth", "TARGET", "--imputed", "IMPUTED_ELSEWHERE"], "no untyped polymorphic site in common"),
    ],
)
def test_bad_input_gives_one_line_error_and_no_output(args, problem, trained_model, small_benchmark, imputed,
                                                      tmp_path):
    subst = {"TARGET": str(small_benchmark / "target.vcf.gz"), "MODEL": str(trained_model),
             "OUT": str(tmp_path / "o.vcf.gz"), "MISSING.vcf.gz": str(tmp_path / "missing.vcf.gz"),
             "MISSING.spin": str(tmp_path / "missing.spin")}
    if "IMPUTED_ELSEWHERE" in args:  # written beside tmp_path, which must stay empty
        subst["IMPUTED_ELSEWHERE"] = str(_moved_copy(imputed, tmp_path.parent / f"{tmp_path.name}-moved"))
    result = CliRunner().invoke(main, ["-q", *[subst.get(a, a) for a in args]])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and problem in lines[0] and lines[0].startswith("spinimpute: error:")
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def _moved_copy(imputed, folder):
    """The imputed file with every position moved 10 Mb on: no site in common with the truth."""
    import gzip

    folder.mkdir(exist_ok=True)
    path = folder / "moved.vcf"
    with gzip.open(imputed, "rt") as src, open(path, "w") as out:
        for line in src:
            if not line.startswith("#"):
                fields = line.split("\t")
                fields[1] = str(int(fields[1]) + 10_000_000)
                line = "\t".join(fields)
            out.write(line)
    return path


def test_genetic_map_without_the_panels_contig_is_an_error(small_benchmark, tmp_path):
    genetic_map = tmp_path / "map.txt"
    genetic_map.write_text("7\t.\t0.0\t1\n7\t.\t1.0\t1000000\n")
    out = tmp_path / "m.spin"
    result = CliRunner().invoke(main, ["-q", "train", "--ref", str(small_benchmark / "ref.vcf.gz"), "--map",
                                       str(genetic_map), "--out", str(out), "--steps", "1"])
    assert result.exit_code == 1
    expected = f"spinimpute: error: {genetic_map}: no rows for the panel's contig(s) 20 (the map has 7)"
    assert result.output.strip() == expected
    assert not out.exists()


def test_outputs_get_the_usual_permissions(trained_model, small_benchmark, tmp_path):
    # Outputs are written under temporary names (0600 from mkstemp and safetensors) and then
    # renamed: they must end up as open() makes a file (0644 under umask 022), so that
    # pipelines sharing result folders can read them.
    from spinimpute.io.modelfile import load_model, save_model

    plain = tmp_path / "plain.txt"
    plain.write_text("")
    usual = stat.S_IMODE(plain.stat().st_mode)
    out = tmp_path / "o.vcf.gz"
    result = CliRunner().invoke(main, ["-q", "impute", "--target", str(small_benchmark / "target.vcf.gz"),
                                       "--model", str(trained_model), "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["-q", "chunk", "--model", str(trained_model), "--out", str(tmp_path / "c.tsv")])
    assert result.exit_code == 0, result.output
    save_model(tmp_path / "m.spin", load_model(trained_model))
    for name in ("o.vcf.gz", "o.vcf.gz.tbi", "o.summary.json", "c.tsv", "m.spin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == usual, name


def test_target_samples_in_the_panel_are_flagged(trained_model, small_benchmark, tmp_path, caplog):
    from spinimpute.jobs import impute_job

    out = tmp_path / "self.vcf.gz"
    with caplog.at_level("WARNING", logger="spinimpute"):
        summary = impute_job(target_path=small_benchmark / "ref.vcf.gz", model_path=trained_model, out_path=out,
                             summary_path=tmp_path / "s.json", progress=False)
    assert summary.samples_in_reference_panel == summary.samples == 150
    assert any("150 of 150 target samples are also in the model's reference panel" in r.getMessage()
               for r in caplog.records)
    assert json.loads((tmp_path / "s.json").read_text())["samples_in_reference_panel"] == 150


def test_target_on_other_contig_is_an_error(trained_model, tmp_path):
    target = tmp_path / "t.vcf"
    target.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=7>\n##FORMAT=<ID=GT,Number=1,Type=String,Description=\"GT\">\n"
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS\n7\t5\t.\tA\tC\t.\t.\t.\tGT\t0|1\n"
    )
    out = tmp_path / "o.vcf.gz"
    result = CliRunner().invoke(main, ["-q", "impute", "--target", str(target), "--model", str(trained_model),
                                       "--out", str(out)])
    assert result.exit_code == 1 and "no target site overlaps" in result.output
    assert not out.exists()


def test_region_halves_equal_the_whole_run(imputed, trained_model, small_benchmark, tmp_path):
    whole = {(r.POS, r.REF, r.ALT[0]): r.format("DS")[:, 0] for r in cyvcf2.VCF(str(imputed))}
    positions = sorted(p for p, _, _ in whole)
    middle = positions[len(positions) // 2]
    halves = {}
    for name, region in (("a", f"20:1-{middle}"), ("b", f"chr20:{middle + 1}-")):
        out = tmp_path / f"{name}.vcf.gz"
        result = CliRunner().invoke(main, ["-q", "impute", "--target", str(small_benchmark / "target.vcf.gz"),
                                           "--model", str(trained_model), "--out", str(out), "--region", region])
        assert result.exit_code == 0, result.output
        halves[name] = {(r.POS, r.REF, r.ALT[0]): r.format("DS")[:, 0] for r in cyvcf2.VCF(str(out))}
    assert max(p for p, _, _ in halves["a"]) <= middle < min(p for p, _, _ in halves["b"])
    joined = {**halves["a"], **halves["b"]}
    assert joined.keys() == whole.keys()
    assert max(np.abs(joined[k] - whole[k]).max() for k in whole) <= 1e-6


def test_bad_region_is_a_usage_error(trained_model, small_benchmark, tmp_path):
    result = CliRunner().invoke(main, ["impute", "--target", str(small_benchmark / "target.vcf.gz"), "--model",
                                       str(trained_model), "--out", str(tmp_path / "o.vcf.gz"), "--region", "20:9-1"])
    assert result.exit_code == 2 and "region" in result.output


def test_chunk_impute_ligate_equals_whole_run(imputed, trained_model, small_benchmark, tmp_path):
    runner = CliRunner()
    table = tmp_path / "chunks.tsv"
    result = runner.invoke(main, ["chunk", "--model", str(trained_model), "--size", "100kb", "--out", str(table)])
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in table.read_text().splitlines()[1:]]
    assert len(rows) >= 3
    outputs = []
    for k, row in enumerate(reversed(rows)):  # any order: ligate sorts
        out = tmp_path / f"chunk{k}.vcf.gz"
        result = runner.invoke(main, ["-q", "impute", "--target", str(small_benchmark / "target.vcf.gz"), "--model",
                                      str(trained_model), "--out", str(out), "--region", row[3]])
        assert result.exit_code == 0, result.output
        outputs.append(str(out))
    joined = tmp_path / "joined.vcf.gz"
    result = runner.invoke(main, ["-q", "ligate", "--out", str(joined), *outputs])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "joined.vcf.gz.tbi").exists()
    whole = [(r.POS, r.ALT[0], r.format("DS").tobytes()) for r in cyvcf2.VCF(str(imputed))]
    parts = [(r.POS, r.ALT[0], r.format("DS").tobytes()) for r in cyvcf2.VCF(str(joined))]
    assert parts == whole
    # Overlapping chunks are refused.
    result = runner.invoke(main, ["-q", "ligate", "--out", str(tmp_path / "bad.vcf.gz"), outputs[0], outputs[0]])
    assert result.exit_code == 1 and "overlaps" in result.output
    assert not (tmp_path / "bad.vcf.gz").exists()


def test_beagle_command_line(trained_model, small_benchmark, tmp_path):
    prefix = tmp_path / "bgl"
    result = CliRunner().invoke(main, ["-q", "beagle", f"gt={small_benchmark / 'target.vcf.gz'}",
                                       f"ref={trained_model}", f"out={prefix}", "nthreads=1", "ne=20000",
                                       "map=plink.map", "chrom=20"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bgl.vcf.gz").exists() and (tmp_path / "bgl.vcf.gz.tbi").exists()
    log_text = (tmp_path / "bgl.log").read_text()
    assert "ignored Beagle tuning argument(s): ne=" in log_text and "map=plink.map ignored" in log_text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bgl.log", "bgl.vcf.gz", "bgl.vcf.gz.tbi"]
    # As Beagle: GT:DS unless gp=true.
    vcf = cyvcf2.VCF(str(tmp_path / "bgl.vcf.gz"))
    assert "##FORMAT=<ID=GP" not in vcf.raw_header
    assert next(iter(vcf)).FORMAT == ["GT", "DS"]


def test_format_gt_ds_writes_the_same_calls_without_gp(imputed, trained_model, small_benchmark, tmp_path):
    out = tmp_path / "ds.vcf.gz"
    result = CliRunner().invoke(main, ["-q", "impute", "--target", str(small_benchmark / "target.vcf.gz"),
                                       "--model", str(trained_model), "--out", str(out), "--format", "GT,DS",
                                       "--threads", "1"])
    assert result.exit_code == 0, result.output
    with_gp, without = cyvcf2.VCF(str(imputed)), cyvcf2.VCF(str(out))
    assert "##FORMAT=<ID=GP" in with_gp.raw_header and "##FORMAT=<ID=GP" not in without.raw_header
    n = 0
    for a, b in zip(with_gp, without):
        assert b.FORMAT == ["GT", "DS"] and (a.POS, a.INFO.get("DR2")) == (b.POS, b.INFO.get("DR2"))
        assert np.array_equal(a.format("DS"), b.format("DS")) and np.array_equal(a.genotype.array(), b.genotype.array())
        n += 1
    assert n == len(list(cyvcf2.VCF(str(imputed))))


@pytest.mark.parametrize("args,problem", [(["gt=a", "ref=b", "out=c", "bogus=1"], "unknown Beagle argument"),
                                          (["gt=a", "out=c"], "missing required"),
                                          (["gt=a", "ref", "out=c"], "key=value")])
def test_beagle_command_line_rejects(args, problem):
    result = CliRunner().invoke(main, ["beagle", *args])
    assert result.exit_code == 2 and problem in result.output


def test_vcf_given_as_model(small_benchmark, tmp_path):
    result = CliRunner().invoke(main, ["-q", "beagle", f"gt={small_benchmark / 'target.vcf.gz'}",
                                       f"ref={small_benchmark / 'ref.vcf.gz'}", f"out={tmp_path / 'x'}"])
    assert result.exit_code == 1 and "spinimpute train --ref" in result.output


def test_evaluate_several_files_and_plot(imputed, small_benchmark, tmp_path):
    import shutil

    plot, out_json, other = tmp_path / "r2.png", tmp_path / "all.json", tmp_path / "copy.vcf.gz"
    shutil.copy(imputed, other)
    result = CliRunner().invoke(main, ["evaluate", "--truth", str(small_benchmark / "truth.vcf.gz"),
                                       "--imputed", str(imputed), "--imputed", str(other),
                                       "--plot", str(plot), "--json", str(out_json)])
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(out_json.read_text())
    assert list(data) == [str(imputed), str(other)] and data[str(other)]["curve"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.json", "copy.vcf.gz", "r2.png"]  # no temporaries
    result = CliRunner().invoke(main, ["evaluate", "--truth", str(small_benchmark / "truth.vcf.gz"),
                                       "--imputed", str(imputed), "--plot", str(tmp_path / "r2.jpeg")])
    assert result.exit_code == 2 and ".png, .pdf or .svg" in result.output
