"""Imputation time at denser arrays: spinimpute beside Minimac4 with 1, 4 and 10 % of the panel's sites typed.

    python benchmarks/density.py [--percent 1 4 10] [--repeats 3] [--threads 2] [--out benchmarks/results/density]

Uses `speed.py`'s 5 Mb, 4,000-haplotype data set (run `python benchmarks/speed.py compare` first): the
200 targets typed at the given share of the panel's sites, common SNPs spread evenly
(`spinimpute.tools.simulate.array_sites`, cut from truth200.vcf.gz with `bcftools view -T`). Each tool
prepares the panel once; the imputations alternate between the tools, --repeats times, and the median
wall time is kept (GT:DS:GP, --threads threads).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare
from compare import timed

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "benchmarks" / "results" / "speed" / "data" / "sim_L20000000_n2200_mu5.5e-08_seed1" / "5000000bp"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--percent", type=float, nargs="+", default=[1, 4, 10])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "density")
    args = parser.parse_args(argv)
    from spinimpute.io.reading import read_panel
    from spinimpute.tools.simulate import array_sites

    ref, truth, genetic_map = DATA / "ref2000.vcf.gz", DATA / "truth200.vcf.gz", DATA / "plink.map"
    if not ref.exists():
        sys.exit(f"no data at {DATA}: run `python benchmarks/speed.py compare` first")
    args.out.mkdir(parents=True, exist_ok=True)
    (contig,) = read_panel(ref, threads=args.threads).contigs.values()
    targets = {}
    for percent in args.percent:
        chosen = array_sites(contig.alt_freq[:, None], contig.sites.positions, percent / 100)
        sites = args.out / f"sites{percent:g}.txt"
        sites.write_text("".join(f"{contig.sites.contig}\t{p}\n" for p in contig.sites.positions[chosen]))
        targets[percent] = args.out / f"target{percent:g}.vcf.gz"
        subprocess.run(["bcftools", "view", "-T", str(sites), "-Oz", "-o", str(targets[percent]), str(truth)],
                       check=True)
        subprocess.run(["bcftools", "index", "-t", "-f", str(targets[percent])], check=True)
    model, msav = args.out / "spin.model", args.out / "ref.msav"
    timed(compare.spinimpute_train(ref=ref, genetic_map=genetic_map, model=model, threads=args.threads),
          args.out / "spin.train.log")
    timed(compare.minimac4_compress(ref=ref, msav=msav), args.out / "minimac4.msav.log")
    results: dict = {}
    for percent, target in targets.items():
        runs: dict = {"spinimpute": [], "minimac4": []}
        for k in range(args.repeats):
            print(f"{percent:g} %: run {k + 1}", file=sys.stderr)
            runs["spinimpute"].append(timed(compare.spinimpute_impute(
                target=target, model=model, output=args.out / f"spin{percent:g}.vcf.gz", threads=args.threads),
                args.out / f"spin{percent:g}.log"))
            runs["minimac4"].append(timed(compare.minimac4_impute(
                target=target, msav=msav, output=args.out / f"minimac4_{percent:g}.vcf.gz", genetic_map=genetic_map,
                chrom=contig.sites.contig, threads=args.threads, formats="GT,DS,GP"), args.out / f"minimac4_{percent:g}.log"))
        typed = len((args.out / f"sites{percent:g}.txt").read_text().splitlines())
        results[f"{percent:g}"] = {"typed_sites": typed, **{tool: {
            "wall_s_median": statistics.median(r["wall_s"] for r in rs), "wall_s": [r["wall_s"] for r in rs],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)} for tool, rs in runs.items()}}
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n| typed | typed sites | spinimpute wall s (median) | Minimac4 wall s (median) | ratio | "
          "spinimpute peak RSS MB | Minimac4 peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for percent, r in results.items():
        s, m = r["spinimpute"], r["minimac4"]
        print(f"| {percent} % | {r['typed_sites']} | {s['wall_s_median']} ({', '.join(map(str, s['wall_s']))}) | "
              f"{m['wall_s_median']} ({', '.join(map(str, m['wall_s']))}) | "
              f"{np.round(s['wall_s_median'] / m['wall_s_median'], 2)} | {s['peak_rss_mb']} | {m['peak_rss_mb']} |")


if __name__ == "__main__":
    main()
