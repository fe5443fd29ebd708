"""A tabix (.tbi) index of a BGZF VCF, built while the VCF is written (the writer compresses it).

Indexing afterwards (htslib's tabix) reads and decompresses the whole file again; the
writer already knows where each record starts, so it records that instead. The index is
the one the SAM/tabix specification describes: for each contig, the UCSC bins (16 kb to
512 Mb) holding chunks of records, a linear index of the first record reaching each 16 kb
window, and htslib's pseudo-bin with the contig's offsets and record count.

Offsets are kept as positions in the uncompressed text while writing and turned into
virtual offsets (compressed block start << 16 | offset in the block) at the end, once the
compressed size of every block is known.
"""

from __future__ import annotations

import struct

import numpy as np

MIN_SHIFT = 14  # 16 kb linear-index windows and smallest bins
PSEUDO_BIN = 37450  # htslib's bin of per-contig offsets and counts


def region_bin(beg: int, end: int) -> int:
    """The smallest UCSC bin holding [beg, end) (0-based, end exclusive), as in the SAM specification."""
    end -= 1
    for shift, offset in ((14, 4681), (17, 585), (20, 73), (23, 9), (26, 1)):
        if beg >> shift == end >> shift:
            return offset + (beg >> shift)
    return 0


class _ContigIndex:
    def __init__(self):
        self.bins: dict[int, list[list[int]]] = {}  # bin -> chunks [start, end) in text offsets
        self.linear: list[int] = []  # first record start reaching each 16 kb window, -1 if none yet
        self.first = -1
        self.last_end = -1
        self.n_records = 0
        self._last_bin = -1


class TabixIndexBuilder:
    """Collects the records of a VCF as they are written, then writes its .tbi.

    Records must arrive in file order, each contig's records together and sorted by position.
    """

    def __init__(self):
        self._contigs: dict[str, _ContigIndex] = {}

    def add(self, contig: str, beg: np.ndarray, end: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        """Records spanning [beg, end) (0-based) on `contig`, at text offsets [starts, ends)."""
        index = self._contigs.setdefault(contig, _ContigIndex())
        if len(beg) == 0:
            return
        if index.first < 0:
            index.first = int(starts[0])
        index.last_end = int(ends[-1])
        index.n_records += len(beg)
        first_window, last_window = beg >> MIN_SHIFT, (end - 1) >> MIN_SHIFT
        grow = int(last_window.max()) + 1 - len(index.linear)
        if grow > 0:
            index.linear.extend([-1] * grow)
        for b, e, s, t, w0, w1 in zip(beg.tolist(), end.tolist(), starts.tolist(), ends.tolist(),
                                      first_window.tolist(), last_window.tolist()):
            bin_ = region_bin(b, e)
            chunks = index.bins.setdefault(bin_, [])
            if bin_ == index._last_bin and chunks[-1][1] == s:
                chunks[-1][1] = t
            else:
                chunks.append([s, t])
            index._last_bin = bin_
            for w in range(w0, w1 + 1):
                if index.linear[w] < 0:
                    index.linear[w] = s

    def index_bytes(self, block_offsets: np.ndarray | list[int], block_size: int) -> bytes:
        """The .tbi content before BGZF compression.

        Args:
            block_offsets: compressed offset of each BGZF block of the VCF, then the
                offset just past the last one; block k holds text [k * block_size, (k + 1) * block_size).
        """
        block_offsets = np.asarray(block_offsets, dtype=np.uint64)

        def virtual(offset: int) -> int:
            return (int(block_offsets[offset // block_size]) << 16) | (offset % block_size)

        names = list(self._contigs)
        name_bytes = b"".join(n.encode() + b"\0" for n in names)
        out = [b"TBI\1", struct.pack("<8i", len(names), 2, 1, 2, 0, ord("#"), 0, len(name_bytes)), name_bytes]
        for name in names:
            index = self._contigs[name]
            bins = sorted(index.bins.items())
            out.append(struct.pack("<i", len(bins) + (index.n_records > 0)))
            for bin_, chunks in bins:
                out.append(struct.pack("<Ii", bin_, len(chunks)))
                out.append(struct.pack(f"<{2 * len(chunks)}Q", *(virtual(o) for chunk in chunks for o in chunk)))
            if index.n_records:
                out.append(struct.pack("<Ii4Q", PSEUDO_BIN, 2, virtual(index.first), virtual(index.last_end),
                                       index.n_records, 0))
            # Windows before the first record point at it; later gaps at the window before them.
            linear, previous = [], virtual(index.first) if index.n_records else 0
            for start in index.linear:
                previous = virtual(start) if start >= 0 else previous
                linear.append(previous)
            out.append(struct.pack(f"<i{len(linear)}Q", len(linear), *linear))
        out.append(struct.pack("<Q", 0))  # records without coordinates
        return b"".join(out)
