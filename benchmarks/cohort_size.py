"""Imputation time and memory against the number of target samples, spinimpute beside Beagle 5.4.

    python benchmarks/cohort_size.py [--panel-samples 2000] [--targets 5000 20000] [--threads 2]
        [--tools spinimpute beagle] [--out benchmarks/results/cohort]

One simulation (as `large_panel.py` makes it: 5 Mb, Out-of-Africa CEU, 280 typed SNPs per Mb) of
the panel and the largest cohort; each smaller cohort is its first samples (`bcftools view -s`).
Each tool prepares the panel once and imputes each cohort (GT:DS:GP) under /usr/bin/time -v.
Prints wall s, CPU s and peak RSS per cohort, and each tool's seconds per 1,000 targets between
the smallest and the largest cohort. Nothing is scored (`large_panel.py` scores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare
from compare import timed
from large_panel import CONTIG, make_data

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--panel-samples", type=int, default=2_000)
    parser.add_argument("--targets", type=int, nargs="+", default=[5_000, 20_000])
    parser.add_argument("--length", type=float, default=5e6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tools", nargs="+", choices=["spinimpute", "beagle"], default=["spinimpute", "beagle"],
                        help="the tools run (spinimpute alone to measure a change of its own)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cohort")
    args = parser.parse_args(argv)
    cohorts = sorted(args.targets)
    data = args.out / "data" / f"p{args.panel_samples}_t{cohorts[-1]}_L{int(args.length)}_s{args.seed}"
    summary = make_data(data, panel_samples=args.panel_samples, targets=cohorts[-1], scored=0,
                        length=int(args.length), seed=args.seed, threads=args.threads)
    print(f"data: {summary}", file=sys.stderr)
    runs = args.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    ref, genetic_map = data / "ref.vcf.gz", data / "plink.map"
    targets = {}
    for n in cohorts:
        targets[n] = data / "target.vcf.gz" if n == cohorts[-1] else data / f"target{n}.vcf.gz"
        if not targets[n].exists():
            names = ",".join(f"tgt{i:04d}" for i in range(n))
            subprocess.run(["bcftools", "view", "-s", names, "-Oz", "-o", str(targets[n]), str(data / "target.vcf.gz")],
                           check=True)
            subprocess.run(["bcftools", "index", "-t", str(targets[n])], check=True)
    results: dict = {"data": summary, **{tool: {} for tool in args.tools}}
    if "spinimpute" in args.tools:
        print("spinimpute: prepare", file=sys.stderr)
        timed(compare.spinimpute_train(ref=ref, genetic_map=genetic_map, model=runs / "spin.model",
                                       threads=args.threads), runs / "spin.train.log")
    if "beagle" in args.tools:
        print("beagle: prepare", file=sys.stderr)
        timed(compare.beagle_bref3(ref), runs / "beagle.bref3.log", stdout=runs / "ref.bref3")
    for n in cohorts:
        print(f"{n} targets", file=sys.stderr)
        if "spinimpute" in args.tools:
            results["spinimpute"][n] = timed(compare.spinimpute_impute(
                target=targets[n], model=runs / "spin.model", output=runs / f"spin.{n}.vcf.gz", threads=args.threads),
                runs / f"spin.{n}.impute.log")
        if "beagle" in args.tools:
            results["beagle"][n] = timed(compare.beagle_impute(
                target=targets[n], bref=runs / "ref.bref3", prefix=runs / f"beagle.{n}", genetic_map=genetic_map,
                threads=args.threads, gp=True), runs / f"beagle.{n}.impute.log")
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"\n{2 * args.panel_samples} panel haplotypes, {summary['panel_sites']} sites on {CONTIG}, "
          f"{summary['typed_sites']} typed; {args.threads} threads\n")
    print("| tool | " + " | ".join(f"{n} targets: wall s / CPU s / peak RSS MB" for n in cohorts)
          + " | s per 1,000 targets |")
    print("|---" * (len(cohorts) + 2) + "|")
    for tool in args.tools:
        r = results[tool]
        slope = (r[cohorts[-1]]["wall_s"] - r[cohorts[0]]["wall_s"]) / ((cohorts[-1] - cohorts[0]) / 1000)
        print(f"| {tool} | " + " | ".join(f"{r[n]['wall_s']} / {r[n]['cpu_s']} / {r[n]['peak_rss_mb']}"
                                           for n in cohorts) + f" | {slope:.1f} |")


if __name__ == "__main__":
    main()
