"""Seeded coalescent simulations for example data, tests and benchmarks (needs msprime).

`make_benchmark` writes a reference panel, a target typed at array-like sites and the
truth, in the same layout as the real benchmark in ../shared/data.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinimpute.vcf import BgzfTextWriter


def out_of_africa_demography():
    """The three-population Out-of-Africa model of Gutenkunst et al. (2009), 25-year generations."""
    import msprime

    generation_time = 25
    n_a, n_b, n_af = 7300, 2100, 12300
    n_eu0, n_as0 = 1000, 510
    r_eu, r_as = 0.004, 0.0055
    t_af, t_b, t_eu_as = 220e3 / generation_time, 140e3 / generation_time, 21.2e3 / generation_time
    n_eu = n_eu0 / math.exp(-r_eu * t_eu_as)
    n_as = n_as0 / math.exp(-r_as * t_eu_as)
    d = msprime.Demography()
    d.add_population(name="YRI", initial_size=n_af)
    d.add_population(name="CEU", initial_size=n_eu, growth_rate=r_eu)
    d.add_population(name="CHB", initial_size=n_as, growth_rate=r_as)
    d.add_population(name="OOA", initial_size=n_b)
    d.add_population(name="AMH", initial_size=n_af)
    d.add_population(name="ANC", initial_size=n_a)
    d.set_symmetric_migration_rate(["YRI", "CEU"], 3e-5)
    d.set_symmetric_migration_rate(["YRI", "CHB"], 1.9e-5)
    d.set_symmetric_migration_rate(["CEU", "CHB"], 9.6e-5)
    d.add_population_split(time=t_eu_as, derived=["CEU", "CHB"], ancestral="OOA")
    d.add_symmetric_migration_rate_change(time=t_eu_as, populations=["YRI", "OOA"], rate=25e-5)
    d.add_population_split(time=t_b, derived=["YRI", "OOA"], ancestral="AMH")
    d.add_population_split(time=t_af, derived=["AMH"], ancestral="ANC")
    d.sort_events()
    return d


@dataclass
class SimulatedHaplotypes:
    """Biallelic sites of a simulation.

    Attributes:
        positions: (n_sites,) int64 1-based positions.
        refs, alts: alleles (ancestral and derived).
        haplotypes: (n_sites, 2 * n_individuals) uint8 ALT indicators.
    """

    positions: np.ndarray
    refs: list[str]
    alts: list[str]
    haplotypes: np.ndarray


def simulate_haplotypes(
    *,
    n_individuals: int,
    length: float,
    seed: int,
    population: str = "CEU",
    recombination_rate: float = 1e-8,
    mutation_rate: float = 1.29e-8,
) -> SimulatedHaplotypes:
    """Simulate diploid individuals under the Out-of-Africa model; keep biallelic sites."""
    import msprime

    ts = msprime.sim_ancestry(
        samples={population: n_individuals},
        demography=out_of_africa_demography(),
        sequence_length=length,
        recombination_rate=recombination_rate,
        ploidy=2,
        random_seed=seed,
    )
    ts = msprime.sim_mutations(ts, rate=mutation_rate, random_seed=seed + 1)
    positions, refs, alts, rows = [], [], [], []
    for variant in ts.variants():
        alleles = [a for a in variant.alleles if a is not None]
        g = variant.genotypes
        present = np.unique(g)
        if len(alleles) != 2 or len(present) != 2:
            continue
        positions.append(int(variant.site.position) + 1)
        refs.append(alleles[0])
        alts.append(alleles[1])
        rows.append((g == 1).astype(np.uint8))
    return SimulatedHaplotypes(np.asarray(positions, dtype=np.int64), refs, alts, np.stack(rows))


def array_sites(haplotypes: np.ndarray, positions: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of an array-like typed set: common SNPs (MAF >= 5 %) spread evenly by position."""
    freq = haplotypes.mean(axis=1)
    maf = np.minimum(freq, 1 - freq)
    common = np.flatnonzero(maf >= 0.05)
    n = max(1, int(round(fraction * len(positions))))
    if len(common) <= n:
        return common
    targets = np.linspace(positions[0], positions[-1], n)
    chosen = set()
    for t in targets:
        order = np.argsort(np.abs(positions[common] - t))
        for k in order:
            if common[k] not in chosen:
                chosen.add(int(common[k]))
                break
    return np.asarray(sorted(chosen), dtype=np.int64)


def write_vcf(path, *, contig: str, positions, refs, alts, haplotypes: np.ndarray, samples: list[str],
              phased: bool = True, info: list[str] | None = None) -> None:
    """Write genotypes as an indexed, bgzipped VCF (GT only)."""
    import pysam

    sep = "|" if phased else "/"
    header = [
        "##fileformat=VCFv4.2",
        "##source=spinimpute.simulate",
        f"##contig=<ID={contig},length={int(positions[-1]) + 1}>",
        *(['##INFO=<ID=AF,Number=A,Type=Float,Description="ALT allele frequency">'] if info else []),
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples]),
    ]
    texts = np.asarray([f"0{sep}0", f"0{sep}1", f"1{sep}0", f"1{sep}1"], dtype=object)
    with BgzfTextWriter(path) as out:
        out.write("\n".join(header) + "\n")
        for i in range(len(positions)):
            h = haplotypes[i].reshape(-1, 2).astype(np.int64)
            gts = texts[h[:, 0] * 2 + h[:, 1]]
            if not phased:
                gts = np.where(gts == "1/0", "0/1", gts)
            extra = info[i] if info else "."
            out.write(
                f"{contig}\t{positions[i]}\t{contig}:{positions[i]}\t{refs[i]}\t{alts[i]}\t.\tPASS\t{extra}\tGT\t"
                + "\t".join(gts)
                + "\n"
            )
    pysam.tabix_index(str(path), preset="vcf", force=True)


def make_benchmark(out_dir, *, n_ref: int, n_target: int, length: float, typed_fraction: float, seed: int,
                   contig: str = "20") -> dict:
    """Write ref.vcf.gz, target.vcf.gz, truth.vcf.gz and summary.json into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sim = simulate_haplotypes(n_individuals=n_ref + n_target, length=length, seed=seed)
    ref_haps = sim.haplotypes[:, : 2 * n_ref]
    polymorphic = np.flatnonzero((ref_haps.min(axis=1) == 0) & (ref_haps.max(axis=1) == 1))
    positions = sim.positions[polymorphic]
    refs = [sim.refs[i] for i in polymorphic]
    alts = [sim.alts[i] for i in polymorphic]
    haps = sim.haplotypes[polymorphic]
    ref_samples = [f"ref{i:04d}" for i in range(n_ref)]
    target_samples = [f"tgt{i:04d}" for i in range(n_target)]
    ref_haps, target_haps = haps[:, : 2 * n_ref], haps[:, 2 * n_ref :]
    freq = ref_haps.mean(axis=1)
    info = [f"AF={f:.6g}" for f in freq]
    write_vcf(out / "ref.vcf.gz", contig=contig, positions=positions, refs=refs, alts=alts, haplotypes=ref_haps,
              samples=ref_samples, info=info)
    write_vcf(out / "truth.vcf.gz", contig=contig, positions=positions, refs=refs, alts=alts, haplotypes=target_haps,
              samples=target_samples)
    typed = array_sites(ref_haps, positions, typed_fraction)
    write_vcf(out / "target.vcf.gz", contig=contig, positions=positions[typed], refs=[refs[i] for i in typed],
              alts=[alts[i] for i in typed], haplotypes=target_haps[typed], samples=target_samples)
    summary = {
        "model": "OutOfAfrica_3G09 (Gutenkunst 2009), CEU, msprime",
        "seed": seed,
        "length_bp": length,
        "n_ref_samples": n_ref,
        "n_target_samples": n_target,
        "n_sites_ref": int(len(positions)),
        "n_sites_typed": int(len(typed)),
        "typed_fraction": float(len(typed) / len(positions)),
        "recombination": "uniform 1e-8 per bp per generation (1 cM/Mb)",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
