"""Target genotypes in memory, at the panel sites they share (numpy, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

MISSING = -1  # allele code for a missing target allele


@dataclass
class TargetContig:
    """Target haplotypes at the panel sites they share.

    Attributes:
        site_index: (n_typed,) int64 indices into the panel contig's sites, increasing.
        alleles: (n_typed, n_haplotypes) int8 ALT indicators in panel orientation,
            MISSING where the genotype is missing.
        unphased: (n_typed, n_samples) bool, heterozygous genotypes whose phase is
            unknown (written with '/'); their alleles are in written order until phased.
        haploid: (n_typed, n_samples) bool, haploid calls (both slots hold the allele).
        n_draws: phasings drawn beside the one in `alleles` (`spinimpute.engine.phasing.phase_contig`).
        draw_switches: (n, 3) int64 rows (typed site, sample, draw), sorted by site: where a
            drawn phasing's order changes relative to `alleles`' (its slots swap from there on).
    """

    site_index: np.ndarray
    alleles: np.ndarray
    unphased: np.ndarray
    haploid: np.ndarray
    n_draws: int = 0
    draw_switches: np.ndarray | None = None

    def draw_flips(self, lo: int, hi: int) -> np.ndarray:
        """(n_draws, hi - lo, n_samples) bool: whether each drawn phasing holds a sample's
        haplotypes in swapped slots at typed sites lo..hi-1 (from that site to the next)."""
        n_samples = self.unphased.shape[1]
        flips = np.zeros((self.n_draws, hi - lo, n_samples), dtype=bool)
        if self.draw_switches is None or not len(self.draw_switches):
            return flips
        rows, samples, draws = self.draw_switches.T
        first, last = np.searchsorted(rows, [lo, hi])
        before = np.zeros((self.n_draws, n_samples), dtype=np.int64)
        np.add.at(before, (draws[:first], samples[:first]), 1)
        flips[draws[first:last], rows[first:last] - lo, samples[first:last]] = True
        return np.logical_xor.accumulate(flips, axis=1) ^ (before % 2 == 1)[:, None, :]

    def haploid_at(self, site_index: np.ndarray, positions: np.ndarray) -> np.ndarray | None:
        """(len(site_index), n_samples) ploidy of panel sites: that of each sample's nearest typed site.

        None when no sample is haploid anywhere (the common, all-diploid case).
        """
        if not self.haploid.any():
            return None
        typed_pos = positions[self.site_index]
        pos = positions[site_index]
        right = np.clip(np.searchsorted(typed_pos, pos), 0, len(typed_pos) - 1)
        left = np.clip(right - 1, 0, len(typed_pos) - 1)
        nearest = np.where(np.abs(typed_pos[left] - pos) <= np.abs(typed_pos[right] - pos), left, right)
        return self.haploid[nearest]


@dataclass
class Target:
    """Target genotypes by panel contig.

    Attributes:
        counts: how the file's records were matched to the panel, each case counted.
        names: the file's name of each panel contig it names otherwise ('chr20' for '20').
    """

    samples: list[str]
    contigs: dict[str, TargetContig]
    counts: dict[str, Any]
    names: dict[str, str] = field(default_factory=dict)

