"""End-to-end tests of the command line on a seeded simulation."""

import gzip
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
        # A region of a model contig that holds none of its sites, and output names that say no VCF format.
        (["impute", "--target", "TARGET", "--model", "MODEL", "--out", "OUT", "--region", "20:50000000-60000000"],
         "holds none of the model's panel sites"),
        (["impute", "--target", "TARGET", "--model", "MODEL", "--out", "OUT.bcf"], "format follows its name"),
        (["impute", "--target", "TARGET", "--model", "MODEL", "--out", "OUT.txt"], "format follows its name"),
        (["impute", "--target", "EMPTY", "--model", "MODEL", "--out", "OUT"], "has no variant records"),
        (["beagle", "gt=TARGET", "ref=MISSING.spin", "out=OUTSIDE/bgl"], "file not found"),
    ],
)
def test_bad_input_gives_one_line_error_and_no_output(args, problem, trained_model, small_benchmark, imputed,
                                                      tmp_path):
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"  # inputs and logs beside tmp_path, which must stay empty
    elsewhere.mkdir()
    subst = {"TARGET": str(small_benchmark / "target.vcf.gz"), "MODEL": str(trained_model),
             "OUT": str(tmp_path / "o.vcf.gz"), "OUT.bcf": str(tmp_path / "o.bcf"), "OUT.txt": str(tmp_path / "o.txt"),
             "MISSING.vcf.gz": str(tmp_path / "missing.vcf.gz"), "MISSING.spin": str(tmp_path / "missing.spin")}
    if "IMPUTED_ELSEWHERE" in args:
        subst["IMPUTED_ELSEWHERE"] = str(_moved_copy(imputed, elsewhere))
    if "EMPTY" in args:  # a header and no records
        with gzip.open(small_benchmark / "target.vcf.gz", "rt") as src:
            (elsewhere / "empty.vcf").write_text("".join(line for line in src if line.startswith("#")))
        subst["EMPTY"] = str(elsewhere / "empty.vcf")
    subst["OUTSIDE/bgl"] = str(elsewhere / "bgl")

    def concrete(arg):  # a placeholder alone, or the value of a Beagle key=value
        key, sep, value = arg.rpartition("=")
        return key + sep + subst.get(value, value)

    result = CliRunner().invoke(main, ["-q", *map(concrete, args)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and problem in lines[0] and lines[0].startswith("spinimpute: error:")
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def _moved_copy(imputed, folder):
    """The imputed file with every position moved 10 Mb on: no site in common with the truth."""
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
                                       str(genetic_map), "--out", str(out)])
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
    assert list(data) == [imputed.name.removesuffix(".vcf.gz"), "copy"] and data["copy"]["curve"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.json", "copy.vcf.gz", "r2.png"]  # no temporaries
    result = CliRunner().invoke(main, ["evaluate", "--truth", str(small_benchmark / "truth.vcf.gz"),
                                       "--imputed", str(imputed), "--plot", str(tmp_path / "r2.jpeg")])
    assert result.exit_code == 2 and ".png, .pdf or .svg" in result.output


def _vcf_lines(path):
    opener = gzip.open if str(path).endswith((".gz", ".bgz")) else open
    with opener(path, "rt") as handle:
        return handle.read().splitlines()


def _records(path):
    return [line for line in _vcf_lines(path) if not line.startswith("#")]


def _edit_target(source, out, edit_record=lambda fields: fields, header=lambda line: line):
    """`source` rewritten as plain text: each record's fields through `edit_record` (None leaves it out),
    header lines through `header`."""
    lines = []
    for line in _vcf_lines(source):
        fields = None if line.startswith("#") else edit_record(line.split("\t"))
        if line.startswith("#") or fields is not None:  # None: record left out
            lines.append(header(line) if fields is None else "\t".join(fields))
    out.write_text("\n".join(lines) + "\n")
    return out


def _impute(target, model, out, *extra):
    result = CliRunner().invoke(main, ["-q", "impute", "--target", str(target), "--model", str(model), "--out",
                                       str(out), "--threads", "1", *extra])
    assert result.exit_code == 0, result.output
    return out


def test_a_call_of_an_allele_the_panel_lacks_is_imputed_as_missing(trained_model, small_benchmark, tmp_path):
    # A typed site and a sample whose first allele is ALT: the absent allele must not be read as REF.
    first, column = next((fields, i) for fields in (r.split("\t") for r in _records(small_benchmark / "target.vcf.gz"))
                         for i in range(9, len(fields)) if fields[i].startswith("1|"))
    other = next(b for b in "ACGT" if b not in (first[3], first[4]))

    def with_call(call):
        def edit(fields):
            if fields[1] == first[1]:
                fields = [*fields[:4], f"{fields[4]},{other}", *fields[5:]]
                fields[column] = call + "|" + fields[column].split("|")[1]
            return fields
        return edit

    outputs = {}
    for name, call in (("absent", "2"), ("missing", "."), ("ref", "0")):
        target = _edit_target(small_benchmark / "target.vcf.gz", tmp_path / f"{name}.vcf", with_call(call))
        outputs[name] = _impute(target, trained_model, tmp_path / f"{name}.vcf.gz")
    assert _records(outputs["absent"]) == _records(outputs["missing"])  # '2|x' imputed exactly as '.|x'
    summary = json.loads((tmp_path / "absent.summary.json").read_text())
    assert summary["target_sites"]["absent_allele_calls"] == 1
    site = {name: next(r.split("\t")[column] for r in _records(out) if r.split("\t")[1] == first[1])
            for name, out in outputs.items()}
    assert site["absent"] != site["ref"]  # not silently REF (it was written as the typed '0|x' call)


def test_output_format_follows_the_name(imputed, trained_model, small_benchmark, tmp_path):
    plain = _impute(small_benchmark / "target.vcf.gz", trained_model, tmp_path / "o.vcf")
    assert plain.read_bytes().startswith(b"##fileformat=VCFv4.2")
    assert not (tmp_path / "o.vcf.tbi").exists() and (tmp_path / "o.summary.json").exists()
    assert _records(plain) == _records(imputed)
    bgz = _impute(small_benchmark / "target.vcf.gz", trained_model, tmp_path / "o.vcf.bgz")
    assert (tmp_path / "o.vcf.bgz.tbi").exists() and _records(bgz) == _records(imputed)


def test_output_keeps_the_panels_contig_length_and_the_targets_contig_name(trained_model, small_benchmark,
                                                                           tmp_path):
    renamed = _edit_target(small_benchmark / "target.vcf.gz", tmp_path / "chr.vcf",
                           lambda fields: ["chr" + fields[0], *fields[1:]],
                           lambda line: line.replace("##contig=<ID=20", "##contig=<ID=chr20"))
    out = _impute(renamed, trained_model, tmp_path / "o.vcf.gz", "-r", "chr20:1-100000")
    vcf = cyvcf2.VCF(str(out))
    length = cyvcf2.VCF(str(small_benchmark / "ref.vcf.gz")).seqlens[0]
    assert vcf.seqnames == ["chr20"] and vcf.seqlens == [length]
    records = _records(out)
    assert records and all(r.startswith("chr20\t") for r in records)
    assert len(list(vcf("chr20:1-100000"))) == len(records)  # the index follows the written name


@pytest.mark.parametrize("key", ["impute=false", "ap=true", "excludesamples=x.txt", "excludemarkers=x.txt",
                                 "ped=x.ped"])
def test_beagle_keys_that_change_the_output_are_refused(key, tmp_path):
    result = CliRunner().invoke(main, ["beagle", "gt=a.vcf.gz", "ref=m.spin", f"out={tmp_path / 'p'}", key])
    assert result.exit_code == 2 and key in result.output
    assert list(tmp_path.iterdir()) == []


def test_beagle_log_holds_the_error_and_the_executable_names_itself(small_benchmark, tmp_path, monkeypatch, capsys):
    from spinimpute.cli import beagle_main

    result = CliRunner().invoke(main, ["-q", "beagle", f"gt={small_benchmark / 'target.vcf.gz'}",
                                       f"ref={tmp_path / 'missing.spin'}", f"out={tmp_path / 'p'}", "impute=true",
                                       "ap=false"])
    assert result.exit_code == 1
    assert (tmp_path / "p.log").read_text().splitlines()[-1] == result.output.strip()
    monkeypatch.setattr("sys.argv", ["spinimpute-beagle", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        beagle_main()
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("Usage: spinimpute-beagle ")


def test_cuda_asked_for_without_one_is_an_error(small_benchmark, trained_model, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = CliRunner().invoke(main, ["-q", "impute", "--target", str(small_benchmark / "target.vcf.gz"), "--model",
                                       str(trained_model), "-o", str(tmp_path / "o.vcf.gz"), "--device", "cuda"])
    assert result.exit_code == 1 and "no CUDA device" in result.output and list(tmp_path.iterdir()) == []


def test_threads_default_to_the_cpus_the_process_may_use(monkeypatch):
    from spinimpute.engine.device import available_cpus

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {3})
    assert available_cpus() == 1
    impute_help = CliRunner().invoke(main, ["impute", "--help"]).output
    evaluate_help = CliRunner().invoke(main, ["evaluate", "--help"]).output
    assert "the CPUs this process may use" in " ".join(impute_help.split())
    assert "htslib threads for reading the VCFs" in evaluate_help and "torch" not in evaluate_help


def test_plot_needs_are_checked_before_the_work(small_benchmark, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else find_spec(name))
    result = CliRunner().invoke(main, ["evaluate", "--truth", str(tmp_path / "absent.vcf.gz"), "--imputed",
                                       str(tmp_path / "absent.vcf.gz"), "--plot", str(tmp_path / "r2.png")])
    assert result.exit_code == 2 and "needs matplotlib" in result.output  # before reading the missing files
    result = CliRunner().invoke(main, ["evaluate", "--truth", "t.vcf.gz", "--imputed", "a.vcf.gz", "--label", "x",
                                       "--label", "y"])
    assert result.exit_code == 2 and "one distinct label per --imputed file" in result.output


def test_progress_bar_ends_at_the_last_site(small_benchmark, trained_model, tmp_path):
    result = CliRunner().invoke(main, ["impute", "--target", str(small_benchmark / "target.vcf.gz"), "--model",
                                       str(trained_model), "-o", str(tmp_path / "o.vcf.gz"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    from spinimpute.io.modelfile import load_model

    n = len(load_model(trained_model).contigs["20"].sites)
    assert f"{n}/{n}" in result.output.split("imputing")[-1]


def test_a_small_panel_is_warned_about_its_held_out_individuals(small_benchmark, tmp_path):
    def keep_ten(fields):
        return fields[:19]

    panel = _edit_target(small_benchmark / "ref.vcf.gz", tmp_path / "ten.vcf", keep_ten,
                         lambda line: "\t".join(line.split("\t")[:19]) if line.startswith("#CHROM") else line)
    result = CliRunner().invoke(main, ["train", "--ref", str(panel), "-o", str(tmp_path / "m.spin"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "a panel of 10 samples leaves 2 for the held-out checks (of 10)" in result.output


@pytest.mark.parametrize("phased", [True, False])
def test_a_samples_output_does_not_depend_on_its_batch(phased, trained_model, small_benchmark, unphased_target,
                                                       tmp_path):
    source = small_benchmark / "target.vcf.gz" if phased else unphased_target
    columns = _vcf_lines(source)[-1].count("\t") + 1
    order = list(range(9)) + list(reversed(range(9, columns)))
    subsets = {"all": order[:9] + list(range(9, columns)), "reversed": order, "alone": order[:9] + [12]}
    outputs = {}
    # A/T and C/G SNPs are left out: their strand is decided from the cohort's frequencies and linkage
    # (one sample cannot show it), the one step that rightly depends on the batch.
    palindromes = {("A", "T"), ("T", "A"), ("C", "G"), ("G", "C")}

    def subset(fields, keep):
        return None if (fields[3], fields[4]) in palindromes else [fields[i] for i in keep]

    for name, keep in subsets.items():
        target = _edit_target(source, tmp_path / f"{name}.vcf", lambda fields, keep=keep: subset(fields, keep),
                              lambda line, keep=keep: "\t".join(line.split("\t")[i] for i in keep)
                              if line.startswith("#CHROM") else line)
        out = _impute(target, trained_model, tmp_path / f"{name}.vcf.gz")
        header = next(line for line in _vcf_lines(out) if line.startswith("#CHROM")).split("\t")
        outputs[name] = {sample: [r.split("\t")[header.index(sample)] for r in _records(out)] for sample in header[9:]}
    sample = _vcf_lines(source)[[line.startswith("#CHROM") for line in _vcf_lines(source)].index(True)].split("\t")[12]
    assert outputs["alone"][sample] == outputs["all"][sample] == outputs["reversed"][sample]
    assert outputs["reversed"] == outputs["all"]
