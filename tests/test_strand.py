"""Orienting A/T and C/G SNPs near 50 % by linkage with their neighbours."""

import dataclasses
import gzip

import numpy as np
import pytest

from spinimpute.io import strand
from spinimpute.io.reading import read_panel, read_target
from spinimpute.target import MISSING


@pytest.fixture(scope="module")
def panel_and_target(small_benchmark):
    panel = read_panel(small_benchmark / "ref.vcf.gz")
    (name, contig), = panel.contigs.items()
    target = read_target(small_benchmark / "target.vcf.gz", {name: contig.sites})
    return name, contig, target.contigs[name]


def _flip(alleles):
    return np.where(alleles == MISSING, MISSING, 1 - alleles)


def test_correlations_with_neighbours_tell_the_strand(panel_and_target):
    _, contig, typed = panel_and_target
    freq = contig.haplotypes.mean(axis=1)[typed.site_index]
    common = np.flatnonzero(np.minimum(freq, 1 - freq) > 0.2)
    assert len(common) >= 10
    decided = 0
    for row in common:
        others = np.delete(np.arange(len(typed.site_index)), row)
        at = np.searchsorted(others, row)
        flanks = others[max(0, at - strand.FLANK_MARKERS) : at + strand.FLANK_MARKERS]
        args = (contig.haplotypes[typed.site_index[row]], contig.haplotypes[typed.site_index[flanks]])
        as_written = strand.linkage_orientation(*args, typed.alleles[row], typed.alleles[flanks])
        flipped = strand.linkage_orientation(*args, _flip(typed.alleles[row]), typed.alleles[flanks])
        assert as_written in (strand.KEEP, strand.UNDECIDED) and flipped == -as_written
        decided += as_written != strand.UNDECIDED
    assert decided >= 0.8 * len(common)


def test_too_few_samples_or_neighbours_decide_nothing(panel_and_target):
    _, contig, typed = panel_and_target
    site, flanks = typed.site_index[10], typed.site_index[11:14]
    panel = contig.haplotypes
    few_samples = strand.linkage_orientation(panel[site], panel[flanks], typed.alleles[10, :8], typed.alleles[11:14, :8])
    no_flanks = strand.linkage_orientation(panel[site], panel[flanks[:0]], typed.alleles[10], typed.alleles[11:11])
    assert few_samples == no_flanks == strand.UNDECIDED


def test_read_target_orients_palindromic_sites_by_linkage(panel_and_target, small_benchmark, tmp_path):
    """Common typed SNPs relabelled A/T in panel and target, half of them on the other strand
    in the target (genotypes inverted): the kept ones come back in panel orientation."""
    name, contig, typed = panel_and_target
    freq = contig.haplotypes.mean(axis=1)
    palindromic = {("A", "T"), ("T", "A"), ("C", "G"), ("G", "C")}
    chosen = [i for i in typed.site_index if 0.42 < freq[i] < 0.58
              and (contig.sites.refs[i], contig.sites.alts[i]) not in palindromic][:6]
    assert len(chosen) >= 4
    positions = {int(contig.sites.positions[i]) for i in chosen}
    refs, alts = list(contig.sites.refs), list(contig.sites.alts)
    for i in chosen:
        refs[i], alts[i] = "A", "T"
    sites = dataclasses.replace(contig.sites, refs=refs, alts=alts)
    inverted = set(sorted(positions)[::2])
    lines = []
    with gzip.open(small_benchmark / "target.vcf.gz", "rt") as source:
        for line in source:
            fields = line.rstrip("\n").split("\t")
            if not line.startswith("#") and int(fields[1]) in positions:
                fields[3:5] = ["A", "T"]
                if int(fields[1]) in inverted:
                    fields[9:] = [g.translate(str.maketrans("01", "10")) for g in fields[9:]]
            lines.append("\t".join(fields) + "\n")
    path = tmp_path / "palindromic.vcf"
    path.write_text("".join(lines))
    alt_freq = {name: freq}

    already = read_target(small_benchmark / "target.vcf.gz", {name: contig.sites}, alt_freq).counts
    n_ambiguous = already["ambiguous_dropped"] + len(chosen)  # the simulation's own A/T, C/G near 50 % too
    dropped = read_target(path, {name: sites}, alt_freq)
    assert dropped.counts["ambiguous_dropped"] == n_ambiguous

    oriented = read_target(path, {name: sites}, alt_freq,
                           panel_haplotypes=lambda contig_name, index: contig.haplotypes[index])
    counts, result = oriented.counts, oriented.contigs[name]
    assert counts["ambiguous_linkage"] + counts["ambiguous_dropped"] == n_ambiguous
    assert counts["ambiguous_linkage"] >= n_ambiguous - 1
    assert counts["matched"] + counts["ambiguous_dropped"] == counts["records"]
    flipped = [s for s in counts["ambiguous_sites"] if s.endswith("flipped by linkage")]
    assert {int(s.split(":")[1]) for s in flipped} == inverted
    # Every site kept has the true alleles, the inverted ones included.
    truth = dict(zip(typed.site_index.tolist(), typed.alleles))
    for i, alleles in zip(result.site_index, result.alleles):
        assert np.array_equal(alleles, truth[i])
