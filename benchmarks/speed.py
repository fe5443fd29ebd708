"""Speed and scale of spinimpute next to Minimac4 and Beagle 5.4 on simulated data.

Sections (name one or more; `all` runs them in this order):

    compare  the three tools on a 5 Mb region, 4,000 reference haplotypes (2,000 samples),
             200 targets: one-off prepare step (spinimpute train, Beagle bref3, Minimac4
             --compress-reference) and impute, each with wall s, CPU s and peak RSS MB, plus
             the aggregate dosage r² over untyped sites (spinimpute.tools.evaluate); imputed twice,
             every tool writing GT:DS (Beagle's and Minimac4's usual output) and every tool
             writing GT:DS:GP (spinimpute's default), so that each row writes what the others do
    panel    the three tools with 1,000 vs 4,000 reference haplotypes, same region and targets:
             prepare and impute time ratios (one spinimpute model per panel size), GT:DS:GP
    region   spinimpute impute wall s and peak RSS for a 5 Mb vs a 20 Mb region (GT:DS:GP)
    targets  spinimpute impute time for 50, 100 and 200 target samples (one model, GT:DS:GP)

    python benchmarks/speed.py SECTION... [--threads 2] [--out benchmarks/results/speed]
        [--fine-tune N] [--scale 1.0] [--seed 1] [--mutation-rate 5.5e-8] [--device cpu] [--repeats 3]

    python benchmarks/speed.py compare panel              # spinimpute train with its defaults
    python benchmarks/speed.py all --scale 0.05           # quick check of the whole script

Targets are typed at array density (280 sites per Mb, OmniExpress-like): common SNPs
spread evenly (spinimpute.tools.simulate.array_sites). One msprime simulation of the longest
region with the most samples is made and cached; every data set is a subset of it (the
first N reference samples, the first M targets, the first L bp), so the data sets nest.
`--scale` shrinks every region length and sample count (not the array density) for a quick
check. `--fine-tune` sets spinimpute train --fine-tune for every model of the invocation
(default: the CLI default, none, as the compare section asks); each table states the steps used.
A run is made once per invocation and shared by the sections that need it (the 5 Mb,
4,000-haplotype, 200-target run serves all four). Sections of earlier invocations are kept
in results.json, each with its own settings. Every run is under /usr/bin/time -v (each
impute run --repeats times in a row, the median wall time kept), with the
same thread count for each tool (spinimpute --threads, Beagle nthreads, Minimac4 -t), on
the CPU (spinimpute --device cpu unless --device says otherwise), and with a 1 cM/Mb
PLINK map (the simulation's recombination rate). Prints markdown tables and writes
results.json into --out; logs and outputs go under --out/runs, simulated data (cached)
under benchmarks/results/speed/data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare
from compare import timed

REPO = Path(__file__).resolve().parents[1]
# simulations are cached here whatever --out says; the folder names carry sizes, rate and seed
DATA = REPO / "benchmarks" / "results" / "speed" / "data"
CONTIG = "20"
ARRAY_SITES_PER_MB = 280
# Full-size settings of the issue; --scale multiplies the region lengths and sample counts.
REGIONS_MB = (5, 20)
PANEL_SAMPLES = (500, 2000)  # 1,000 and 4,000 haplotypes
TARGET_SAMPLES = (50, 100, 200)
SECTIONS = ("compare", "panel", "region", "targets")


def scaled(value: float, scale: float) -> int:
    return max(1, round(value * scale))


class Bench:
    """Data sets and tool runs shared by the sections; a run made for one section is reused by the next."""

    def __init__(self, args):
        self.args = args
        self.out = args.out
        self.threads = args.threads
        self.regions = {mb: scaled(mb * 1e6, args.scale) for mb in REGIONS_MB}
        self.panels = [scaled(n, args.scale) for n in PANEL_SAMPLES]
        self.targets = sorted({scaled(n, args.scale) for n in TARGET_SAMPLES})  # a tiny scale may merge counts
        self.data_summaries: dict[str, dict] = {}
        self._sim = None
        self._runs: dict[str, dict] = {}

    # ---- data ----------------------------------------------------------------

    def _sim_key(self) -> str:
        return (f"sim_L{max(self.regions.values())}_n{self.panels[-1] + self.targets[-1]}"
                f"_mu{self.args.mutation_rate:g}_seed{self.args.seed}")

    def simulation(self):
        """The one msprime simulation (longest region, most samples), cached as packed bits."""
        if self._sim is not None:
            return self._sim
        from spinimpute.tools.simulate import SimulatedHaplotypes, simulate_haplotypes

        cache = DATA / f"{self._sim_key()}.npz"
        if cache.exists():
            z = np.load(cache)
            haps = np.unpackbits(z["packed"], axis=1, count=int(z["n_haps"]))
            self._sim = SimulatedHaplotypes(z["positions"], list(z["refs"]), list(z["alts"]), haps)
            return self._sim
        cache.parent.mkdir(parents=True, exist_ok=True)
        n_individuals = self.panels[-1] + self.targets[-1]
        length = max(self.regions.values())
        start = time.perf_counter()
        sim = simulate_haplotypes(n_individuals=n_individuals, length=length, seed=self.args.seed,
                                  mutation_rate=self.args.mutation_rate)
        seconds = time.perf_counter() - start
        print(f"msprime: {length / 1e6:g} Mb, {n_individuals} samples, {len(sim.positions)} sites in "
              f"{seconds:.1f} s", file=sys.stderr)
        np.savez(cache, positions=sim.positions, refs=np.asarray(sim.refs), alts=np.asarray(sim.alts),
                 packed=np.packbits(sim.haplotypes, axis=1), n_haps=sim.haplotypes.shape[1],
                 msprime_seconds=seconds)
        self._sim = sim
        return sim

    def region(self, mb: int) -> Path:
        """Folder with ref<N>.vcf.gz per panel size, target<M>/truth<M>.vcf.gz per target count, plink.map."""
        length = self.regions[mb]
        folder = DATA / self._sim_key() / f"{length}bp"
        done = folder / "summary.json"
        if not done.exists():
            self._write_region(folder, length)
        self.data_summaries[f"{mb}Mb"] = json.loads(done.read_text())
        return folder

    def _write_region(self, folder: Path, length: int) -> None:
        import msprime

        from spinimpute.tools.simulate import array_sites, write_genetic_map, write_vcf

        sim = self.simulation()
        folder.mkdir(parents=True, exist_ok=True)
        in_region = np.flatnonzero(sim.positions <= length)
        n_big = self.panels[-1]
        target_haps = sim.haplotypes[in_region, 2 * n_big: 2 * (n_big + self.targets[-1])]
        summary = {"length_bp": length, "contig": CONTIG, "seed": self.args.seed,
                   "mutation_rate": self.args.mutation_rate, "recombination": "uniform 1e-8 (1 cM/Mb)",
                   "panels": {}}
        for n in self.panels:
            haps = sim.haplotypes[in_region, : 2 * n]
            # each panel keeps its own polymorphic sites; a smaller panel's sites are a subset
            poly = np.flatnonzero((haps.min(axis=1) == 0) & (haps.max(axis=1) == 1))
            rows = in_region[poly]
            write_vcf(folder / f"ref{n}.vcf.gz", contig=CONTIG, positions=sim.positions[rows],
                      refs=[sim.refs[i] for i in rows], alts=[sim.alts[i] for i in rows], haplotypes=haps[poly],
                      samples=[f"ref{i:04d}" for i in range(n)],
                      info=[f"AF={f:.6g}" for f in haps[poly].mean(axis=1)])
            summary["panels"][n] = {"haplotypes": 2 * n, "sites": len(poly)}
        # truth and typed sites follow the largest panel; its common SNPs are common in the smaller one too
        positions = sim.positions[rows]
        refs, alts = [sim.refs[i] for i in rows], [sim.alts[i] for i in rows]
        typed = array_sites(haps[poly], positions, ARRAY_SITES_PER_MB * length / 1e6 / len(positions))
        for m in self.targets:
            samples = [f"tgt{i:04d}" for i in range(m)]
            write_vcf(folder / f"truth{m}.vcf.gz", contig=CONTIG, positions=positions, refs=refs, alts=alts,
                      haplotypes=target_haps[poly, : 2 * m], samples=samples)
            write_vcf(folder / f"target{m}.vcf.gz", contig=CONTIG, positions=positions[typed],
                      refs=[refs[i] for i in typed], alts=[alts[i] for i in typed],
                      haplotypes=target_haps[poly][typed, : 2 * m], samples=samples)
        summary["typed_sites"] = len(typed)
        summary["typed_per_mb"] = round(len(typed) / (length / 1e6), 1)
        # The simulation's own map: uniform 1e-8 per bp, i.e. 1 cM/Mb, over the region.
        write_genetic_map(folder / "plink.map", contig=CONTIG, rate_map=msprime.RateMap.uniform(length + 1, 1e-8))
        (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")

    # ---- tool runs -----------------------------------------------------------

    def _timed(self, name: str, cmd: list[str], stdout: Path | None = None, repeats: int = 1) -> dict:
        """Run once per invocation: a later section asking for the same run gets the same figures.

        With `repeats`, the command runs that many times in a row and the run with the median
        wall time is kept (its CPU time and peak RSS with it; every wall time in wall_s_runs):
        this machine's speed drifts by a few tenths of a second between runs.
        """
        if name not in self._runs:
            log = self.out / "runs" / f"{name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            print(f"running {name}" + (f" ({repeats} times)" if repeats > 1 else ""), file=sys.stderr)
            runs = sorted((timed(cmd, log, stdout=stdout) for _ in range(repeats)), key=lambda r: r["wall_s"])
            self._runs[name] = {**runs[len(runs) // 2], "wall_s_runs": [r["wall_s"] for r in runs]}
        return self._runs[name]

    def _run_tag(self, mb: int, n_ref: int) -> str:
        """Runs folder of one region and panel, relative to --out/runs (named by the scaled length)."""
        (self.out / "runs" / f"{self.regions[mb]}bp" / f"ref{n_ref}").mkdir(parents=True, exist_ok=True)
        return f"{self.regions[mb]}bp/ref{n_ref}"

    def spin_model(self, mb: int, n_ref: int) -> tuple[dict, Path]:
        """Train (once) a model for this region and panel."""
        data = self.region(mb)
        steps = self.args.train_steps
        tag = f"{self._run_tag(mb, n_ref)}/spin.steps{steps if steps is not None else 'default'}"
        model = self.out / "runs" / f"{tag}.model"
        timing = self._timed(f"{tag}.train", compare.spinimpute_train(
            ref=data / f"ref{n_ref}.vcf.gz", genetic_map=data / "plink.map", model=model, threads=self.threads,
            steps=steps, device=self.args.device))
        return timing, model

    def spin_impute(self, mb: int, n_ref: int, n_target: int, gp: bool = True) -> tuple[dict, Path]:
        data = self.region(mb)
        _, model = self.spin_model(mb, n_ref)
        tag = model.with_suffix("").relative_to(self.out / "runs").as_posix() + f".target{n_target}{_fields(gp)}"
        output = self.out / "runs" / f"{tag}.vcf.gz"
        timing = self._timed(f"{tag}.impute", compare.spinimpute_impute(
            target=data / f"target{n_target}.vcf.gz", model=model, output=output, threads=self.threads,
            device=self.args.device, formats="GT,DS,GP" if gp else "GT,DS"), repeats=self.args.repeats)
        return timing, output

    def spinimpute(self, mb: int, n_ref: int, n_target: int, gp: bool = True) -> dict:
        prepare, _ = self.spin_model(mb, n_ref)
        impute, output = self.spin_impute(mb, n_ref, n_target, gp)
        return {"prepare": prepare, "impute": impute, "output": output}

    def beagle(self, mb: int, n_ref: int, n_target: int, gp: bool = True) -> dict:
        data = self.region(mb)
        tag = self._run_tag(mb, n_ref)
        bref = self.out / "runs" / tag / "ref.bref3"
        prepare = self._timed(f"{tag}/beagle.bref3", compare.beagle_bref3(data / f"ref{n_ref}.vcf.gz"), stdout=bref)
        prefix = self.out / "runs" / tag / f"beagle.target{n_target}{_fields(gp)}"
        impute = self._timed(f"{tag}/beagle.target{n_target}{_fields(gp)}.impute", compare.beagle_impute(
            target=data / f"target{n_target}.vcf.gz", bref=bref, prefix=prefix, genetic_map=data / "plink.map",
            threads=self.threads, gp=gp), repeats=self.args.repeats)
        return {"prepare": prepare, "impute": impute, "output": prefix.with_name(prefix.name + ".vcf.gz")}

    def minimac4(self, mb: int, n_ref: int, n_target: int, gp: bool = True) -> dict:
        data = self.region(mb)
        tag = self._run_tag(mb, n_ref)
        msav = self.out / "runs" / tag / "ref.msav"
        prepare = self._timed(f"{tag}/minimac4.msav",
                              compare.minimac4_compress(ref=data / f"ref{n_ref}.vcf.gz", msav=msav))
        output = self.out / "runs" / tag / f"minimac4.target{n_target}{_fields(gp)}.vcf.gz"
        impute = self._timed(f"{tag}/minimac4.target{n_target}{_fields(gp)}.impute", compare.minimac4_impute(
            target=data / f"target{n_target}.vcf.gz", msav=msav, output=output, genetic_map=data / "plink.map",
            chrom=CONTIG, threads=self.threads, formats="GT,DS,GP" if gp else "GT,DS"), repeats=self.args.repeats)
        return {"prepare": prepare, "impute": impute, "output": output}

    def tools(self, mb: int, n_ref: int, n_target: int, gp: bool = True) -> dict:
        """The three tools, each writing GT:DS:GP, or GT:DS without `gp`."""
        return {"spinimpute": self.spinimpute(mb, n_ref, n_target, gp), "beagle": self.beagle(mb, n_ref, n_target, gp),
                "minimac4": self.minimac4(mb, n_ref, n_target, gp)}

    def steps_label(self) -> str:
        from spinimpute.training.trainer import TrainingOptions

        steps = self.args.train_steps
        return f"{steps}" if steps is not None else f"{TrainingOptions().steps} (default)"


# ---- sections ----------------------------------------------------------------

def _fields(gp: bool) -> str:
    """Run-name suffix of the FORMAT fields written: none for GT:DS:GP, '.gtds' for GT:DS."""
    return "" if gp else ".gtds"


def markdown(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "n/a"


def section_compare(bench: Bench) -> tuple[dict, str]:
    from spinimpute.tools.evaluate import evaluate

    mb, n_ref, n_target = REGIONS_MB[0], bench.panels[-1], bench.targets[-1]
    data = bench.region(mb)
    results, rows = {}, []
    for gp in (False, True):
        fields = "GT:DS:GP" if gp else "GT:DS"
        for tool, r in bench.tools(mb, n_ref, n_target, gp).items():
            ev = evaluate(data / f"truth{n_target}.vcf.gz", r["output"], ref_path=data / f"ref{n_ref}.vcf.gz",
                          target_path=data / f"target{n_target}.vcf.gz", threads=bench.threads)
            r["r2_overall"] = ev.overall["aggregate_r2"]
            r["mean_site_r2_overall"] = ev.overall["mean_site_r2"]
            r["output"] = str(r["output"])
            r["output_mb"] = round(Path(r["output"]).stat().st_size / 1e6, 1)
            results[f"{tool} {fields}"] = r
            p, i = r["prepare"], r["impute"]
            rows.append([tool, fields, p["wall_s"], p["cpu_s"], p["peak_rss_mb"], i["wall_s"], i["cpu_s"],
                         i["peak_rss_mb"], r["output_mb"], f"{r['r2_overall']:.4f}"])
    summary = bench.data_summaries[f"{mb}Mb"]
    title = (f"### compare: {bench.regions[mb] / 1e6:g} Mb, {2 * n_ref} reference haplotypes "
             f"({summary['panels'][str(n_ref)]['sites']} sites), {n_target} targets "
             f"({summary['typed_sites']} typed sites), {bench.threads} threads, spinimpute train steps "
             f"{bench.steps_label()}")
    head = ["tool", "fields written", "prepare wall s", "prepare CPU s", "prepare peak RSS MB", "impute wall s",
            "impute CPU s", "impute peak RSS MB", "output MB", "r² overall (untyped)"]
    return results, title + "\n\n" + markdown(head, rows)


def section_panel(bench: Bench) -> tuple[dict, str]:
    mb, n_target = REGIONS_MB[0], bench.targets[-1]
    small, big = bench.panels
    results = {n: bench.tools(mb, n, n_target) for n in (small, big)}
    rows, ratio_rows = [], []
    for tool in results[big]:
        for n in (small, big):
            p, i = results[n][tool]["prepare"], results[n][tool]["impute"]
            rows.append([tool, 2 * n, p["wall_s"], p["cpu_s"], p["peak_rss_mb"], i["wall_s"], i["cpu_s"],
                         i["peak_rss_mb"]])
        s, b = results[small][tool], results[big][tool]
        ratio_rows.append([tool, ratio(b["prepare"]["wall_s"], s["prepare"]["wall_s"]),
                           ratio(b["impute"]["wall_s"], s["impute"]["wall_s"]),
                           ratio(b["impute"]["peak_rss_mb"], s["impute"]["peak_rss_mb"])])
    for by_tool in results.values():
        for r in by_tool.values():
            r["output"] = str(r["output"])
    title = (f"### panel: {2 * small} vs {2 * big} reference haplotypes, {bench.regions[mb] / 1e6:g} Mb, "
             f"{n_target} targets, {bench.threads} threads, spinimpute train steps {bench.steps_label()}")
    head = ["tool", "panel haplotypes", "prepare wall s", "prepare CPU s", "prepare peak RSS MB", "impute wall s",
            "impute CPU s", "impute peak RSS MB"]
    ratio_head = ["tool", f"prepare wall ratio {2 * big}/{2 * small}", f"impute wall ratio {2 * big}/{2 * small}",
                  f"impute peak RSS ratio {2 * big}/{2 * small}"]
    text = title + "\n\n" + markdown(head, rows) + "\n\n" + markdown(ratio_head, ratio_rows)
    return {str(2 * n): r for n, r in results.items()}, text


def section_region(bench: Bench) -> tuple[dict, str]:
    n_ref, n_target = bench.panels[-1], bench.targets[-1]
    results, rows = {}, []
    for mb in REGIONS_MB:
        r = bench.spinimpute(mb, n_ref, n_target)
        r["output"] = str(r["output"])
        r["sites"] = bench.data_summaries[f"{mb}Mb"]["panels"][str(n_ref)]["sites"]
        results[f"{mb}Mb"] = r
        i = r["impute"]
        rows.append([f"{bench.regions[mb] / 1e6:g}", r["sites"], r["prepare"]["wall_s"], i["wall_s"], i["cpu_s"],
                     i["peak_rss_mb"]])
    small, big = (results[f"{mb}Mb"] for mb in REGIONS_MB)
    rows.append([f"ratio {bench.regions[REGIONS_MB[1]] / 1e6:g}/{bench.regions[REGIONS_MB[0]] / 1e6:g}", ratio(big["sites"], small["sites"]),
                 ratio(big["prepare"]["wall_s"], small["prepare"]["wall_s"]),
                 ratio(big["impute"]["wall_s"], small["impute"]["wall_s"]),
                 ratio(big["impute"]["cpu_s"], small["impute"]["cpu_s"]),
                 ratio(big["impute"]["peak_rss_mb"], small["impute"]["peak_rss_mb"])])
    title = (f"### region: spinimpute, {2 * n_ref} reference haplotypes, {n_target} targets, "
             f"{bench.threads} threads, train steps {bench.steps_label()}")
    head = ["region Mb", "panel sites", "train wall s", "impute wall s", "impute CPU s", "impute peak RSS MB"]
    return results, title + "\n\n" + markdown(head, rows)


def section_targets(bench: Bench) -> tuple[dict, str]:
    mb, n_ref = REGIONS_MB[0], bench.panels[-1]
    results, rows = {}, []
    for m in bench.targets:
        timing, _ = bench.spin_impute(mb, n_ref, m)
        results[str(m)] = timing
        rows.append([m, timing["wall_s"], timing["cpu_s"], timing["peak_rss_mb"], f"{timing['wall_s'] / m:.3f}"])
    first, last = bench.targets[0], bench.targets[-1]
    # the slope separates the per-sample cost from the fixed cost of loading the model
    slope = (results[str(last)]["wall_s"] - results[str(first)]["wall_s"]) / max(1, last - first)
    title = (f"### targets: spinimpute impute, {bench.regions[mb] / 1e6:g} Mb, {2 * n_ref} reference haplotypes, "
             f"{bench.threads} threads, one model (train steps {bench.steps_label()})")
    head = ["target samples", "impute wall s", "impute CPU s", "impute peak RSS MB", "wall s per sample"]
    text = (title + "\n\n" + markdown(head, rows)
            + f"\n\nmarginal wall s per added sample ({first} to {last}): {slope:.3f}")
    return {"by_targets": results, "marginal_wall_s_per_sample": slope}, text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="+", choices=[*SECTIONS, "all"], metavar="SECTION",
                        help=f"one or more of {', '.join(SECTIONS)}, or all")
    parser.add_argument("--threads", type=int, default=2, help="threads for every tool (default 2)")
    parser.add_argument("--out", type=Path,
                        help="working folder (default benchmarks/results/speed, or speed-scale<S> with --scale S)")
    parser.add_argument("--fine-tune", dest="train_steps", type=int,
                        help="spinimpute train --fine-tune steps for every model of this run (default: the CLI "
                             "default, none)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply region lengths and sample counts by this, for a quick check (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    # 5.5e-8 gives the issue's ~115,000 sites in 5 Mb for 4,000 haplotypes (the density of
    # 1000 Genomes, which the Out-of-Africa CEU model with 1.29e-8 undershoots fourfold).
    parser.add_argument("--mutation-rate", type=float, default=5.5e-8,
                        help="msprime mutation rate per bp per generation (default 5.5e-8: ~115,000 sites in 5 Mb)")
    parser.add_argument("--device", choices=["cpu", "auto", "cuda"], default="cpu",
                        help="spinimpute --device (default cpu, like the peers)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each impute command, the median wall time reported (default 3)")
    args = parser.parse_args(argv)
    for tool in ("java", "minimac4", "bcftools", "/usr/bin/time"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y beagle minimac4 bcftools tabix time")
    # a quick check at another scale must not overwrite the full-size results
    default_out = REPO / "benchmarks" / "results" / ("speed" if args.scale == 1 else f"speed-scale{args.scale:g}")
    args.out = (args.out or default_out).resolve()
    bench = Bench(args)
    settings = {"threads": args.threads, "scale": args.scale, "seed": args.seed, "impute_repeats": args.repeats,
                "mutation_rate": args.mutation_rate, "device": args.device,
                "train_steps": bench.steps_label(),
                "regions_bp": bench.regions, "panel_haplotypes": [2 * n for n in bench.panels],
                "target_samples": bench.targets, "array_sites_per_mb": ARRAY_SITES_PER_MB,
                "cpus": len(os.sched_getaffinity(0)), "cpu": cpu_model(),
                "minimac4": subprocess.run(["minimac4", "--version"], capture_output=True, text=True,
                                           check=False).stdout.split("\n")[0]}
    # sections run by earlier invocations stay in results.json; each carries its own settings
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    sections = {"compare": section_compare, "panel": section_panel, "region": section_region,
                "targets": section_targets}
    for name in SECTIONS if "all" in args.sections else dict.fromkeys(args.sections):
        figures, text = sections[name](bench)
        results[name] = {"settings": settings, "data": dict(bench.data_summaries), "results": figures}
        results_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
        print(text + "\n", flush=True)
    print(f"results: {results_path}", file=sys.stderr)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
