"""The reference panel in memory: its sites, haplotypes and window layout (numpy, no I/O).

`PanelContig` is a contig as read from a VCF; `ReferenceContig` is a contig as the model
stores it (haplotypes bit-packed, genetic positions, frequencies, windows and the
network's cached inducing points), whatever the storage behind its packed rows.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class Sites:
    """Biallelic sites of one contig, in file order.

    Attributes:
        contig: contig name as written in the file.
        positions: (n_sites,) int64, 1-based.
        ids, refs, alts: lists of n_sites strings.
    """

    contig: str
    positions: np.ndarray
    ids: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    alts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.positions)


@dataclass
class PanelContig:
    """A phased reference panel on one contig, its haplotypes bit-packed as they were read (a byte
    per allele would take eight times the memory).

    Attributes:
        sites: the panel's biallelic sites (multiallelic records are split).
        packed: (n_sites, ceil(n_haplotypes / 8)) uint8, np.packbits of each site's ALT
            indicators, in memory or rows of a file (`PackedHaplotypes`); haplotype 2i and 2i+1
            belong to sample i.
        n_haplotypes: number of haplotypes.
        alt_count: (n_sites,) int64 ALT alleles at each site.
    """

    sites: Sites
    packed: PackedHaplotypes
    n_haplotypes: int
    alt_count: np.ndarray

    @property
    def haplotypes(self) -> np.ndarray:
        """(n_sites, n_haplotypes) uint8 ALT indicators, unpacked (eight times the memory of `packed`)."""
        return np.unpackbits(self.packed[: self.packed.shape[0]], axis=1, count=self.n_haplotypes)

    @property
    def alt_freq(self) -> np.ndarray:
        """(n_sites,) float64 ALT frequency."""
        return self.alt_count / max(1, self.n_haplotypes)


@dataclass
class Panel:
    """A phased reference panel: its samples, its contigs, the contigs' lengths where the header gives
    them, and its records and sites counted by kind (`spinimpute.io.reading.read_panel`)."""

    samples: list[str]
    contigs: dict[str, PanelContig]
    lengths: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)



@dataclass(frozen=True)
class Window:
    """Sites [start, stop) are the window; [core_start, core_stop) are the sites it writes.

    The cores of a contig's windows partition its sites, so stitching is exact: every
    site is written once, from the window in which it has the most context.
    """

    start: int
    stop: int
    core_start: int
    core_stop: int


def layout_windows(n_sites: int, *, core: int, flank: int) -> list[Window]:
    """Windows with cores of `core` sites and up to `flank` sites of context each side."""
    if core < 1 or flank < 0:
        raise ValueError("core must be positive and flank non-negative")
    windows = []
    n_windows = max(1, -(-n_sites // core))
    # Equal cores rather than a short last one.
    edges = np.linspace(0, n_sites, n_windows + 1).round().astype(int)
    for a, b in itertools.pairwise(edges):
        windows.append(Window(max(0, a - flank), min(n_sites, b + flank), int(a), int(b)))
    return windows



class PackedHaplotypes(Protocol):
    """Rows of np.packbits-packed haplotypes, (n_sites, ceil(n_haplotypes / 8)) uint8, indexed by a
    slice or an array of row indices: an array, or rows read from a model file as needed."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, index, /) -> np.ndarray: ...


@dataclass
class ReferenceContig:
    """A contig of the reference panel as the model stores it.

    Attributes:
        sites: positions and alleles.
        cm: (n_sites,) float64 genetic positions.
        packed_haplotypes: (n_sites, ceil(n_haplotypes / 8)) uint8, np.packbits of the
            0/1 ALT indicators along the haplotype axis.
        n_haplotypes: number of reference haplotypes.
        alt_freq: (n_sites,) float32 ALT frequency in the panel.
        windows: the window layout.
        inducing: (n_windows, I, F*E) float32 cached inducing points, or None before
            the panel has been encoded.
    """

    sites: Sites
    cm: np.ndarray
    packed_haplotypes: PackedHaplotypes
    n_haplotypes: int
    alt_freq: np.ndarray
    windows: list[Window]
    inducing: np.ndarray | None = None

    def haplotypes(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, n_haplotypes) uint8 ALT indicators of sites [start, stop)."""
        return np.unpackbits(self.packed_haplotypes[start:stop], axis=1, count=self.n_haplotypes)

    def haplotypes_at(self, site_index: np.ndarray) -> np.ndarray:
        """(len(site_index), n_haplotypes) uint8 ALT indicators of the given sites."""
        return np.unpackbits(self.packed_haplotypes[site_index], axis=1, count=self.n_haplotypes)

    def windows_covering(self, sites: range | None) -> list[int]:
        """Indices of the windows whose cores hold any of the site indices `sites` (all if None)."""
        if sites is None:
            return list(range(len(self.windows)))
        return [i for i, w in enumerate(self.windows) if w.core_start < sites.stop and w.core_stop > sites.start]
