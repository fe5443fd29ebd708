"""Issue 24's lever "several switch rates averaged": the copying model run at a few switch rates, its
outputs mixed with equal weights, against the single run, as error ratios to Beagle.

    python benchmarks/switch_average.py RUN [RUN ...] [--factors 0.7 1 1.5] [--threads 2]

Each RUN is a folder `compare.py` left (spin.model, spin.vcf.gz, beagle.vcf.gz, results.json; the
data set is read from where that run read it). For each factor f the run's model is written again
with its effective population size (the switch rate) times f, and imputes the run's target; the
mixture of the runs is the mean of their DS and of their GP (the posterior of a model averaged over
the switch rates, with equal prior weights), scored over the same untyped sites as `compare.py`
scores. Prints, for each data set (the mean over its runs, e.g. seeds): aggregate r² by MAF bin and
overall, mean per-site r², GP ECE, and the dosage error (1 - aggregate r²) divided by Beagle's, for the
run's own output (factor 1, which --factors must hold), the mixture and Beagle's output. The mixture
costs one imputation per factor; it is a measurement, not an option of `spinimpute impute`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_network import loaded_contig, run_inputs
from compare import spinimpute_impute, timed


def _scores(ds: np.ndarray, truth: np.ndarray, maf: np.ndarray, gp: np.ndarray | None) -> list[dict]:
    """dosage_stats per MAF bin, then overall, over the polymorphic untyped sites."""
    from spinimpute.tools.evaluate import MAF_BINS, bin_label, dosage_stats

    masks = [(maf > lo) & (maf <= hi) for lo, hi in MAF_BINS] + [maf > 0]
    labels = [bin_label(lo, hi) for lo, hi in MAF_BINS] + ["overall"]
    return [dosage_stats(label, ds[m], truth[m], None if gp is None else gp[m]) for label, m in zip(labels, masks)]


def main(argv=None) -> None:
    import dataclasses

    from spinimpute.io.modelfile import load_model, save_model
    from spinimpute.tools.evaluate import scored_sites

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--factors", type=float, nargs="+", default=[0.7, 1.0, 1.5])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if 1.0 not in args.factors:
        parser.error("--factors must hold 1 (the run's own output, which the mixture is compared with)")
    errors: dict[str, dict[str, list]] = {}
    for run in args.runs:
        name = run.parent.name if run.name.startswith("seed") else run.name
        target, model = run_inputs(run)
        data = target.parent
        bundle = load_model(model)
        contigs = {k: loaded_contig(c) for k, c in bundle.contigs.items()}
        outputs = []
        for factor in args.factors:
            if factor == 1.0:
                outputs.append(run / "spin.vcf.gz")
                continue
            weights = {**bundle.weights, "log_ne": np.asarray(bundle.weights["log_ne"] + np.log(factor), np.float32)}
            scaled = run / f"spin.ne{factor:g}.model"
            save_model(scaled, dataclasses.replace(bundle, weights=weights, contigs=contigs))
            outputs.append(run / f"spin.ne{factor:g}.vcf.gz")
            timed(spinimpute_impute(target=target, model=scaled, output=outputs[-1], threads=args.threads),
                  run / f"spin.ne{factor:g}.log")
        kwargs = {"ref_path": data / "ref.vcf.gz", "target_path": target, "threads": args.threads}
        sites = [scored_sites(data / "truth.vcf.gz", out, **kwargs) for out in outputs]
        beagle = scored_sites(data / "truth.vcf.gz", run / "beagle.vcf.gz", **kwargs)
        single = sites[args.factors.index(1.0)]
        for s in sites:  # one model's outputs at the same sites (Beagle's are scored over its own)
            assert s.ds.shape == single.ds.shape and np.array_equal(s.maf, single.maf)
        mixed_ds = np.mean([s.ds for s in sites], axis=0)
        mixed_gp = None if any(s.gp is None for s in sites) else np.mean([s.gp for s in sites], axis=0)
        rows = {
            "single run": _scores(single.ds, single.truth, single.maf, single.gp),
            "mixture " + "/".join(f"{f:g}" for f in args.factors): _scores(mixed_ds, single.truth, single.maf, mixed_gp),
            "Beagle 5.4": _scores(beagle.ds, beagle.truth, beagle.maf, beagle.gp),
        }
        for variant, stats in rows.items():
            errors.setdefault(name, {}).setdefault(variant, []).append(stats)
    print("| data set (runs) | variant | (0,0.5%] | (0.5,1%] | (1,5%] | (5,20%] | (20,50%] | overall | mean per-site "
          "| GP ECE | error ratio to Beagle: bins | overall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, variants in errors.items():
        beagle_err = np.mean([[1 - b["aggregate_r2"] for b in stats] for stats in variants["Beagle 5.4"]], axis=0)
        for variant, runs in variants.items():
            r2 = np.mean([[b["aggregate_r2"] for b in stats] for stats in runs], axis=0)
            site = np.mean([stats[-1]["mean_site_r2"] for stats in runs])
            ece = np.mean([np.nan if stats[-1]["ece"] is None else stats[-1]["ece"] for stats in runs])
            ratio = (1 - r2) / beagle_err
            print(f"| {name} ({len(runs)}) | {variant} | " + " | ".join(f"{v:.4f}" for v in r2)
                  + f" | {site:.4f} | {ece:.4f} | " + " ".join(f"{v:.3f}" for v in ratio[:-1])
                  + f" | **{ratio[-1]:.3f}** |", flush=True)


if __name__ == "__main__":
    main()
