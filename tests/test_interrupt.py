"""An interrupted impute leaves no output, index or temporary file behind."""

import signal
import subprocess
import sys
import time

import pytest


@pytest.fixture(scope="module")
def many_targets(small_benchmark, tmp_path_factory):
    """The small benchmark's targets copied 50 times, so that writing takes long enough to interrupt."""
    import cyvcf2

    src = cyvcf2.VCF(str(small_benchmark / "target.vcf.gz"))
    copies = 50
    header = src.raw_header.rstrip("\n").split("\n")
    samples = [f"{s}_{i}" for i in range(copies) for s in src.samples]
    header[-1] = "\t".join(header[-1].split("\t")[:9] + samples)
    lines = header
    for rec in src:
        fields = str(rec).rstrip("\n").split("\t")
        lines.append("\t".join(fields[:9] + fields[9:] * copies))
    path = tmp_path_factory.mktemp("many") / "targets.vcf"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killed_impute_leaves_nothing(sig, trained_model, many_targets, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "spinimpute", "-q", "impute", "--target", str(many_targets),
         "--model", str(trained_model), "--out", str(out_dir / "o.vcf.gz"), "--threads", "1"],
        stderr=subprocess.PIPE, text=True,
        # A runner started in the background by a shell ignores SIGINT, and children inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 - the child must take SIGINT
    )
    # Wait until the temporary output exists, i.e. the run is writing, then interrupt it. The limits
    # only stop a hung run: a machine busy with other jobs can take minutes to start and to clean up.
    deadline = time.time() + 600
    while not any(p.name.endswith(".tmp") for p in out_dir.iterdir()):
        assert proc.poll() is None, "impute finished before it could be interrupted"
        assert time.time() < deadline, "impute did not start writing within 10 minutes"
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert "Traceback" not in err
    assert list(out_dir.iterdir()) == []
