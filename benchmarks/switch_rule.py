"""The switch-rate fit with and without its two-standard-error rule, on tuning simulations.

    python benchmarks/switch_rule.py [--seeds 11 12 13] [--out /tmp/switch-rule]

For each scenario of `SCENARIOS` below and each seed (11-13 by default: not the benchmark's 1-3, so
that the rule is judged on data the benchmarks do not score), the panel is prepared twice with
`train_job` (the default, pretrained network): the held-out switch-rate factor kept only beyond two
standard errors (the rule `spinimpute train` uses), and kept whatever its t. Each imputes the target;
prints aggregate r² by MAF bin, overall, mean per-site r² and GP ECE, as means over seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SCENARIOS = ["hard-omni", "founder-omni", "yri-omni", "clean"]


def main(argv=None) -> None:
    import functools

    from spinimpute.jobs import impute_job, train_job
    from spinimpute.tools.evaluate import evaluate
    from spinimpute.tools.simulate import SCENARIOS as SETTINGS
    from spinimpute.tools.simulate import make_benchmark
    from spinimpute.training import trainer
    from spinimpute.training.trainer import TrainingOptions

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    parser.add_argument("--out", type=Path, default=Path("/tmp/switch-rule"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    fit = trainer.fit_switch_rate
    rows: dict[tuple[str, str], list] = {}
    for scenario in SCENARIOS:
        for seed in args.seeds:
            data = args.out / f"{scenario}-seed{seed}"
            if not (data / "summary.json").exists():
                make_benchmark(data, seed=seed, **SETTINGS[scenario])
            for name, min_t in (("two-SE rule", 2.0), ("no rule", 0.0)):
                trainer.fit_switch_rate = functools.partial(fit, min_t=min_t)  # what train_job's fit calls
                try:
                    model, out = data / f"{min_t:g}.spin", data / f"{min_t:g}.vcf.gz"
                    train_job(ref_path=data / "ref.vcf.gz", out_path=model, map_path=data / "map.txt",
                              options=TrainingOptions(seed=1), device="cpu", threads=args.threads, progress=False)
                    impute_job(target_path=data / "target.vcf.gz", model_path=model, out_path=out, device="cpu",
                               threads=args.threads, progress=False)
                finally:
                    trainer.fit_switch_rate = fit
                ev = evaluate(data / "truth.vcf.gz", out, ref_path=data / "ref.vcf.gz",
                              target_path=data / "target.vcf.gz", threads=args.threads)
                rows.setdefault((scenario, name), []).append(
                    [b["aggregate_r2"] for b in ev.bins] + [ev.overall["aggregate_r2"], ev.overall["mean_site_r2"],
                                                            ev.overall["ece"]])
    print("| scenario | switch-rate fit | (0,0.5%] | (0.5,1%] | (1,5%] | (5,20%] | (20,50%] | overall | mean per-site "
          "| GP ECE |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (scenario, name), values in rows.items():
        print(f"| {scenario} | {name} | " + " | ".join(f"{v:.4f}" for v in np.mean(values, axis=0)) + " |")


if __name__ == "__main__":
    main()
