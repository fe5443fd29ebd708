"""What the network adds: the pretrained default beside the copying model alone and a fine-tuned network.

    python benchmarks/ablation_network.py RUN [RUN ...] [--fine-tune N] [--threads 2]

Each RUN is a folder `compare.py` left (it holds spin.model, spin.vcf.gz and results.json; the data set
is read from where that run read it). For each, the pretrained model's output is scored as compare.py
scored it; the same model with the corrections' weight set to 0 (the copying model alone) imputes the
same target; with --fine-tune N, `spinimpute train --fine-tune N` prepares the panel again from the
pretrained weights and imputes it. Prints one markdown row per run and variant: aggregate r² by MAF
bin and overall (mean per-site r² overall in brackets), GP ECE, the corrections' weight.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import spinimpute_impute, spinimpute_train, timed


def _score(output: Path, data: Path, target: Path, threads: int) -> dict:
    from spinimpute.tools.evaluate import evaluate

    return evaluate(data / "truth.vcf.gz", output, ref_path=data / "ref.vcf.gz", target_path=target,
                    threads=threads).as_dict()


def _row(name: str, variant: str, ev: dict, weight: float) -> str:
    bins = " | ".join(f"{b['aggregate_r2']:.4f}" for b in ev["bins"])
    overall = ev["overall"]
    ece = "-" if overall["ece"] is None else f"{overall['ece']:.4f}"
    return (f"| {name} | {variant} | {bins} | {overall['aggregate_r2']:.4f} ({overall['mean_site_r2']:.3f}) | {ece} "
            f"| {weight:.2f} |")


def main(argv=None) -> None:
    from spinimpute.io.modelfile import load_model, save_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--fine-tune", type=int)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    print("| data set | network | r² (0,0.5%] | (0.5,1%] | (1,5%] | (5,20%] | (20,50%] | overall (mean per-site) "
          "| GP ECE | corrections' weight |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        name = f"{run.parent.name}/{run.name}" if run.name.startswith("seed") else run.name
        spin = json.loads((run / "results.json").read_text())["spinimpute"]
        target, model = run_inputs(run)
        data = target.parent
        bundle = load_model(model)
        print(_row(name, "pretrained (default)", spin["evaluation"], bundle.config.refinement_weight), flush=True)
        alone = run / "spin.copying.model"
        save_model(alone, bundle.__class__(bundle.weights, bundle.config.replace(refinement_weight=0.0),
                                           {k: loaded_contig(c) for k, c in bundle.contigs.items()}, bundle.metadata))
        out = run / "spin.copying.vcf.gz"
        timed(spinimpute_impute(target=target, model=alone, output=out, threads=args.threads),
              run / "spin.copying.log")
        print(_row(name, "copying model alone", _score(out, data, target, args.threads), 0.0), flush=True)
        if args.fine_tune:
            tuned = run / f"spin.fine{args.fine_tune}.model"
            genetic_map = data / "map.txt"
            timed(spinimpute_train(ref=data / "ref.vcf.gz", genetic_map=genetic_map, model=tuned,
                                   threads=args.threads, steps=args.fine_tune), run / "spin.fine.train.log")
            out = run / f"spin.fine{args.fine_tune}.vcf.gz"
            timed(spinimpute_impute(target=target, model=tuned, output=out, threads=args.threads),
                  run / "spin.fine.impute.log")
            print(_row(name, f"fine-tuned {args.fine_tune} steps", _score(out, data, target, args.threads),
                       load_model(tuned).config.refinement_weight), flush=True)


def run_inputs(run: Path) -> tuple[Path, Path]:
    """The target and the model file of a run `compare.py` left in `run` (the data set is the target's folder)."""
    spin = json.loads((run / "results.json").read_text())["spinimpute"]
    # The target, from the command line its impute log starts with.
    first_line = (run / "spin.impute.log").read_text().splitlines()[0].split()
    target = Path(first_line[first_line.index("--target") + 1])
    return target, Path(spin["prepare"].get("model") or run / "spin.model")  # an unphased run reuses the phased model


def loaded_contig(contig):
    """A model file's contig with its packed haplotypes read into memory, to be written again."""
    import dataclasses

    import numpy as np

    return dataclasses.replace(contig, packed_haplotypes=np.asarray(contig.packed_haplotypes))


if __name__ == "__main__":
    main()
