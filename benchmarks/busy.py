"""Training steps alone and beside other busy processes, with torch's OpenMP threads passive or spinning.

    python benchmarks/busy.py [--steps 40] [--busy 2] [--threads 2]

Trains on the example panel (data/example/ref.vcf.gz) twice per setting, with `--steps` and with
0 steps, and reports the difference per step, so that reading the panel and encoding it do not
count. Settings (`--settings`): by default OMP_WAIT_POLICY=PASSIVE (idle threads sleep) and ACTIVE
(they spin), each alone and beside `--busy` processes that spin on a core each, as other jobs on a
shared machine do. GOMP_SPINCOUNT=N (with PASSIVE unset by the CLI only when OMP_WAIT_POLICY is unset)
sets how long libgomp's threads spin before sleeping. Needs nothing but spinimpute.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _spin() -> None:
    while True:
        pass


def train_seconds(steps: int, threads: int, setting: str) -> float:
    env = dict(os.environ, **dict(item.split("=", 1) for item in setting.split()))
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "spinimpute", "-q", "train", "--ref",
                        str(REPO / "data" / "example" / "ref.vcf.gz"), "--out", str(Path(folder) / "m.spin"),
                        "--steps", str(steps), "--threads", str(threads)], env=env, check=True)
        return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside training")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settings", nargs="+", default=["OMP_WAIT_POLICY=PASSIVE", "OMP_WAIT_POLICY=ACTIVE"],
                        help="environment settings to compare, each 'NAME=VALUE[ NAME=VALUE]'")
    args = parser.parse_args(argv)
    print("| environment | other busy processes | seconds per training step |")
    print("|---|---|---|")
    for policy in args.settings:
        for busy in (0, args.busy):
            spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(busy)]
            for p in spinners:
                p.start()
            try:
                base = train_seconds(0, args.threads, policy)
                full = train_seconds(args.steps, args.threads, policy)
            finally:
                for p in spinners:
                    p.terminate()
            print(f"| {policy} | {busy} | {(full - base) / args.steps:.3f} |", flush=True)


if __name__ == "__main__":
    main()
