"""The jobs run the code path a user's command runs: one checked device type, the CPU backend on the CPU."""

import gzip

import pytest
import torch
from click.testing import CliRunner

from spinimpute.cli import main
from spinimpute.engine import cpu
from spinimpute.engine.device import select_device
from spinimpute.io.modelfile import load_model
from spinimpute.jobs import impute_job, make_backend


@pytest.mark.parametrize("device", [torch.device("cpu"), "gpu", "CPU", None])
def test_a_device_is_auto_cpu_or_cuda(device, trained_model, small_benchmark, tmp_path):
    # torch.device("cpu") != "cpu": accepting it once sent these tests down the torch path in bfloat16.
    with pytest.raises(TypeError, match="device must be one of 'auto', 'cpu', 'cuda'"):
        select_device(device)
    with pytest.raises(TypeError):
        impute_job(target_path=small_benchmark / "target.vcf.gz", model_path=trained_model,
                   out_path=tmp_path / "o.vcf.gz", device=device, progress=False)
    assert not (tmp_path / "o.vcf.gz").exists()


def test_cpu_backend_unless_torch_is_asked_for(trained_model):
    bundle = load_model(trained_model)
    cpu_model = cpu.CpuImputer(bundle.weights, bundle.config)
    assert make_backend(cpu_model, bundle, bundle.config, "cpu", "auto", 1) is cpu_model
    assert make_backend(cpu_model, bundle, bundle.config, "cpu", "float32", 1) is cpu_model
    from spinimpute.engine.torch_backend import TorchImputer

    assert isinstance(make_backend(cpu_model, bundle, bundle.config, "cpu", "mixed", 1), TorchImputer)


def test_the_cli_keeps_numpys_arrays_in_small_pages(trained_model, small_benchmark, tmp_path):
    """Huge pages' first touches cost more system time than their fewer faults saved (BENCHMARKS.md)."""
    from spinimpute.engine.device import keep_freed_memory, numpy_hugepage_switch

    switch = numpy_hugepage_switch()
    assert switch is not None  # the numpy this project pins has it
    before = switch(True)
    try:
        keep_freed_memory()
        assert switch(True) is False  # the setting keep_freed_memory left
        result = CliRunner().invoke(main, ["-q", "impute", "--target", str(small_benchmark / "target.vcf.gz"),
                                           "--model", str(trained_model), "--out", str(tmp_path / "o.vcf.gz"),
                                           "--threads", "1"])
        assert result.exit_code == 0, result.output
        assert switch(True) is False  # as the CLI's impute left it
    finally:
        switch(before)


def _records(path):
    with gzip.open(path, "rt") as handle:
        return [line for line in handle if not line.startswith("#")]


def test_impute_job_and_the_cli_run_the_same_cpu_predictor(trained_model, small_benchmark, tmp_path, monkeypatch):
    calls = []
    predict = cpu.CpuImputer.predict

    def counted(self, **arrays):
        calls.append(arrays["hmm_prob"].shape)
        return predict(self, **arrays)

    monkeypatch.setattr(cpu.CpuImputer, "predict", counted)
    target = small_benchmark / "target.vcf.gz"
    impute_job(target_path=target, model_path=trained_model, out_path=tmp_path / "job.vcf.gz", device="cpu",
               progress=False)
    assert calls, "impute_job on the CPU did not run the CPU backend's predictor"
    n_job = len(calls)
    result = CliRunner().invoke(main, ["-q", "impute", "--target", str(target), "--model", str(trained_model),
                                       "--out", str(tmp_path / "cli.vcf.gz"), "--threads", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 2 * n_job  # the CLI took the same path
    assert _records(tmp_path / "job.vcf.gz") == _records(tmp_path / "cli.vcf.gz")


def _with_real_panel_content(small_benchmark, tmp_path):
    """The simulated panel with some SNPs made into indels, SVs and multiallelic records with '*', and
    one record repeated: the content of a real panel (1000 Genomes 30x). Returns it and the edits."""
    import pysam

    with gzip.open(small_benchmark / "ref.vcf.gz", "rt") as handle:
        lines = handle.read().splitlines(keepends=True)
    body = [i for i, line in enumerate(lines) if not line.startswith("#")]
    edits = {}
    for j, i in enumerate(body[10::40]):
        fields = lines[i].split("\t")
        fields[3], fields[4] = [(fields[3], fields[3] + "TT"), (fields[3] + "GG", fields[3]),
                                (fields[3], "<DEL>"), (fields[3], fields[4] + ",*")][j % 4]
        edits[fields[1]] = (fields[3], fields[4])
        lines[i] = "\t".join(fields)
    lines.insert(body[5] + 1, lines[body[5]])  # the same record twice
    plain = tmp_path / "ref.vcf"
    plain.write_text("".join(lines))
    pysam.tabix_compress(str(plain), str(tmp_path / "ref.vcf.gz"))
    return tmp_path / "ref.vcf.gz", edits


def test_indels_svs_and_multiallelic_records_are_prepared_and_imputed(small_benchmark, tmp_path):
    import cyvcf2

    from spinimpute.jobs import train_job
    from spinimpute.training.trainer import TrainingOptions

    ref, edits = _with_real_panel_content(small_benchmark, tmp_path)
    model = tmp_path / "m.spin"
    train_job(ref_path=ref, out_path=model, options=TrainingOptions(seed=3), window_sites=300, flank_sites=150,
              device="cpu", progress=False)
    assert not list(tmp_path.glob(".m.spin.*"))  # the panel's scratch directory is gone
    counts = load_model(model).metadata["reference_records"]
    assert counts["indel_sites"] == sum(1 for r, a in edits.values() if a.endswith("TT") or r.endswith("GG")) > 0
    assert counts["symbolic_sites"] == sum(1 for _, a in edits.values() if a == "<DEL>") > 0
    assert counts["placeholder_alleles"] == counts["multiallelic_records"] == sum(",*" in a for _, a in edits.values())
    assert counts["duplicate_sites"] == 1 and counts["other_sites"] == 0
    assert counts["snp_sites"] + counts["indel_sites"] + counts["symbolic_sites"] == counts["records"] - 1
    out = tmp_path / "imputed.vcf.gz"
    impute_job(target_path=small_benchmark / "target.vcf.gz", model_path=model, out_path=out, device="cpu",
               progress=False)
    written = {(r.POS, r.REF, r.ALT[0]) for r in cyvcf2.VCF(str(out))}
    for pos, (ref_allele, alts) in edits.items():
        for alt in alts.split(","):
            assert ((int(pos), ref_allele, alt) in written) == (alt != "*")  # every kind imputed, '*' not a site


def test_large_cohorts_are_formatted_in_pieces_to_the_same_records(trained_model, small_benchmark, tmp_path,
                                                                    monkeypatch):
    # A cohort whose window of text would be large is formatted a few sites at a time: same file.
    from spinimpute import jobs

    impute_job(target_path=small_benchmark / "target.vcf.gz", model_path=trained_model, out_path=tmp_path / "a.vcf.gz",
               device="cpu", progress=False, threads=2)
    pieces = []
    split = jobs.split_block

    def counted(block, max_bytes):
        pieces.append(len(split(block, max_bytes)))
        return split(block, max_bytes)

    monkeypatch.setattr(jobs, "FORMAT_PIECE_BYTES", 1000)  # 20 samples: 6 sites a piece
    monkeypatch.setattr(jobs, "split_block", counted)
    impute_job(target_path=small_benchmark / "target.vcf.gz", model_path=trained_model, out_path=tmp_path / "b.vcf.gz",
               device="cpu", progress=False, threads=2)
    assert max(pieces) > 10
    assert _records(tmp_path / "a.vcf.gz") == _records(tmp_path / "b.vcf.gz")
