"""spinimpute on a GPU beside the same machine's CPU: `--device cuda` against `--device cpu`.

    python benchmarks/gpu.py --set NAME=DIR [--set NAME=DIR ...] [--threads N] [--fine-tune STEPS]
        [--profile NAME] [--out benchmarks/results/gpu]

Each DIR holds target.vcf.gz, optionally truth.vcf.gz and target.unphased.vcf.gz, and
either ref.vcf.gz (with map.txt, optionally) or a prepared spin.model. With a ref.vcf.gz the
panel is prepared on each device (`spinimpute train`, and with --fine-tune also with that many
gradient steps); the CPU-prepared model then imputes the target on the CPU (float32), on the GPU
with the default precision (the predictor in bfloat16) and on the GPU in float32, and an
unphased target on the CPU and the GPU. Every run is a child process timed with its CPU time
and peak RSS (os.wait4: the GPU machine has no GNU time), the GPU's peak allocation read from
the run's --summary. Given a truth, the CPU's and the default GPU outputs are scored by
`spinimpute evaluate` (MAF bins from the panel where ref.vcf.gz is there, else from the truth);
every GPU output's dosages are compared with the CPU run's at the first 20,000 records. With
--profile NAME, that set's GPU imputation also runs under cProfile (the
top functions by cumulative time go to profile-NAME.txt; CUDA's queue makes the wait land where
the host reads a result back).

Writes results.json into --out after every run and prints a markdown table at the end. The
figures in BENCHMARKS.md's GPU section come from this script, run on a machine lent by the
project's GPU tool (one NVIDIA H200, 16 cores).
"""

from __future__ import annotations

import argparse
import cProfile  # noqa: F401 - run as `python -m cProfile` below; imported so a missing module fails early
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
COMPARED_RECORDS = 20_000


def timed(cmd: list[str], log: Path) -> dict:
    """Run cmd with its stderr in log; wall seconds, CPU seconds and peak RSS (MB) of the child."""
    with open(log, "w") as err:
        err.write("$ " + " ".join(cmd) + "\n")
        err.flush()
        start = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log.read_text().splitlines()[-5:]
        raise RuntimeError(f"exit {code}: {' '.join(cmd)}\n" + "\n".join(tail))
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def spinimpute(*args: str) -> list[str]:
    return [sys.executable, "-m", "spinimpute", "-q", *args]


def dosages(path: Path, n_records: int) -> np.ndarray:
    import cyvcf2

    rows = []
    for i, record in enumerate(cyvcf2.VCF(str(path))):
        if i == n_records:
            break
        rows.append(record.format("DS")[:, 0])
    return np.stack(rows)


def score(truth: Path, output: Path, ref: Path | None, target: Path, threads: int) -> dict:
    from spinimpute.tools.evaluate import evaluate

    ev = evaluate(truth, output, ref_path=ref, target_path=target, threads=threads)
    return {"overall": ev.overall["aggregate_r2"], "mean_site_r2": ev.overall["mean_site_r2"],
            "bins": {b["bin"]: b["aggregate_r2"] for b in ev.bins}, "maf_source": ev.maf_source,
            "switch_error_rate": ev.switch_error_rate}


def run_set(name: str, data: Path, out: Path, args, results: dict, save) -> None:
    work = out / name
    work.mkdir(parents=True, exist_ok=True)
    entry = results.setdefault(name, {"data": str(data), "runs": {}})
    runs = entry["runs"]
    ref = data / "ref.vcf.gz" if (data / "ref.vcf.gz").exists() else None
    map_args = ["--map", str(data / "map.txt")] if (data / "map.txt").exists() else []
    threads = ["--threads", str(args.threads)]
    model = data / "spin.model"
    if ref is not None:
        for device in ("cpu", args.gpu):
            for steps in sorted({0, args.fine_tune}):
                label = f"prepare {device}" + (f" fine-tune {steps}" if steps else "")
                path = work / (f"{device}.model" if not steps else f"{device}.ft{steps}.model")
                fine = ["--fine-tune", str(steps)] if steps else []
                runs[label] = timed(spinimpute("train", "--ref", str(ref), *map_args, "--out", str(path), *threads,
                                               "--device", device, *fine), work / f"{label.replace(' ', '_')}.log")
                runs[label]["model_mb"] = round(path.stat().st_size / 1e6, 1)
                save()
        model = work / "cpu.model"
    targets = {"phased": data / "target.vcf.gz"}
    if (data / "target.unphased.vcf.gz").exists():
        targets["unphased"] = data / "target.unphased.vcf.gz"
    for kind, target in targets.items():
        settings = [("cpu", "float32"), (args.gpu, "auto")]
        if kind == "phased":
            settings.append((args.gpu, "float32"))
        reference = None
        for device, precision in settings:
            label = f"impute {kind} {device} {precision}"
            stem = label.replace(" ", "_")
            output, summary = work / f"{stem}.vcf.gz", work / f"{stem}.json"
            cmd = spinimpute("impute", "--target", str(target), "--model", str(model), "--out", str(output),
                             "--summary", str(summary), *threads, "--device", device, "--precision", precision)
            run = timed(cmd, work / f"{stem}.log")
            recorded = json.loads(summary.read_text())
            run.update(precision=recorded["precision"], gpu_peak_memory_mb=recorded["gpu_peak_memory_mb"],
                       seconds_in_job=recorded["seconds"])
            if (data / "truth.vcf.gz").exists() and (device == "cpu" or precision != "float32"):
                run["r2"] = score(data / "truth.vcf.gz", output, ref, target, args.threads)
            ds = dosages(output, COMPARED_RECORDS)
            if reference is None:
                reference = ds
            else:
                diff = np.abs(ds - reference)
                run["ds_vs_cpu"] = {"max": round(float(diff.max()), 3), "mean": float(diff.mean()),
                                    "records": len(ds)}
            runs[label] = run
            save()
            if name in args.profile and device == args.gpu and precision == "auto" and kind == "phased":
                stats = work / "cuda.prof"
                profiled = [sys.executable, "-m", "cProfile", "-o", str(stats), "-m", "spinimpute", "-q", "impute",
                            "--target", str(target), "--model", str(model), "--out", str(work / "profiled.vcf.gz"),
                            *threads, "--device", args.gpu]
                runs["impute phased cuda auto (profiled)"] = timed(profiled, work / "profiled.log")
                import pstats

                with open(out / f"profile-{name}.txt", "w") as text:
                    pstats.Stats(str(stats), stream=text).sort_stats("cumulative").print_stats(40)
                save()


def table(results: dict) -> str:
    lines = ["| set | run | wall s | CPU s | peak RSS MB | GPU MB | r² overall | DS vs CPU (max / mean) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, entry in results.items():
        if name == "settings":
            continue
        for label, run in entry["runs"].items():
            r2 = run.get("r2", {}).get("overall")
            diff = run.get("ds_vs_cpu")
            r2_cell = "" if r2 is None else f"{r2:.4f}"
            diff_cell = "" if diff is None else f"{diff['max']} / {diff['mean']:.2e}"
            lines.append(f"| {name} | {label} | {run['wall_s']} | {run['cpu_s']} | {run['peak_rss_mb']} | "
                         f"{run.get('gpu_peak_memory_mb') or ''} | {r2_cell} | {diff_cell} |")
    return "\n".join(lines)


def machine() -> dict:
    info = {"cpus": os.cpu_count()}
    try:
        import torch

        info.update(torch=torch.__version__, cuda=torch.version.cuda,
                    gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    except ImportError:
        pass
    return info


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", required=True, metavar="NAME=DIR", help="a data set (repeatable)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--fine-tune", type=int, default=0, help="also prepare with this many gradient steps")
    parser.add_argument("--profile", action="append", default=[], metavar="NAME",
                        help="profile the GPU imputation of this set (repeatable)")
    parser.add_argument("--gpu", default="cuda", help="the device compared with the CPU ('cpu' tries the script out)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"settings": {"threads": args.threads, "fine_tune": args.fine_tune, **machine()}}

    def save() -> None:
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    save()
    for item in args.set:
        name, _, folder = item.partition("=")
        try:
            run_set(name, Path(folder), args.out, args, results, save)
        except Exception as exc:  # noqa: BLE001 - one set's failure is recorded; the others still run
            results.setdefault(name, {})["error"] = str(exc)
            save()
            print(f"{name}: {exc}", file=sys.stderr)
    print(table(results))


if __name__ == "__main__":
    main()
