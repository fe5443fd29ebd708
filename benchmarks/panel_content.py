"""A panel with the content of a real one (indels, symbolic SVs, multiallelic records, '*' alleles, a
repeated record) side by side with Beagle 5.4 and Minimac4.

    python benchmarks/panel_content.py [--threads 2] [--out benchmarks/results/content]

One simulation (`spinimpute.simulate.make_benchmark`: 1,000 panel and 100 target samples, 2 Mb,
OmniExpress density, seed 5); among the untyped records of the panel and of the truth, in turn: an
insertion (ALT = REF + "TT"), a deletion (REF + "GG" -> REF), a symbolic deletion (`<DEL>`, with
SVTYPE and END), a second ALT carried by every other carrier of the first (a true multiallelic record)
and an ALT plus '*'; one panel record is written twice. The genotypes of the biallelic edits do not
change; the multiallelic ones change the same way in the panel and the truth. Each tool prepares the
panel (Beagle and Minimac4 after `bcftools norm -d exact`, as Beagle stops at the repeated record) and
imputes the targets (GT:DS:GP); the script counts each tool's output records by kind and
scores the biallelic ones (`spinimpute evaluate` skips multiallelic records) overall and per kind.
Prints markdown tables and writes results.json into --out.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare
from compare import timed

REPO = Path(__file__).resolve().parents[1]
EDITS = ("insertion", "deletion", "symbolic", "multiallelic", "star")
EVERY = 4  # one untyped record in EVERY is edited


def _second_alt(genotypes: list[str]) -> list[str]:
    """Every other carrier of ALT 1 (in sample then haplotype order) carries ALT 2 instead."""
    out, flip = [], False
    for field in genotypes:
        alleles = []
        for allele in field.split("|"):
            if allele == "1":
                flip = not flip
                allele = "2" if flip else "1"
            alleles.append(allele)
        out.append("|".join(alleles))
    return out


def edit_record(fields: list[str], kind: str) -> list[str]:
    ref, alt = fields[3], fields[4]
    fields = list(fields)
    if kind == "insertion":
        fields[4] = ref + "TT"
    elif kind == "deletion":
        fields[3] = ref + "GG"
        fields[4] = ref
    elif kind == "symbolic":
        fields[4] = "<DEL>"
        fields[7] = f"SVTYPE=DEL;END={int(fields[1]) + 50}"
    elif kind == "multiallelic":
        fields[4] = f"{alt},{next(b for b in 'ACGT' if b not in (ref, alt))}"
        fields[9:] = _second_alt(fields[9:])
    elif kind == "star":
        fields[4] = f"{alt},*"
    return fields


def make_data(folder: Path) -> dict:
    """The simulated benchmark with the edits (once; summary.json marks it complete)."""
    import pysam

    from spinimpute.tools.simulate import make_benchmark

    done = folder / "summary.json"
    if done.exists():
        return json.loads(done.read_text())
    plain = folder / "plain"
    make_benchmark(plain, n_ref=1000, n_target=100, length=2e6, seed=5, sites_per_mb=280)
    with gzip.open(plain / "target.vcf.gz", "rt") as handle:
        typed = {line.split("\t", 2)[1] for line in handle if not line.startswith("#")}
    with gzip.open(plain / "ref.vcf.gz", "rt") as handle:
        untyped = [line.split("\t", 2)[1] for line in handle if not line.startswith("#")
                   and line.split("\t", 2)[1] not in typed]
    kind_of = {pos: EDITS[i % len(EDITS)] for i, pos in enumerate(untyped[::EVERY])}
    repeated = untyped[1]
    for name in ("ref", "truth"):
        lines = []
        with gzip.open(plain / f"{name}.vcf.gz", "rt") as handle:
            for line in handle:
                if line.startswith("#CHROM"):
                    lines.append('##INFO=<ID=SVTYPE,Number=1,Type=String,Description="Type of structural variant">\n')
                    lines.append('##INFO=<ID=END,Number=1,Type=Integer,Description="End position">\n')
                    lines.append('##ALT=<ID=DEL,Description="Deletion">\n')
                if line.startswith("#"):
                    lines.append(line)
                    continue
                fields = line.rstrip("\n").split("\t")
                if fields[1] in kind_of:
                    fields = edit_record(fields, kind_of[fields[1]])
                lines.append("\t".join(fields) + "\n")
                if name == "ref" and fields[1] == repeated:
                    lines.append(lines[-1])
        (folder / f"{name}.vcf").write_text("".join(lines))
        pysam.tabix_compress(str(folder / f"{name}.vcf"), str(folder / f"{name}.vcf.gz"), force=True)
        (folder / f"{name}.vcf").unlink()
        pysam.tabix_index(str(folder / f"{name}.vcf.gz"), preset="vcf", force=True)
    for name in ("target.vcf.gz", "target.vcf.gz.tbi", "map.txt"):
        (folder / name).write_bytes((plain / name).read_bytes())
    with gzip.open(folder / "ref.vcf.gz", "rt") as handle:
        records = sum(1 for line in handle if not line.startswith("#"))
    summary = {"edited": dict(Counter(kind_of.values())), "repeated_record": int(repeated), "panel_records": records,
               "kind_of": kind_of}
    done.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def output_kinds(path: Path, kind_of: dict[str, str]) -> Counter:
    """A tool's output records: those at an edited position by its edit, the rest as SNPs."""
    counts: Counter = Counter()
    with gzip.open(path, "rt") as handle:
        for line in handle:
            if not line.startswith("#"):
                counts[kind_of.get(line.split("\t", 2)[1], "snp")] += 1
    return counts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "content")
    args = parser.parse_args(argv)
    from spinimpute.io.modelfile import load_model
    from spinimpute.tools.evaluate import evaluate

    data = args.out / "data"
    data.mkdir(parents=True, exist_ok=True)
    summary = make_data(data)
    kind_of = summary["kind_of"]
    runs = args.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    ref, target, genetic_map = data / "ref.vcf.gz", data / "target.vcf.gz", data / "map.txt"
    # Beagle 5.4 stops at the repeated record ("Duplicate marker"): the peers get the panel as their users
    # must give it, without the repeat (bcftools norm -d exact); spinimpute reads the file as it is.
    peer_ref = data / "ref.norm.vcf.gz"
    if not peer_ref.exists():
        subprocess.run(["bcftools", "norm", "-d", "exact", "-Oz", "-o", str(peer_ref), str(ref)], check=True,
                       capture_output=True)
    results: dict = {"data": {k: v for k, v in summary.items() if k != "kind_of"}}
    steps = [
        ("spinimpute",
         lambda: timed(compare.spinimpute_train(ref=ref, genetic_map=genetic_map, model=runs / "spin.model",
                                                threads=args.threads), runs / "spin.train.log"),
         lambda: timed(compare.spinimpute_impute(target=target, model=runs / "spin.model", output=runs / "spin.vcf.gz",
                                                 threads=args.threads), runs / "spin.impute.log"),
         runs / "spin.vcf.gz"),
        ("beagle",
         lambda: timed(compare.beagle_bref3(peer_ref), runs / "beagle.bref3.log", stdout=runs / "ref.bref3"),
         lambda: timed(compare.beagle_impute(target=target, bref=runs / "ref.bref3", prefix=runs / "beagle",
                                             genetic_map=genetic_map, threads=args.threads, gp=True),
                       runs / "beagle.impute.log"),
         runs / "beagle.vcf.gz"),
        ("minimac4",
         lambda: timed(compare.minimac4_compress(ref=peer_ref, msav=runs / "ref.msav"), runs / "minimac4.msav.log"),
         lambda: timed(compare.minimac4_impute(target=target, msav=runs / "ref.msav", output=runs / "minimac4.vcf.gz",
                                               genetic_map=genetic_map, chrom="20", threads=args.threads,
                                               formats="GT,DS,GP"), runs / "minimac4.impute.log"),
         runs / "minimac4.vcf.gz"),
    ]
    for tool, prepare, impute, output in steps:
        print(f"{tool}: prepare, impute", file=sys.stderr)
        results[tool] = {"prepare": prepare(), "impute": impute(), "records": dict(output_kinds(output, kind_of))}
        ev = evaluate(data / "truth.vcf.gz", output, ref_path=ref, target_path=target, threads=args.threads)
        results[tool]["r2_overall"] = ev.overall["aggregate_r2"]
    results["spinimpute"]["reference_records"] = load_model(runs / "spin.model").metadata["reference_records"]
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    kinds = ["snp", *EDITS]
    print(f"\npanel: {summary['panel_records']} records; edited {summary['edited']}; record at "
          f"{summary['repeated_record']} written twice\n")
    print("| tool | prepare wall s | impute wall s | " + " | ".join(f"{k} records out" for k in kinds)
          + " | r² overall (biallelic) |")
    print("|---" * (4 + len(kinds)) + "|")
    for tool in ("spinimpute", "beagle", "minimac4"):
        r = results[tool]
        print(f"| {tool} | {r['prepare']['wall_s']} | {r['impute']['wall_s']} | "
              + " | ".join(str(r["records"].get(k, 0)) for k in kinds) + f" | {r['r2_overall']:.4f} |")
    print(f"\nspinimpute's count of the panel's records: {results['spinimpute']['reference_records']}")


if __name__ == "__main__":
    main()
