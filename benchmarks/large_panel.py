"""A large panel side by side with Beagle 5.4 and Minimac4: 5 Mb, 40,000 haplotypes, 1,000 targets.

    python benchmarks/large_panel.py [--panel-samples 20000] [--targets 1000] [--scored 250]
        [--length 5e6] [--threads 2] [--seed 1] [--first-mb MB] [--unphased] [--out benchmarks/results/large]

A chromosome-length panel is the same script with other sizes (`--panel-samples 3200 --targets 500
--length 60e6 --first-mb 5`): --first-mb also prepares the panel's first MB megabases alone with each
tool, for how preparing scales with the panel's length.

One msprime simulation (Out-of-Africa CEU, 1 cM/Mb, mutation rate 5.5e-8 as in speed.py) of
panel + target samples, written straight from the tree sequence in blocks (a dense matrix of
40,000 haplotypes would not fit beside the tools): ref.vcf.gz (the panel's polymorphic sites),
target.vcf.gz (280 common SNPs per Mb, OmniExpress-like), truth.vcf.gz for the first --scored
targets (`spinimpute evaluate` holds every scored genotype in memory, several times over: 1,000
targets at 187,000 sites took over 20 GB) and a PLINK map.
The data are cached in --out/data. Each tool prepares the panel (spinimpute train, bref3,
Minimac4 --compress-reference) and imputes the targets (GT:DS:GP), under /usr/bin/time -v; the
prepared file's size is reported beside each. Every output is scored by `spinimpute evaluate`.
--unphased also imputes the targets with their genotypes unphased (spinimpute and Beagle phase them).
Prints a markdown table and writes results.json into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare
from compare import timed

REPO = Path(__file__).resolve().parents[1]
CONTIG = "20"
ARRAY_SITES_PER_MB = 280
BLOCK_VARIANTS = 256


def make_data(folder: Path, *, panel_samples: int, targets: int, scored: int, length: int, seed: int,
              threads: int) -> dict:
    """Simulate and write the data set (once; a summary.json marks it complete)."""
    import msprime
    import pysam

    from spinimpute.io.bgzf import BgzfTextWriter
    from spinimpute.tools.simulate import (
        array_sites,
        genotype_rows,
        out_of_africa_demography,
        vcf_header,
        write_genetic_map,
    )

    done = folder / "summary.json"
    if done.exists():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ts = msprime.sim_ancestry(samples={"CEU": panel_samples + targets}, demography=out_of_africa_demography(),
                              sequence_length=length, recombination_rate=1e-8, ploidy=2, random_seed=seed)
    ts = msprime.sim_mutations(ts, rate=5.5e-8, random_seed=seed + 1)
    simulated = time.perf_counter() - start
    n_panel = 2 * panel_samples
    positions, refs, alts, freq, target_rows = [], [], [], [], []
    block: list = []

    def flush(out) -> None:
        if block:
            haps = np.stack([g for *_, g in block])
            out.write(genotype_rows(CONTIG, [b[0] for b in block], [b[1] for b in block], [b[2] for b in block],
                                    haps[:, :n_panel]))
            target_rows.append(np.packbits(haps[:, n_panel:], axis=1))
            block.clear()

    with BgzfTextWriter(folder / "ref.vcf.gz", threads=threads) as out:
        out.write(vcf_header(CONTIG, length, [f"ref{i:05d}" for i in range(panel_samples)]))
        for variant in ts.variants():
            alleles = [a for a in variant.alleles if a is not None]
            g = (variant.genotypes == 1).astype(np.uint8)
            count = int(g[:n_panel].sum())
            if len(alleles) != 2 or not 0 < count < n_panel or (variant.genotypes > 1).any():
                continue
            pos = int(variant.site.position) + 1
            positions.append(pos)
            refs.append(alleles[0])
            alts.append(alleles[1])
            freq.append(count / n_panel)
            block.append((pos, alleles[0], alleles[1], g))
            if len(block) == BLOCK_VARIANTS:
                flush(out)
        flush(out)
    target_haps = np.unpackbits(np.concatenate(target_rows), axis=1, count=2 * targets)
    typed = array_sites(np.asarray(freq)[:, None], np.asarray(positions), n_sites=round(ARRAY_SITES_PER_MB * length / 1e6))
    names = [f"tgt{i:04d}" for i in range(targets)]
    for name, rows, n in (("truth", np.arange(len(positions)), min(scored, targets)), ("target", typed, targets)):
        if n == 0:  # nothing scored: no truth file
            continue
        with BgzfTextWriter(folder / f"{name}.vcf.gz", threads=threads) as out:
            out.write(vcf_header(CONTIG, length, names[:n]))
            for lo in range(0, len(rows), BLOCK_VARIANTS):
                part = rows[lo : lo + BLOCK_VARIANTS]
                out.write(genotype_rows(CONTIG, [positions[i] for i in part], [refs[i] for i in part],
                                        [alts[i] for i in part], target_haps[part, : 2 * n]))
        pysam.tabix_index(str(folder / f"{name}.vcf.gz"), preset="vcf", force=True)
    write_genetic_map(folder / "plink.map", contig=CONTIG, rate_map=msprime.RateMap.uniform(length + 1, 1e-8))
    summary = {"panel_haplotypes": n_panel, "target_samples": targets, "scored_samples": min(scored, targets),
               "length_bp": length, "seed": seed,
               "panel_sites": len(positions), "typed_sites": len(typed), "msprime_seconds": round(simulated, 1),
               "seconds": round(time.perf_counter() - start, 1)}
    done.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--panel-samples", type=int, default=20_000)
    parser.add_argument("--targets", type=int, default=1_000)
    parser.add_argument("--scored", type=int, default=250, help="targets scored (the first ones)")
    parser.add_argument("--length", type=float, default=5e6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--first-mb", type=float, default=None,
                        help="also prepare the panel's first MB megabases alone with each tool")
    parser.add_argument("--unphased", action="store_true",
                        help="also impute the targets with their genotypes unphased (spinimpute and Beagle, which "
                             "phase them; Minimac4 does not)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "large")
    args = parser.parse_args(argv)
    from spinimpute.tools.evaluate import evaluate

    data = args.out / "data" / f"p{args.panel_samples}_t{args.targets}_r{args.scored}_L{int(args.length)}_s{args.seed}"
    summary = make_data(data, panel_samples=args.panel_samples, targets=args.targets, scored=args.scored,
                        length=int(args.length), seed=args.seed, threads=args.threads)
    print(f"data: {summary}", file=sys.stderr)
    runs = args.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    ref, target, genetic_map = data / "ref.vcf.gz", data / "target.vcf.gz", data / "plink.map"
    results: dict = {"data": summary}
    steps = [
        ("spinimpute", runs / "spin.model",
         lambda: timed(compare.spinimpute_train(ref=ref, genetic_map=genetic_map, model=runs / "spin.model",
                                                threads=args.threads), runs / "spin.train.log"),
         lambda: timed(compare.spinimpute_impute(target=target, model=runs / "spin.model", output=runs / "spin.vcf.gz",
                                                 threads=args.threads), runs / "spin.impute.log"),
         runs / "spin.vcf.gz"),
        ("beagle", runs / "ref.bref3",
         lambda: timed(compare.beagle_bref3(ref), runs / "beagle.bref3.log", stdout=runs / "ref.bref3"),
         lambda: timed(compare.beagle_impute(target=target, bref=runs / "ref.bref3", prefix=runs / "beagle",
                                             genetic_map=genetic_map, threads=args.threads, gp=True),
                       runs / "beagle.impute.log"),
         runs / "beagle.vcf.gz"),
        ("minimac4", runs / "ref.msav",
         lambda: timed(compare.minimac4_compress(ref=ref, msav=runs / "ref.msav"), runs / "minimac4.msav.log"),
         lambda: timed(compare.minimac4_impute(target=target, msav=runs / "ref.msav", output=runs / "minimac4.vcf.gz",
                                               genetic_map=genetic_map, chrom=CONTIG, threads=args.threads,
                                               formats="GT,DS,GP"), runs / "minimac4.impute.log"),
         runs / "minimac4.vcf.gz"),
    ]
    for tool, prepared, prepare, impute, output in steps:
        print(f"{tool}: prepare", file=sys.stderr)
        results[tool] = {"prepare": prepare(), "prepared_mb": round(prepared.stat().st_size / 2**20, 1)}
        print(f"{tool}: impute", file=sys.stderr)
        results[tool]["impute"] = impute()
        ev = evaluate(data / "truth.vcf.gz", output, ref_path=ref, target_path=target, threads=args.threads)
        results[tool]["r2"] = {b["bin"]: b["aggregate_r2"] for b in ev.as_dict()["bins"]}
        results[tool]["r2"]["overall"] = ev.overall["aggregate_r2"]
    if args.first_mb:
        results["first"] = prepare_first(ref, genetic_map, runs, args.first_mb, args.threads)
    if args.unphased:
        results["unphased"] = impute_unphased(data, runs, args.threads, evaluate)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    bins = list(results["spinimpute"]["r2"])
    print(f"\n{summary['panel_haplotypes']} haplotypes, {summary['panel_sites']} sites, {args.length / 1e6:g} Mb; "
          f"{summary['target_samples']} targets at {summary['typed_sites']} typed sites, the first "
          f"{summary['scored_samples']} scored; {args.threads} threads\n")
    print("| tool | prepare wall s | prepare CPU s | prepare peak RSS MB | prepared file MB | impute wall s | "
          "impute CPU s | impute peak RSS MB | " + " | ".join(f"r² {b}" for b in bins) + " |")
    print("|---" * (8 + len(bins)) + "|")
    for tool in ("spinimpute", "beagle", "minimac4"):
        r = results[tool]
        print(f"| {tool} | {r['prepare']['wall_s']} | {r['prepare']['cpu_s']} | {r['prepare']['peak_rss_mb']} | "
              f"{r['prepared_mb']} | {r['impute']['wall_s']} | {r['impute']['cpu_s']} | {r['impute']['peak_rss_mb']} | "
              + " | ".join(f"{r['r2'][b]:.4f}" for b in bins) + " |")
    if args.unphased:
        print("\nThe same targets with their genotypes unphased (each tool's prepared panel as above):\n")
        print("| tool | impute wall s | impute CPU s | impute peak RSS MB | " + " | ".join(f"r² {b}" for b in bins) + " |")
        print("|---" * (4 + len(bins)) + "|")
        for tool in ("spinimpute", "beagle"):
            r = results["unphased"][tool]
            print(f"| {tool} | {r['impute']['wall_s']} | {r['impute']['cpu_s']} | {r['impute']['peak_rss_mb']} | "
                  + " | ".join(f"{r['r2'][b]:.4f}" for b in bins) + " |")
    if args.first_mb:
        print(f"\nThe first {args.first_mb:g} Mb alone ({results['first']['sites']} sites):\n")
        print("| tool | prepare wall s | prepare CPU s | prepare peak RSS MB | prepared file MB |")
        print("|---|---|---|---|---|")
        for tool in ("spinimpute", "beagle", "minimac4"):
            r = results["first"][tool]
            print(f"| {tool} | {r['wall_s']} | {r['cpu_s']} | {r['peak_rss_mb']} | {r['prepared_mb']} |")


def impute_unphased(data: Path, runs: Path, threads: int, evaluate) -> dict:
    """Impute target.vcf.gz with every genotype written unphased ('/'), by spinimpute and Beagle."""
    import subprocess

    import pysam

    from spinimpute.io.bgzf import BgzfTextWriter

    target = data / "target.unphased.vcf.gz"
    if not target.exists():
        text = subprocess.run(["bcftools", "view", str(data / "target.vcf.gz")], check=True, capture_output=True).stdout
        lines = text.split(b"\n")
        body = [line.replace(b"|", b"/") if line and not line.startswith(b"#") else line for line in lines]
        with BgzfTextWriter(target, threads=threads) as out:
            out.write(b"\n".join(body))
        pysam.tabix_index(str(target), preset="vcf", force=True)
    out: dict = {}
    for tool, cmd, output in (
        ("spinimpute", compare.spinimpute_impute(target=target, model=runs / "spin.model",
                                                 output=runs / "spin.unphased.vcf.gz", threads=threads),
         runs / "spin.unphased.vcf.gz"),
        ("beagle", compare.beagle_impute(target=target, bref=runs / "ref.bref3", prefix=runs / "beagle.unphased",
                                         genetic_map=data / "plink.map", threads=threads, gp=True),
         runs / "beagle.unphased.vcf.gz"),
    ):
        print(f"{tool}: impute unphased", file=sys.stderr)
        out[tool] = {"impute": timed(cmd, runs / f"{tool}.unphased.impute.log")}
        ev = evaluate(data / "truth.vcf.gz", output, ref_path=data / "ref.vcf.gz", target_path=target, threads=threads)
        out[tool]["r2"] = {b["bin"]: b["aggregate_r2"] for b in ev.as_dict()["bins"]}
        out[tool]["r2"]["overall"] = ev.overall["aggregate_r2"]
    return out


def prepare_first(ref: Path, genetic_map: Path, runs: Path, megabases: float, threads: int) -> dict:
    """Prepare the panel's first `megabases` alone with each tool (its sites cut out by bcftools)."""
    import subprocess

    first = runs / "first.vcf.gz"
    subprocess.run(["bcftools", "view", "-t", f"{CONTIG}:1-{int(megabases * 1e6)}", "-Oz", "-o", str(first), str(ref)],
                   check=True)
    listing = subprocess.run(["bcftools", "view", "-H", "-G", str(first)], check=True, capture_output=True, text=True)
    sites = len(listing.stdout.splitlines())
    out: dict = {"megabases": megabases, "sites": sites}
    for tool, prepared, cmd, stdout in (
        ("spinimpute", runs / "first.model",
         compare.spinimpute_train(ref=first, genetic_map=genetic_map, model=runs / "first.model", threads=threads),
         None),
        ("beagle", runs / "first.bref3", compare.beagle_bref3(first), runs / "first.bref3"),
        ("minimac4", runs / "first.msav", compare.minimac4_compress(ref=first, msav=runs / "first.msav"), None),
    ):
        print(f"{tool}: prepare the first {megabases:g} Mb", file=sys.stderr)
        out[tool] = timed(cmd, runs / f"first.{tool}.log", stdout=stdout)
        out[tool]["prepared_mb"] = round(prepared.stat().st_size / 2**20, 1)
    return out


if __name__ == "__main__":
    main()
