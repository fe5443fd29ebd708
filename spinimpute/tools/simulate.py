"""Seeded coalescent simulations for example data, tests and benchmarks (needs msprime).

`make_benchmark` writes a reference panel, a target typed at array-like sites, the truth
and the true genetic map, in the same layout as the real benchmark in ../shared/data.
Options make the data harder in the ways real data are: other demographies,
recombination hotspots, phase and genotype errors in the panel, genotyping errors in the
target, array density. `SCENARIOS` names the combinations the benchmarks use.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinimpute.io.bgzf import BgzfTextWriter


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


def bottleneck_demography():
    """A founder population: Ne 10,000, a bottleneck to 1,000 from 200 to 100 generations
    ago, then exponential growth to 100,000 today (long shared haplotypes, many rare variants)."""
    import msprime

    d = msprime.Demography()
    d.add_population(name="POP", initial_size=100_000, growth_rate=math.log(100_000 / 1_000) / 100)
    d.add_population_parameters_change(time=100, initial_size=1_000, growth_rate=0, population="POP")
    d.add_population_parameters_change(time=200, initial_size=10_000, population="POP")
    return d


@dataclass(frozen=True)
class DemographyChoice:
    """A demographic model and the population the samples come from."""

    model: Callable[[], object]  # returns an msprime.Demography
    population: str
    description: str


DEMOGRAPHIES = {
    "ooa_ceu": DemographyChoice(out_of_africa_demography, "CEU", "OutOfAfrica_3G09 (Gutenkunst 2009), CEU, msprime"),
    "ooa_yri": DemographyChoice(out_of_africa_demography, "YRI", "OutOfAfrica_3G09 (Gutenkunst 2009), YRI, msprime"),
    "bottleneck": DemographyChoice(bottleneck_demography, "POP",
                                   "Ne 10,000, bottleneck to 1,000 (200-100 generations ago), growth to 100,000"),
}

# Independent random streams, so that turning one option on leaves the others' draws alone.
_HOTSPOT_STREAM, _SWITCH_STREAM, _PANEL_ERROR_STREAM, _TARGET_ERROR_STREAM = 1, 2, 3, 4


def hotspot_rate_map(*, length: int, seed: int, mean_rate: float = 1e-8, hotspot_share: float = 0.8,
                     hotspot_width: int = 2_000, spacing: tuple[int, int] = (50_000, 100_000)):
    """A recombination map of narrow hotspots over a low background, as in human maps.

    A hotspot of `hotspot_width` bp starts after each gap drawn uniformly from `spacing`;
    hotspot intensities are exponentially distributed and together carry `hotspot_share`
    of the map length, and the mean rate is `mean_rate` per bp per generation. Breakpoints
    are whole base pairs (msprime's 0-based coordinates). With no room for a hotspot the
    map is uniform.

    Returns:
        msprime.RateMap over [0, length).
    """
    import msprime

    rng = np.random.default_rng([seed, _HOTSPOT_STREAM])
    length = int(length)
    starts = []
    cursor = 0
    while True:
        cursor += int(rng.integers(spacing[0], spacing[1] + 1))
        if cursor + hotspot_width > length:
            break
        starts.append(cursor)
        cursor += hotspot_width
    if not starts:
        return msprime.RateMap(position=[0, length], rate=[mean_rate])
    total = mean_rate * length
    weights = rng.exponential(size=len(starts))
    hot_rates = hotspot_share * total * weights / weights.sum() / hotspot_width
    background = (1 - hotspot_share) * total / (length - len(starts) * hotspot_width)
    position, rate = [0], []
    for start, hot in zip(starts, hot_rates):
        position += [start, start + hotspot_width]
        rate += [background, hot]
    position.append(length)
    rate.append(background)
    return msprime.RateMap(position=position, rate=rate)


def write_genetic_map(path, *, contig: str, rate_map) -> None:
    """Write a RateMap as a PLINK map (chrom, ., cM, bp), one row per breakpoint.

    Row bp are 1-based VCF positions: msprime coordinate x is VCF position x + 1.
    """
    breakpoints = np.asarray(rate_map.position)
    cm = 100 * rate_map.get_cumulative_mass(breakpoints)
    with open(path, "w") as out:
        out.writelines(f"{contig}\t.\t{c:.8f}\t{int(x) + 1}\n" for x, c in zip(breakpoints, cm))


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
    recombination_rate=1e-8,
    mutation_rate: float = 1.29e-8,
    demography=None,
) -> SimulatedHaplotypes:
    """Simulate diploid individuals and keep the biallelic sites.

    Args:
        population: the population sampled, in `demography`.
        recombination_rate: per bp per generation, a float or an msprime.RateMap over
            [0, length).
        demography: an msprime.Demography; default the Out-of-Africa model.
    """
    import msprime

    ts = msprime.sim_ancestry(
        samples={population: n_individuals},
        demography=demography if demography is not None else out_of_africa_demography(),
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


def array_sites(haplotypes: np.ndarray, positions: np.ndarray, fraction: float | None = None, *,
                n_sites: int | None = None) -> np.ndarray:
    """Indices of an array-like typed set: common SNPs (MAF >= 5 %) spread evenly by position.

    Give either `fraction` (of all sites) or `n_sites`; fewer come back where there are
    too few common SNPs.
    """
    if (fraction is None) == (n_sites is None):
        raise ValueError("give exactly one of fraction and n_sites")
    freq = haplotypes.mean(axis=1)
    maf = np.minimum(freq, 1 - freq)
    common = np.flatnonzero(maf >= 0.05)
    n = n_sites if n_sites is not None else max(1, round((fraction or 0.0) * len(positions)))
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


# Rows of sites written at a time.
_ROWS_PER_BLOCK = 256


def genotype_rows(contig: str, positions, refs, alts, haplotypes: np.ndarray, *, phased: bool = True,
                  info: list[str] | None = None) -> bytes:
    """VCF records (GT only) of a block of sites, their genotype columns built as one array: sample i's
    alleles are haplotypes 2i and 2i + 1; unphased heterozygotes are written 0/1."""
    sep = ord("|" if phased else "/")
    table = np.array([[48, sep, 48, 9], [48, sep, 49, 9], [49 if phased else 48, sep, 48 if phased else 49, 9],
                      [49, sep, 49, 9]], dtype=np.uint8)  # 0|0, 0|1, 1|0 (0/1 unphased), 1|1, each with a tab
    codes = haplotypes[:, 0::2].astype(np.intp) * 2 + haplotypes[:, 1::2]
    text = table[codes].reshape(len(codes), -1)
    text[:, -1] = ord("\n")
    return b"".join(
        f"{contig}\t{p}\t{contig}:{p}\t{r}\t{a}\t.\tPASS\t{info[i] if info else '.'}\tGT\t".encode() + row.tobytes()
        for i, (p, r, a, row) in enumerate(zip(positions, refs, alts, text)))


def vcf_header(contig: str, length: int, samples: list[str], *, info: bool = False) -> str:
    """The header `write_vcf` writes."""
    return "\n".join([
        "##fileformat=VCFv4.2",
        "##source=spinimpute.tools.simulate",
        f"##contig=<ID={contig},length={length}>",
        *(['##INFO=<ID=AF,Number=A,Type=Float,Description="ALT allele frequency">'] if info else []),
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples]),
    ]) + "\n"


def write_vcf(path, *, contig: str, positions, refs, alts, haplotypes: np.ndarray, samples: list[str],
              phased: bool = True, info: list[str] | None = None) -> None:
    """Write genotypes as an indexed, bgzipped VCF (GT only)."""
    import pysam

    with BgzfTextWriter(path) as out:
        out.write(vcf_header(contig, int(positions[-1]) + 1, samples, info=bool(info)))
        for lo in range(0, len(positions), _ROWS_PER_BLOCK):
            hi = lo + _ROWS_PER_BLOCK
            out.write(genotype_rows(contig, positions[lo:hi], refs[lo:hi], alts[lo:hi], haplotypes[lo:hi],
                                    phased=phased, info=info[lo:hi] if info else None))
    pysam.tabix_index(str(path), preset="vcf", force=True)


def add_switch_errors(haplotypes: np.ndarray, *, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Phase switch errors: at each heterozygous site, with probability `rate`, an
    individual's two haplotypes swap from that site on.

    Args:
        haplotypes: (n_sites, 2 * n_individuals) ALT indicators, individual i at 2i, 2i + 1.

    Returns:
        the switched copy and the number of switches.
    """
    first, second = haplotypes[:, 0::2], haplotypes[:, 1::2]
    switch = (first != second) & (rng.random(first.shape) < rate)
    swapped = np.cumsum(switch, axis=0) % 2 == 1
    out = haplotypes.copy()
    out[:, 0::2] = np.where(swapped, second, first)
    out[:, 1::2] = np.where(swapped, first, second)
    return out, int(switch.sum())


def add_genotype_errors(haplotypes: np.ndarray, *, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Genotype errors: with probability `rate` per genotype, flip one of its two alleles.

    Args:
        haplotypes: (n_sites, 2 * n_individuals) ALT indicators, individual i at 2i, 2i + 1.

    Returns:
        the changed copy and the number of genotypes changed.
    """
    n_sites, n_haplotypes = haplotypes.shape
    error = rng.random((n_sites, n_haplotypes // 2)) < rate
    which = rng.integers(0, 2, size=error.shape)  # the allele that flips
    flip = np.zeros(haplotypes.shape, dtype=bool)
    flip[:, 0::2] = error & (which == 0)
    flip[:, 1::2] = error & (which == 1)
    return np.where(flip, 1 - haplotypes, haplotypes).astype(haplotypes.dtype), int(error.sum())


_SIZES = {"n_ref": 500, "n_target": 100, "length": 1_000_000}
_HARD = {"hotspots": True, "panel_switch_rate": 0.005, "panel_error_rate": 0.001, "target_error_rate": 0.002}
# Named benchmark scenarios: make_benchmark keyword arguments other than out_dir and seed.
# OmniExpress types about 280 sites per Mb, the Global Screening Array about 200.
SCENARIOS = {
    "clean": {**_SIZES, "typed_fraction": 0.04},
    "hard-omni": {**_SIZES, **_HARD, "sites_per_mb": 280},
    "hard-gsa": {**_SIZES, **_HARD, "sites_per_mb": 200, "contig": "chr20"},
    "yri-omni": {**_SIZES, **_HARD, "sites_per_mb": 280, "demography": "ooa_yri"},
    "founder-omni": {**_SIZES, **_HARD, "sites_per_mb": 280, "demography": "bottleneck"},
}


def make_benchmark(
    out_dir,
    *,
    n_ref: int,
    n_target: int,
    length: float,
    seed: int,
    typed_fraction: float | None = None,
    sites_per_mb: float | None = None,
    contig: str = "20",
    demography: str = "ooa_ceu",
    hotspots: bool = False,
    panel_switch_rate: float = 0.0,
    panel_error_rate: float = 0.0,
    target_error_rate: float = 0.0,
) -> dict:
    """Write ref.vcf.gz, target.vcf.gz, truth.vcf.gz, map.txt and summary.json into out_dir.

    Sites are those polymorphic in the true panel; the typed (array) sites are chosen
    from the true panel's frequencies. Errors are added afterwards and only to the files
    they concern, so the truth and the site lists do not depend on them.

    Args:
        typed_fraction, sites_per_mb: array density as a fraction of all sites or as
            typed sites per Mb; give exactly one.
        contig: the CHROM written, e.g. "20" or "chr20".
        demography: a key of DEMOGRAPHIES.
        hotspots: recombination from `hotspot_rate_map`; otherwise uniform 1 cM/Mb.
            map.txt holds the true map either way.
        panel_switch_rate: phase switch errors in the panel, per heterozygous site.
        panel_error_rate: genotype errors in the panel, per genotype.
        target_error_rate: genotype errors at the target's typed sites, per genotype.

    Returns:
        the summary written to summary.json: every option and what came of it.
    """
    if (typed_fraction is None) == (sites_per_mb is None):
        raise ValueError("give exactly one of typed_fraction and sites_per_mb")
    if demography not in DEMOGRAPHIES:
        raise ValueError(f"unknown demography '{demography}'; choose from {', '.join(DEMOGRAPHIES)}")
    import msprime

    options = {
        "n_ref": n_ref, "n_target": n_target, "length": length, "seed": seed, "typed_fraction": typed_fraction,
        "sites_per_mb": sites_per_mb, "contig": contig, "demography": demography, "hotspots": hotspots,
        "panel_switch_rate": panel_switch_rate, "panel_error_rate": panel_error_rate,
        "target_error_rate": target_error_rate,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    choice = DEMOGRAPHIES[demography]
    if hotspots:
        rate_map = hotspot_rate_map(length=int(length), seed=seed)
    else:
        rate_map = msprime.RateMap(position=[0, int(length)], rate=[1e-8])
    sim = simulate_haplotypes(n_individuals=n_ref + n_target, length=length, seed=seed,
                              population=choice.population, demography=choice.model(),
                              # a float keeps the uniform simulations identical to earlier versions
                              recombination_rate=rate_map if hotspots else 1e-8)
    ref_haps = sim.haplotypes[:, : 2 * n_ref]
    polymorphic = np.flatnonzero((ref_haps.min(axis=1) == 0) & (ref_haps.max(axis=1) == 1))
    positions = sim.positions[polymorphic]
    refs = [sim.refs[i] for i in polymorphic]
    alts = [sim.alts[i] for i in polymorphic]
    haps = sim.haplotypes[polymorphic]
    ref_samples = [f"ref{i:04d}" for i in range(n_ref)]
    target_samples = [f"tgt{i:04d}" for i in range(n_target)]
    ref_haps, target_haps = haps[:, : 2 * n_ref], haps[:, 2 * n_ref :]
    if sites_per_mb is None:
        typed = array_sites(ref_haps, positions, typed_fraction)
    else:
        typed = array_sites(ref_haps, positions, n_sites=max(1, round(sites_per_mb * length / 1e6)))
    panel_haps, n_switches = add_switch_errors(
        ref_haps, rate=panel_switch_rate, rng=np.random.default_rng([seed, _SWITCH_STREAM]))
    panel_haps, n_panel_errors = add_genotype_errors(
        panel_haps, rate=panel_error_rate, rng=np.random.default_rng([seed, _PANEL_ERROR_STREAM]))
    typed_haps, n_target_errors = add_genotype_errors(
        target_haps[typed], rate=target_error_rate, rng=np.random.default_rng([seed, _TARGET_ERROR_STREAM]))

    info = [f"AF={f:.6g}" for f in panel_haps.mean(axis=1)]
    write_vcf(out / "ref.vcf.gz", contig=contig, positions=positions, refs=refs, alts=alts, haplotypes=panel_haps,
              samples=ref_samples, info=info)
    write_vcf(out / "truth.vcf.gz", contig=contig, positions=positions, refs=refs, alts=alts, haplotypes=target_haps,
              samples=target_samples)
    write_vcf(out / "target.vcf.gz", contig=contig, positions=positions[typed], refs=[refs[i] for i in typed],
              alts=[alts[i] for i in typed], haplotypes=typed_haps, samples=target_samples)
    write_genetic_map(out / "map.txt", contig=contig, rate_map=rate_map)
    n_hotspots = (rate_map.num_intervals - 1) // 2
    if n_hotspots:
        recombination = (f"{n_hotspots} hotspots of 2 kb carrying 80% of the map over a uniform background, "
                         "mean 1e-8 per bp per generation (1 cM/Mb)")
    else:
        recombination = "uniform 1e-8 per bp per generation (1 cM/Mb)"
    summary = {
        "model": choice.description,
        "seed": seed,
        "length_bp": length,
        "contig": contig,
        "n_ref_samples": n_ref,
        "n_target_samples": n_target,
        "n_sites_ref": len(positions),
        "n_sites_typed": len(typed),
        "typed_fraction": float(len(typed) / len(positions)),
        "typed_sites_per_mb": float(len(typed) / length * 1e6),
        "recombination": recombination,
        "n_hotspots": n_hotspots,
        "map_cM": float(100 * rate_map.total_mass),
        "panel_switches": n_switches,
        "panel_genotype_errors": n_panel_errors,
        "target_genotype_errors": n_target_errors,
        "options": options,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
