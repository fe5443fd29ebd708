"""Run spinimpute, Beagle 5.4 and Minimac4 side by side on one data set and print one table.

Each tool gets the same reference panel, target, genetic map and thread count; every
step runs under /usr/bin/time -v for wall time and peak RSS; all outputs are scored by
`spinimpute.evaluate` (aggregate and mean per-site dosage r² by reference MAF bin over
the untyped sites, i.e. the sites absent from the target).

    python benchmarks/compare.py sim  --seed 1 [--out benchmarks/results/sim1]
    python benchmarks/compare.py real [--out benchmarks/results/real]

Needs the Debian packages beagle, minimac4, bcftools, tabix and time. The real data set
is read from ../shared/data/1kgp3-eur-chr20/bench-omniexpress; the script stops with a
message if it is absent.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "1kgp3-eur-chr20" / "bench-omniexpress"
BEAGLE = Path("/usr/share/beagle/beagle.jar")
BREF3 = Path("/usr/share/beagle/bref3.jar")


def timed(cmd: list[str], log: Path, stdout: Path | None = None) -> dict:
    """Run cmd under GNU time; return wall seconds, CPU seconds and peak RSS in MB."""
    full = ["/usr/bin/time", "-v", *cmd]
    with open(log, "w") as err, open(stdout, "wb") if stdout else open("/dev/null", "wb") as out:
        err.write("$ " + " ".join(cmd) + "\n")
        err.flush()
        proc = subprocess.run(full, stdout=out, stderr=err)
    text = log.read_text()
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\nsee {log}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text).group(1)
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    user = float(re.search(r"User time \(seconds\): (\S+)", text).group(1))
    system = float(re.search(r"System time \(seconds\): (\S+)", text).group(1))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 1024
    return {"wall_s": round(seconds, 1), "cpu_s": round(user + system, 1), "peak_rss_mb": round(rss)}


def plink_map_for(ref: Path, out: Path, source: Path | None) -> Path:
    """The data set's PLINK map, or a 1 cM/Mb one spanning the panel (Minimac4 needs a map)."""
    if source is not None:
        shutil.copy(source, out)
        return out
    import cyvcf2

    positions, chrom = [], None
    for rec in cyvcf2.VCF(str(ref)):
        chrom = rec.CHROM
        positions.append(rec.POS)
    with open(out, "w") as f:
        for pos in (1, positions[-1] + 1):
            f.write(f"{chrom}\t.\t{pos / 1e6:.8f}\t{pos}\n")
    return out


def run(data: Path, out: Path, map_source: Path | None, threads: int, steps: int | None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    ref, target, truth = data / "ref.vcf.gz", data / "target.vcf.gz", data / "truth.vcf.gz"
    plink_map = plink_map_for(ref, out / "plink.map", map_source)
    spin = [sys.executable, "-m", "spinimpute"]
    results = {}

    steps_args = ["--steps", str(steps)] if steps is not None else []
    results["spinimpute"] = {
        "prepare": timed([*spin, "-q", "train", "--ref", str(ref), "--map", str(plink_map), "--out",
                          str(out / "spin.model"), "--threads", str(threads), *steps_args], out / "spin.train.log"),
        "impute": timed([*spin, "-q", "impute", "--target", str(target), "--model", str(out / "spin.model"),
                         "--out", str(out / "spin.vcf.gz"), "--threads", str(threads)], out / "spin.impute.log"),
        "output": out / "spin.vcf.gz",
    }
    results["beagle"] = {
        "prepare": timed(["java", "-jar", str(BREF3), str(ref)], out / "beagle.bref3.log", stdout=out / "ref.bref3"),
        "impute": timed(["java", "-Xmx8g", "-jar", str(BEAGLE), f"gt={target}", f"ref={out / 'ref.bref3'}",
                         f"out={out / 'beagle'}", f"map={plink_map}", f"nthreads={threads}"], out / "beagle.log"),
        "output": out / "beagle.vcf.gz",
    }
    chrom = subprocess.run(["bcftools", "query", "-f", "%CHROM\n", str(target)], capture_output=True, text=True,
                           check=True).stdout.split("\n", 1)[0]
    results["minimac4"] = {
        "prepare": timed(["minimac4", "--compress-reference", str(ref), "-o", str(out / "ref.msav")],
                         out / "minimac4.msav.log"),
        "impute": timed(["minimac4", "-t", str(threads), "-f", "GT,DS", "-m", str(plink_map), "--region", chrom,
                         "-o", str(out / "minimac4.vcf.gz"), str(out / "ref.msav"), str(target)],
                        out / "minimac4.log"),
        "output": out / "minimac4.vcf.gz",
    }
    from spinimpute.evaluate import evaluate

    for tool, r in results.items():
        ev = evaluate(truth, r["output"], ref_path=ref, target_path=target, threads=threads)
        r["evaluation"] = ev.as_dict()
        r["output"] = str(r["output"])
    return results


def table(results: dict) -> str:
    first = next(iter(results.values()))["evaluation"]
    labels = [b["bin"] for b in first["bins"]]
    head = ["tool", *[f"r² {label}" for label in labels], "r² overall", "mean site r² overall",
            "prepare wall s", "impute wall s", "impute CPU s", "impute peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for tool, r in results.items():
        ev = r["evaluation"]
        cells = [tool, *[f"{b['aggregate_r2']:.3f} ({b['mean_site_r2']:.2f})" for b in ev["bins"]],
                 f"{ev['overall']['aggregate_r2']:.4f}", f"{ev['overall']['mean_site_r2']:.3f}",
                 f"{r['prepare']['wall_s']}", f"{r['impute']['wall_s']}", f"{r['impute']['cpu_s']}",
                 f"{r['impute']['peak_rss_mb']}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["sim", "real"])
    parser.add_argument("--seed", type=int, default=1, help="simulation seed (sim only)")
    parser.add_argument("--out", type=Path, help="working folder (default benchmarks/results/<dataset>)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, help="spinimpute training steps (default: the CLI default)")
    args = parser.parse_args(argv)
    for tool in ("java", "minimac4", "bcftools", "/usr/bin/time"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y beagle minimac4 bcftools tabix time")
    if args.dataset == "real":
        if not REAL.exists():
            sys.exit(f"real benchmark not found at {REAL}")
        data, map_source = REAL, REAL / "map.txt"
        out = args.out or REPO / "benchmarks" / "results" / "real"
    else:
        from spinimpute.simulate import make_benchmark

        out = args.out or REPO / "benchmarks" / "results" / f"sim{args.seed}"
        data = out / "data"
        summary = make_benchmark(data, n_ref=500, n_target=100, length=1_000_000, typed_fraction=0.04,
                                 seed=args.seed)
        print(json.dumps(summary), file=sys.stderr)
        map_source = None
    results = run(data, out, map_source, args.threads, args.steps)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"data set: {args.dataset}" + (f" (seed {args.seed})" if args.dataset == "sim" else ""))
    print("aggregate dosage r² by reference MAF bin (mean per-site r² in brackets), untyped sites")
    print(table(results))


if __name__ == "__main__":
    main()
