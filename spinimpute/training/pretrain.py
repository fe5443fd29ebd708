"""Pretraining the network once, on simulated panels, so that preparing a panel takes no training.

    python -m spinimpute.training.pretrain [--steps 6000] [--out spinimpute/model/pretrained.safetensors]
        [--work DIR] [--threads 2] [--seed 1] [--init WEIGHTS --draws-seed 2]

The panels (`PANELS`) vary what real panels vary: demography (an out-of-Africa European and
African population, a founder population), panel size (300 to 4,000 haplotypes), recombination
(uniform, or hotspots), and the panel's own phase and genotype errors; the array density of each
training step's pseudo-targets is drawn from 1-10 % of sites (`TrainingOptions`). They are
simulated with seeds that no benchmark uses, and neither the real benchmark panel nor any
benchmark target is read: the real panel is the test of how the network transfers. Held-out
individuals of every panel measure the network before and after. The weights, with these
settings and that evidence, are written as safetensors plus JSON (`spinimpute.io.modelfile.
save_weights`), which `spinimpute train` reads by default. `--init` trains a network further
from its weights (a new warm-up and decay of the learning rate); give it another `--draws-seed`, so
that the steps draw new windows and pseudo-targets while the same individuals stay held out.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from spinimpute.engine.torch_backend import configure_torch, network_from_weights
from spinimpute.io.genmap import read_genetic_map
from spinimpute.io.modelfile import PRETRAINED_WEIGHTS, load_weights, save_weights
from spinimpute.io.reading import read_panel
from spinimpute.model.config import ModelConfig
from spinimpute.model.network import SpinImputer
from spinimpute.panel import ReferenceContig
from spinimpute.tools.simulate import make_benchmark
from spinimpute.training.trainer import TrainingOptions, build_reference, train

log = logging.getLogger(__name__)

# make_benchmark settings of each training panel (its target files are not read). Seeds from
# 1001 on: the benchmarks' simulations use seeds 1-3 (compare.py) and 1 (speed.py).
_ERRORS = {"panel_switch_rate": 0.005, "panel_error_rate": 0.001}
PANELS: list[dict[str, Any]] = [
    {"demography": "ooa_ceu", "n_ref": 150, "length": 1_000_000, "hotspots": False},
    {"demography": "ooa_ceu", "n_ref": 500, "length": 1_000_000, "hotspots": True, **_ERRORS},
    {"demography": "ooa_ceu", "n_ref": 2000, "length": 500_000, "hotspots": True},
    {"demography": "ooa_yri", "n_ref": 300, "length": 1_000_000, "hotspots": True, **_ERRORS},
    {"demography": "ooa_yri", "n_ref": 1000, "length": 500_000, "hotspots": False},
    {"demography": "bottleneck", "n_ref": 250, "length": 1_000_000, "hotspots": True, **_ERRORS},
    {"demography": "bottleneck", "n_ref": 1000, "length": 500_000, "hotspots": True},
    {"demography": "ooa_ceu", "n_ref": 1000, "length": 1_000_000, "hotspots": True, **_ERRORS},
]
FIRST_SEED = 1001
# Optimiser steps of each run of the shipped network, chosen on its held-out loss (BENCHMARKS.md): a run
# with the defaults, then a run `--init` from its weights with `--draws-seed 2` (12,000 steps in all).
STEPS = 6000
WINDOW_SITES, FLANK_SITES = 2000, 1000  # as `spinimpute train` lays panels out


def simulated_panels(work: Path, *, threads: int) -> list[dict[str, ReferenceContig]]:
    """The training panels, simulated into `work` (reused when already there)."""
    panels = []
    for k, settings in enumerate(PANELS):
        folder = work / f"panel{k}"
        if not (folder / "summary.json").exists():
            make_benchmark(folder, seed=FIRST_SEED + k, n_target=10, typed_fraction=0.05, **settings)
        panel = read_panel(folder / "ref.vcf.gz", threads=threads)
        panels.append(build_reference(panel, read_genetic_map(folder / "map.txt"), core=WINDOW_SITES,
                                      flank=FLANK_SITES))
        log.info("panel %d: %s, %d haplotypes, %d sites", k, settings["demography"],
                 2 * len(panel.samples), sum(len(c.sites) for c in panel.contigs.values()))
    return panels


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--out", type=Path, default=PRETRAINED_WEIGHTS)
    parser.add_argument("--work", type=Path, help="folder for the simulated panels (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1, help="seed of the held-out split and validation")
    parser.add_argument("--draws-seed", type=int, help="seed of the training steps' draws (default: --seed)")
    parser.add_argument("--init", type=Path, help="weights to train further (default: a new network)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="pretrain: %(message)s")
    start = time.time()
    configure_torch(args.threads, args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        panels = simulated_panels(work, threads=args.threads)
        simulated = time.time() - start
        config = ModelConfig()
        init = load_weights(args.init) if args.init else None
        if init is not None and init.config != config:
            raise SystemExit(f"pretrain: {args.init} has other hyperparameters than this version's defaults")
        network = SpinImputer(config) if init is None else network_from_weights(init.weights, config)
        options = TrainingOptions(steps=args.steps, seed=args.seed, draws_seed=args.draws_seed, validation_windows=2)
        summary = train(network, panels, options, device="cpu")
    log.info("held-out individuals: before r2 %.4f loss %.5f, after r2 %.4f loss %.5f (%s kept)",
             summary["validation_before"]["r2"], summary["validation_before"]["loss"],
             summary["validation_after"]["r2"], summary["validation_after"]["loss"], summary["kept"])
    seconds = round(time.time() - start, 1)
    metadata = {
        "pretraining": {
            "command": "python -m spinimpute.training.pretrain " + " ".join(sys.argv[1:] if argv is None else argv),
            "panels": [{"seed": FIRST_SEED + k, **settings} for k, settings in enumerate(PANELS)],
            "summary": summary,
            "initialised_from": None if init is None else {"sha256": init.sha256,
                                                           "pretraining": init.metadata.get("pretraining")},
            "seconds_simulating": round(simulated, 1),
            "seconds": seconds,
            "machine": f"{platform.machine()}, {args.threads} threads",
        },
    }
    weights = {k: v.detach().cpu().numpy() for k, v in network.state_dict().items()}
    save_weights(args.out, weights, config, metadata)
    log.info("wrote %s in %.0f s", args.out, seconds)


if __name__ == "__main__":
    main()
