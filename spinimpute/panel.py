"""The reference panel in memory: its sites, haplotypes and window layout (numpy, no I/O).

`PanelContig` is a contig as read from a VCF; `ReferenceContig` is a contig as the model
holds it (haplotypes served as bit-packed rows, genetic positions, frequencies, windows and
the network's cached inducing points), whatever the storage behind those rows (an array, a
scratch file, or the model file's compact form: `spinimpute.io.compact_panel`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, overload

import numpy as np


class Strings(Sequence[str]):
    """n strings held as one byte array, each ended by a newline, and their offsets.

    A chromosome's IDs and alleles as Python strings take about 60 bytes each (1.6 million
    records of 1000 Genomes chr20: about 300 MB for three columns); here they take their bytes
    and an offset. Strings hold no newline (VCF fields cannot). A slice is a view.
    """

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        self.data, self.offsets = data, offsets  # string i is data[offsets[i] : offsets[i + 1] - 1]

    @classmethod
    def of(cls, values: Iterable[str]) -> Strings:
        values = list(values)
        data = np.frombuffer("".join(v + "\n" for v in values).encode(), dtype=np.uint8)
        lengths = np.fromiter((len(v.encode()) + 1 for v in values), dtype=np.int64, count=len(values))
        offsets = np.zeros(len(values) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(data, offsets)

    @classmethod
    def from_lines(cls, data: np.ndarray) -> Strings:
        """Strings from their newline-ended UTF-8 bytes (uint8), as a model file stores them."""
        ends = np.flatnonzero(data == ord("\n")) + 1
        if len(data) and (len(ends) == 0 or ends[-1] != len(data)):
            raise ValueError("string table does not end with a newline")
        return cls(data, np.concatenate([[0], ends]).astype(np.int64))

    @classmethod
    def concat(cls, parts: Sequence[Strings]) -> Strings:
        if not parts:
            return cls.of([])
        data = np.concatenate([p.data[p.offsets[0] : p.offsets[-1]] for p in parts])
        offsets, base = [np.zeros(1, dtype=np.int64)], 0
        for p in parts:
            offsets.append(p.offsets[1:] - p.offsets[0] + base)
            base += int(p.offsets[-1] - p.offsets[0])
        return cls(data, np.concatenate(offsets))

    def lines(self) -> np.ndarray:
        """The newline-ended bytes of the strings (uint8), as a model file stores them."""
        return self.data[self.offsets[0] : self.offsets[-1]]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Strings: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise IndexError("Strings slices have step 1")
            return Strings(self.data, self.offsets[start : max(start, stop) + 1])
        n = len(self)
        if not -n <= index < n:
            raise IndexError("string index out of range")
        i = index % n
        return self.data[self.offsets[i] : self.offsets[i + 1] - 1].tobytes().decode()

    def __iter__(self) -> Iterator[str]:
        return iter(self.lines().tobytes().decode().split("\n")[:-1])

    def __eq__(self, other) -> bool:
        if isinstance(other, Strings):
            return np.array_equal(self.lines(), other.lines()) and len(self) == len(other)
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self) == list(other)
        return NotImplemented

    # Compared by value, over arrays that could change: not hashable, as a list is not.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Strings({list(self)[:3]}{'...' if len(self) > 3 else ''}, n={len(self)})"


@dataclass
class Sites:
    """Biallelic sites of one contig, in file order.

    Attributes:
        contig: contig name as written in the file.
        positions: (n_sites,) int64, 1-based.
        ids, refs, alts: n_sites strings each (`Strings`, or lists).
    """

    contig: str
    positions: np.ndarray
    ids: Sequence[str] = field(default_factory=list)
    refs: Sequence[str] = field(default_factory=list)
    alts: Sequence[str] = field(default_factory=list)

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
