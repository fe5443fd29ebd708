"""An interrupted impute leaves no output, index or temporary file behind."""

import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killed_impute_leaves_nothing(sig, trained_model, small_benchmark, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "spinimpute", "-q", "impute", "--target", str(small_benchmark / "target.vcf.gz"),
         "--model", str(trained_model), "--out", str(out_dir / "o.vcf.gz"), "--threads", "1"],
        stderr=subprocess.PIPE, text=True,
    )
    # Wait until the temporary output exists, i.e. the run is writing, then interrupt it.
    deadline = time.time() + 60
    while not any(p.name.endswith(".tmp") for p in out_dir.iterdir()):
        assert proc.poll() is None, "impute finished before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in err
    assert list(out_dir.iterdir()) == []
