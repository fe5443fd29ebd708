"""Run spinimpute, Beagle 5.4 and Minimac4 side by side and print one table per data set.

Each tool gets the same reference panel, target, genetic map (the data set's map.txt) and
thread count; every step runs under /usr/bin/time -v for wall time and peak RSS; all
outputs are scored by `spinimpute.tools.evaluate` over the untyped sites (the sites absent from
the target): aggregate and mean per-site dosage r² by reference MAF bin, the expected
calibration error of GP, and the correlation of the tools' INFO r² estimate (DR2, R2)
with the true per-site r². A second table gives each tool's dosage error (1 - aggregate r²)
divided by Beagle's, per bin and overall.

    python benchmarks/compare.py sim [--scenario clean|hard-omni|...|all] [--seeds 1 2 3] [--small] [--unphased]
    python benchmarks/compare.py real [--thin K | --unphased]
    (either with [--states N] [--fine-tune STEPS] [--weights FILE] [--threads N] [--out DIR])

`sim` simulates each seed's data set for the named scenario (spinimpute.tools.simulate.SCENARIOS;
`all` runs them one after another) and reports each metric as mean ± sd over seeds;
`--small` shrinks the data sets (100 + 20 samples, 200 kb) for a quick check of the flow.
`real --thin K` keeps one typed site in K of the real target (a sparser array) and imputes it
with the model that `real` trained, to show that a model serves any array density.
`--unphased` gives the tools the target's genotypes unphased (real: the data set's
target.unphased.vcf.gz; sim: target.vcf.gz with each GT written as '0/1', REF first), as arrays deliver
them: spinimpute and Beagle phase them, Minimac4 (which expects pre-phased targets) reads
them as phased in written order. It reuses the model of the phased run where there is one
(real: required), works in <out>/real-unphased or <out>/<scenario>-unphased/seed<N>, and the
evaluation adds each output's switch error rate at the typed heterozygotes.
Each run works in <out>/<scenario>/seed<N>/ (<out>/real/ for real data), with the data set,
the tools' outputs and logs, and results.json; <out> defaults to benchmarks/results.

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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "1kgp3-eur-chr20" / "bench-omniexpress"
BEAGLE = Path("/usr/share/beagle/beagle.jar")
BREF3 = Path("/usr/share/beagle/bref3.jar")
SMALL_SIZES = {"n_ref": 100, "n_target": 20, "length": 200_000}


def timed(cmd: list[str], log: Path, stdout: Path | None = None) -> dict:
    """Run cmd under GNU time; return wall seconds, CPU seconds and peak RSS in MB."""
    full = ["/usr/bin/time", "-v", *cmd]
    with open(log, "w") as err, open(stdout, "wb") if stdout else open("/dev/null", "wb") as out:
        err.write("$ " + " ".join(cmd) + "\n")
        err.flush()
        proc = subprocess.run(full, stdout=out, stderr=err, check=False)
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


# Each tool's command lines, shared with speed.py so both benchmarks run the tools alike.
def spinimpute_train(*, ref: Path, genetic_map: Path, model: Path, threads: int, steps: int | None = None,
                     device: str = "auto", weights: Path | None = None) -> list[str]:
    steps_args = ["--fine-tune", str(steps)] if steps is not None else []
    weights_args = ["--weights", str(weights)] if weights is not None else []
    return [sys.executable, "-m", "spinimpute", "-q", "train", "--ref", str(ref), "--map", str(genetic_map),
            "--out", str(model), "--threads", str(threads), "--device", device, *steps_args, *weights_args]


def spinimpute_impute(*, target: Path, model: Path, output: Path, threads: int, device: str = "auto",
                      formats: str = "GT,DS,GP", states: int | None = None) -> list[str]:
    states_args = ["--states", str(states)] if states is not None else []
    return [sys.executable, "-m", "spinimpute", "-q", "impute", "--target", str(target), "--model", str(model),
            "--out", str(output), "--threads", str(threads), "--device", device, "--format", formats, *states_args]


def beagle_bref3(ref: Path) -> list[str]:
    """Writes the bref3 file on stdout."""
    return ["java", "-jar", str(BREF3), str(ref)]


def beagle_impute(*, target: Path, bref: Path, prefix: Path, genetic_map: Path, threads: int,
                  gp: bool) -> list[str]:
    # gp=true: Beagle writes GP only when asked, and the calibration error needs it.
    return ["java", "-Xmx8g", "-jar", str(BEAGLE), f"gt={target}", f"ref={bref}", f"out={prefix}",
            f"map={genetic_map}", f"nthreads={threads}", *(["gp=true"] if gp else [])]


def minimac4_compress(*, ref: Path, msav: Path) -> list[str]:
    return ["minimac4", "--compress-reference", str(ref), "-o", str(msav)]


def minimac4_impute(*, target: Path, msav: Path, output: Path, genetic_map: Path, chrom: str, threads: int,
                    formats: str) -> list[str]:
    return ["minimac4", "-t", str(threads), "-f", formats, "-m", str(genetic_map), "--region", chrom,
            "-o", str(output), str(msav), str(target)]


def run(data: Path, out: Path, threads: int, steps: int | None, *, target: Path | None = None,
        model: Path | None = None, states: int | None = None, weights: Path | None = None) -> dict:
    """Prepare, impute and score with each tool on the data set in `data`; work in `out`.

    `target` replaces the data set's target.vcf.gz; with `model`, spinimpute imputes with that
    model file instead of training one (its prepare time is then not reported); `weights` is the
    network `spinimpute train --weights` starts from (default: the shipped one).
    """
    out.mkdir(parents=True, exist_ok=True)
    ref, truth = data / "ref.vcf.gz", data / "truth.vcf.gz"
    target = target or data / "target.vcf.gz"
    genetic_map = data / "map.txt"
    results = {}
    if model is None:
        model = out / "spin.model"
        prepare = timed(spinimpute_train(ref=ref, genetic_map=genetic_map, model=model, threads=threads, steps=steps,
                                         weights=weights),
                        out / "spin.train.log")
    else:
        prepare = {"wall_s": None, "cpu_s": None, "peak_rss_mb": None, "model": str(model)}
    results["spinimpute"] = {
        "prepare": prepare,
        "impute": timed(spinimpute_impute(target=target, model=model, output=out / "spin.vcf.gz",
                                          threads=threads, states=states), out / "spin.impute.log"),
        "output": out / "spin.vcf.gz",
    }
    results["beagle"] = {
        "prepare": timed(beagle_bref3(ref), out / "beagle.bref3.log", stdout=out / "ref.bref3"),
        "impute": timed(beagle_impute(target=target, bref=out / "ref.bref3", prefix=out / "beagle",
                                      genetic_map=genetic_map, threads=threads, gp=True),
                        out / "beagle.impute.log"),  # not beagle.log: Beagle writes that itself
        "output": out / "beagle.vcf.gz",
    }
    chrom = subprocess.run(["bcftools", "query", "-f", "%CHROM\n", str(target)], capture_output=True, text=True,
                           check=True).stdout.split("\n", 1)[0]
    results["minimac4"] = {
        "prepare": timed(minimac4_compress(ref=ref, msav=out / "ref.msav"), out / "minimac4.msav.log"),
        "impute": timed(minimac4_impute(target=target, msav=out / "ref.msav", output=out / "minimac4.vcf.gz",
                                        genetic_map=genetic_map, chrom=chrom, threads=threads, formats="GT,DS,GP"),
                        out / "minimac4.log"),
        "output": out / "minimac4.vcf.gz",
    }
    from spinimpute.tools.evaluate import evaluate

    for r in results.values():
        ev = evaluate(truth, r["output"], ref_path=ref, target_path=target, threads=threads)
        r["evaluation"] = ev.as_dict()
        r["output"] = str(r["output"])
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def thinned_target(target: Path, every: int, out: Path) -> Path:
    """The target with one typed site in `every` kept (a sparser array), bgzipped and indexed in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    rows = subprocess.run(["bcftools", "query", "-f", "%CHROM\t%POS\n", str(target)], capture_output=True, text=True,
                          check=True).stdout.splitlines()
    sites = out / "thinned_sites.tsv"
    sites.write_text("\n".join(rows[::every]) + "\n")
    path = out / "target.vcf.gz"
    subprocess.run(["bcftools", "view", "-T", str(sites), "-Oz", "-o", str(path), str(target)], check=True)
    subprocess.run(["tabix", "-f", "-p", "vcf", str(path)], check=True)
    return path


def unphased_target(target: Path, out: Path) -> Path:
    """The target with its genotypes written unphased (`_unphased`), bgzipped and indexed in `out`."""
    import gzip

    out.mkdir(parents=True, exist_ok=True)
    path = out / "target.unphased.vcf.gz"
    with gzip.open(target, "rt") as src, open(out / "target.unphased.vcf", "w") as dst:
        for line in src:
            if not line.startswith("#"):
                fields = line.rstrip("\n").split("\t")
                line = "\t".join(fields[:9] + [_unphased(f) for f in fields[9:]]) + "\n"
            dst.write(line)
    subprocess.run(["bgzip", "-f", str(out / "target.unphased.vcf")], check=True)
    subprocess.run(["tabix", "-f", "-p", "vcf", str(path)], check=True)
    return path


def _unphased(field: str) -> str:
    """A sample's FORMAT field with its GT unphased and sorted ('1|0' -> '0/1'): the written
    order must not carry the phase."""
    gt, sep, rest = field.partition(":")
    alleles = gt.replace("|", "/").split("/")
    if "." not in alleles:
        alleles.sort(key=int)
    return "/".join(alleles) + sep + rest


def _spread(values: list, digits: int) -> str:
    """mean ± sd (sd over runs, shown from two runs on); "-" where the tool gave no value."""
    if any(v is None for v in values):
        return "-"
    values = np.asarray(values, dtype=np.float64)
    mean = f"{np.mean(values):.{digits}f}"
    return f"{mean} ± {np.std(values, ddof=1):.{digits}f}" if len(values) > 1 else mean


def _r2_cell(stats: list[dict], digits: int = 3) -> str:
    """Aggregate r² as mean ± sd over runs, mean per-site r² in brackets, from one bin's stats per run."""
    site = np.mean([s["mean_site_r2"] for s in stats])
    return f"{_spread([s['aggregate_r2'] for s in stats], digits)} ({site:.2f})"


def table(runs: list[dict]) -> str:
    """A markdown table, one row per tool, of runs (results of `run`) on data sets of one kind.

    r² cells are the aggregate r² as mean ± sd over the runs with the mean of the mean
    per-site r² in brackets; the other cells are means (± sd) over the runs.
    """
    first = next(iter(runs[0].values()))["evaluation"]
    labels = [b["bin"] for b in first["bins"]]
    head = ["tool", *[f"r² {label}" for label in labels], "r² overall", "GP ECE", "GP ECE MAF ≤ 5%",
            "corr(DR2, true r²)", "prepare wall s", "impute wall s", "impute peak RSS MB"]
    # Targets given unphased: the tools' phase at the typed heterozygotes (phased targets keep theirs).
    phased_here = any(run[tool]["evaluation"].get("switch_error_rate") for run in runs for tool in run)
    if phased_here:
        head.insert(head.index("prepare wall s"), "switch error rate")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for tool in runs[0]:
        evs = [run[tool]["evaluation"] for run in runs]
        cells = [
            tool,
            *[_r2_cell([ev["bins"][i] for ev in evs]) for i in range(len(labels))],
            _r2_cell([ev["overall"] for ev in evs], 4),  # overall differences are small
            _spread([ev["overall"]["ece"] for ev in evs], 4),
            _spread([ev["ece_rare"] for ev in evs], 4),
            _spread([ev["dr2_correlation"] for ev in evs], 3),
            *([_spread([ev["switch_error_rate"] for ev in evs], 4)] if phased_here else []),
            _spread([run[tool]["prepare"]["wall_s"] for run in runs], 1),
            _spread([run[tool]["impute"]["wall_s"] for run in runs], 1),
            _spread([run[tool]["impute"]["peak_rss_mb"] for run in runs], 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def error_ratio_table(runs: list[dict], baseline: str = "beagle") -> str:
    """A markdown table of each tool's dosage error (1 - aggregate r², mean over runs) divided by
    `baseline`'s, per MAF bin and overall: below 1, fewer errors than the baseline."""
    first = next(iter(runs[0].values()))["evaluation"]
    labels = [b["bin"] for b in first["bins"]]

    def errors(tool: str) -> list[float]:
        evs = [run[tool]["evaluation"] for run in runs]
        per_bin = [np.mean([1 - ev["bins"][i]["aggregate_r2"] for ev in evs]) for i in range(len(labels))]
        return [*per_bin, np.mean([1 - ev["overall"]["aggregate_r2"] for ev in evs])]

    base = errors(baseline)
    head = ["tool", *[f"error ratio {label}" for label in labels], "error ratio overall"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for tool in runs[0]:
        if tool != baseline:
            ratios = [e / b if b > 0 else float("nan") for e, b in zip(errors(tool), base)]
            lines.append("| " + " | ".join([tool, *[f"{r:.3f}" for r in ratios]]) + " |")
    lines.append("| " + " | ".join([f"{baseline} (1 - r²)", *[f"{b:.5f}" for b in base]]) + " |")
    return "\n".join(lines)


def report(title: str, runs: list[dict], out: Path) -> None:
    """Print the tables of `runs` under `title` and write them to out/table.md."""
    legend = "aggregate dosage r² by reference MAF bin (mean per-site r² in brackets), untyped sites; mean ± sd over runs"
    ratio_legend = "dosage error (1 - aggregate r²) divided by Beagle's; below 1, fewer errors than Beagle"
    text = "\n".join([f"## {title}", "", legend, "", table(runs), "", ratio_legend, "", error_ratio_table(runs)])
    print(text + "\n", flush=True)
    (out / "table.md").write_text(text + "\n")


def main(argv=None) -> None:
    from spinimpute.tools.simulate import SCENARIOS, make_benchmark

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["sim", "real"])
    parser.add_argument("--scenario", default="clean", choices=[*SCENARIOS, "all"],
                        help="simulated scenario (sim only; default clean)")
    parser.add_argument("--seeds", "--seed", type=int, nargs="+", default=[1], help="simulation seeds (sim only)")
    parser.add_argument("--small", action="store_true",
                        help="small simulated data sets (100 + 20 samples, 200 kb) to check the flow quickly")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results",
                        help="folder for the runs (default benchmarks/results)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fine-tune", dest="steps", type=int,
                        help="spinimpute train --fine-tune steps (default: the CLI default, none)")
    parser.add_argument("--weights", type=Path, metavar="FILE",
                        help="spinimpute train --weights FILE (default: the shipped pretrained network); use another --out")
    parser.add_argument("--states", type=int, metavar="N",
                        help="spinimpute impute --states N (default: the model's, 400); use another --out")
    parser.add_argument("--thin", type=int, metavar="K",
                        help="real only: keep one typed site in K (a sparser array) and impute with the model "
                             "that `compare.py real` trained, without retraining; works in <out>/real-thinK")
    parser.add_argument("--unphased", action="store_true",
                        help="give the tools the target's genotypes unphased (see above); works in "
                             "<out>/real-unphased or <out>/<scenario>-unphased")
    args = parser.parse_args(argv)
    if args.thin and args.unphased:
        parser.error("--thin and --unphased are separate runs")
    for tool in ("java", "minimac4", "bcftools", "/usr/bin/time"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y beagle minimac4 bcftools tabix time")
    if args.dataset == "real":
        if not REAL.exists():
            sys.exit(f"real benchmark not found at {REAL}")
        out = args.out / "real"
        model = out / "spin.model"  # what `--thin` and `--unphased` impute with
        if (args.thin or args.unphased) and not model.exists():
            sys.exit(f"no model at {model}: run `python benchmarks/compare.py real` first")
        if args.thin:
            out = args.out / f"real-thin{args.thin}"
            target = thinned_target(REAL / "target.vcf.gz", args.thin, out / "data")
            report(f"real: {REAL.name}, one typed site in {args.thin}, spinimpute model trained once in real/",
                   [run(REAL, out, args.threads, args.steps, target=target, model=model, states=args.states)], out)
            return
        if args.unphased:
            out = args.out / "real-unphased"
            report(f"real: {REAL.name}, target unphased, spinimpute model trained once in real/",
                   [run(REAL, out, args.threads, args.steps, target=REAL / "target.unphased.vcf.gz", model=model,
                        states=args.states)],
                   out)
            return
        report(f"real: {REAL.name}",
               [run(REAL, out, args.threads, args.steps, states=args.states, weights=args.weights)], out)
        return
    for scenario in SCENARIOS if args.scenario == "all" else [args.scenario]:
        options = {**SCENARIOS[scenario], **(SMALL_SIZES if args.small else {})}
        phased_name = f"{scenario}-small" if args.small else scenario
        name = f"{phased_name}-unphased" if args.unphased else phased_name
        runs = []
        for seed in args.seeds:
            out = args.out / name / f"seed{seed}"
            summary = make_benchmark(out / "data", seed=seed, **options)
            print(json.dumps(summary), file=sys.stderr)
            if args.unphased:
                model = args.out / phased_name / f"seed{seed}" / "spin.model"  # the same panel's model
                runs.append(run(out / "data", out, args.threads, args.steps,
                                target=unphased_target(out / "data" / "target.vcf.gz", out / "data"),
                                model=model if model.exists() else None, states=args.states,
                                weights=args.weights))
            else:
                runs.append(run(out / "data", out, args.threads, args.steps, states=args.states,
                                weights=args.weights))
        seeds = " ".join(str(s) for s in args.seeds)
        settings = ", ".join(f"{key} {value}" for key, value in options.items())
        targets = ", target unphased" if args.unphased else ""
        report(f"{name}, seeds {seeds}: {summary['model']}; {settings}{targets}", runs, args.out / name)


if __name__ == "__main__":
    main()
