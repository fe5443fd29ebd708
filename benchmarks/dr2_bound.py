"""How much of a gap in DR2 quality between tools lies in the estimator, and how much in the probabilities?

`compare.py` scores each tool's INFO r² estimate (DR2; Minimac4's R2) by its Pearson correlation with
the true per-site r² of the DS it wrote. Beside that score this script gives, for each tool and from
that tool's output alone:

- a cross-validated bound: the true per-site r² regressed by least squares on features of the tool's
  output at the site (its r² estimate, log10 panel MAF, and the largest, second largest and mean
  minor-allele dose and the shares of samples above 0.5 and 0.05, with their squares and their
  products with the r² estimate), fitted on half of the sites and scored on the other half, both
  ways, averaged over 5 random halvings. It reads the truth, so it is no estimator: it is what an
  estimator of that form could reach at best on these sites;
- a self-consistent correlation: each sample's genotype drawn from the tool's own GP, the per-site r²
  of the written DS against the draws, correlated with the tool's r² estimate (mean over 5 draws):
  what the score would be if the GP were exactly right.

A tool whose bound stays below another tool's score cannot catch up by a new formula over the same
output; its probabilities would have to change.

Reads the outputs `compare.py` left in benchmarks/results/; writes nothing but stdout and
benchmarks/results/dr2-bound.json:

    python benchmarks/dr2_bound.py real
    python benchmarks/dr2_bound.py sim --scenario all --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from spinimpute.tools.evaluate import _pearson, _per_site_r2, scored_sites
from spinimpute.tools.simulate import SCENARIOS

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
REAL = REPO.parent / "shared" / "data" / "1kgp3-eur-chr20" / "bench-omniexpress"
TOOLS = {"spinimpute": "spin.vcf.gz", "beagle": "beagle.vcf.gz", "minimac4": "minimac4.vcf.gz"}
HALVINGS = 5
DRAWS = 5


def site_features(ds: np.ndarray, maf: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """(n_sites, F) regressors from a tool's output: its r² estimate, log MAF, minor-allele dose summaries."""
    minor = np.where(ds.mean(axis=1, keepdims=True) > 1, 2 - ds, ds)
    top = np.sort(minor, axis=1)
    base = np.stack([estimate, np.log10(np.maximum(maf, 1e-4)), top[:, -1], top[:, -2], minor.mean(axis=1),
                     (minor > 0.5).mean(axis=1), (minor > 0.05).mean(axis=1)], axis=1)
    return np.concatenate([base, base**2, base[:, :1] * base[:, 1:]], axis=1)


def cross_validated_bound(features: np.ndarray, target: np.ndarray, seed: int = 0) -> float:
    """Mean over HALVINGS of the correlation of two-fold least-squares predictions with `target`."""
    rng = np.random.default_rng(seed)
    design = np.column_stack([np.ones(len(target)), features])
    scores = []
    for _ in range(HALVINGS):
        order = rng.permutation(len(target))
        halves = (order[: len(order) // 2], order[len(order) // 2 :])
        predicted = np.empty(len(target))
        for fit, score in (halves, halves[::-1]):
            coef = np.linalg.lstsq(design[fit], target[fit], rcond=None)[0]
            predicted[score] = design[score] @ coef
        scores.append(_pearson(predicted, target))
    return float(np.mean(scores))


def self_consistent(ds: np.ndarray, gp: np.ndarray, estimate: np.ndarray, seed: int = 0) -> float:
    """Mean over DRAWS of corr(estimate, per-site r² of DS) with genotypes drawn from the GP."""
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(gp / gp.sum(axis=2, keepdims=True), axis=2)
    scores = []
    for _ in range(DRAWS):
        u = rng.random(ds.shape)[..., None]
        drawn = (u > cumulative[..., :2]).sum(axis=2).astype(np.float64)
        r2 = _per_site_r2(ds, drawn)
        ok = ~np.isnan(r2)
        scores.append(_pearson(estimate[ok], r2[ok]))
    return float(np.mean(scores))


def score_output(truth: Path, ref: Path, target: Path, output: Path) -> dict:
    sites = scored_sites(truth, output, ref_path=ref, target_path=target, threads=2)
    poly = sites.maf > 0
    ds, tr, maf = sites.ds[poly], sites.truth[poly], sites.maf[poly]
    estimate = sites.r2_estimate[poly]
    r2 = _per_site_r2(ds, tr)
    ok = ~np.isnan(r2) & ~np.isnan(estimate)
    out = {"sites": int(ok.sum()), "score": _pearson(estimate[ok], r2[ok]),
           "bound": cross_validated_bound(site_features(ds[ok], maf[ok], estimate[ok]), r2[ok])}
    if sites.gp is not None:
        gp = sites.gp[poly]
        complete = ~np.isnan(gp).any(axis=(1, 2)) & ~np.isnan(estimate)
        out["self_consistent"] = self_consistent(ds[complete], gp[complete], estimate[complete])
    return out


def data_sets(args) -> list[tuple[str, Path, Path]]:
    """(name, results folder, data folder) of each data set asked for."""
    if args.command == "real":
        return [("real", RESULTS / "real", REAL)]
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    return [(f"{sc} seed {s}", RESULTS / sc / f"seed{s}", RESULTS / sc / f"seed{s}" / "data")
            for sc in scenarios for s in args.seeds]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("real")
    sim = sub.add_parser("sim")
    sim.add_argument("--scenario", default="all", choices=["all", *SCENARIOS])
    sim.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args(argv)

    results = {}
    print("| data set | tool | corr(estimate, true r²) | cross-validated bound | self-consistent |")
    print("|---|---|---|---|---|")
    for name, folder, data in data_sets(args):
        for tool, file in TOOLS.items():
            if not (folder / file).exists():
                sys.exit(f"dr2_bound: {folder / file} not found; run compare.py for {name} first")
            r = score_output(data / "truth.vcf.gz", data / "ref.vcf.gz", data / "target.vcf.gz", folder / file)
            results.setdefault(name, {})[tool] = r
            consistent = f"{r['self_consistent']:.4f}" if "self_consistent" in r else "-"
            print(f"| {name} | {tool} | {r['score']:.4f} | {r['bound']:.4f} | {consistent} |", flush=True)
    out = RESULTS / "dr2-bound.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**previous, **results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
