"""The panel's haplotypes as a model file stores them: rare sites as lists of carriers, the others
in blocks of distinct sequences.

A site whose rarer allele at most `SPARSE_SHARE` of the haplotypes carry is stored as the list of
those haplotypes (most sites of a large panel are this rare). The other ("dense") sites are cut into
blocks of consecutive dense sites; a block stores each haplotype's index among the block's distinct
allele sequences (uint16) and, for each of its sites, the alleles of those sequences, bit-packed: the
structure of Beagle's bref3 and of msav. A block ends where its bytes per site are least
(each haplotype's 2-byte index spread over the block's sites, plus a site's bits over the block's
sequences), so long blocks where haplotypes share long sequences and short ones where they do not.

`CompactHaplotypes` serves the rows of the panel that imputation asks for, as np.packbits rows, decoded
by a compiled loop from the parts of the stored arrays that hold them (read from the model file on
demand: see `spinimpute.io.modelfile.FileRows`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from spinimpute.compiled import compiled, run_parts
from spinimpute.errors import ModelFileError
from spinimpute.model import copying_kernels

# Site codes: the carriers listed are those of ALT, or those of REF (every other haplotype carries
# ALT), or the site lies in a block of distinct sequences.
SPARSE_ALT, SPARSE_REF, DENSE = 0, 1, 2
# A site is stored as its carriers' list where its rarer allele is this share of the haplotypes or less.
SPARSE_SHARE = 0.005
# Dense sites over which a block's end is chosen, at most.
BLOCK_SEARCH_SITES = 1000
# Distinct sequences a block may hold: its haplotype indices are uint16.
MAX_SEQUENCES = 1 << 16
# Rows of the input read at a time while encoding (at 64 MiB, preparing a 60 Mb panel peaked while
# writing the model file, above its reading; BENCHMARKS.md, chromosome-length panel).
ENCODE_BYTES = 16 * 2**20



class StoredArray(Protocol):
    """An array, or an array's rows read from a file on demand (`spinimpute.io.modelfile.FileRows`)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index, /) -> np.ndarray: ...


_POPCOUNT8 = np.array([v.bit_count() for v in range(256)], dtype=np.int64)


@compiled
def _alt_counts(packed, popcount, counts, lo, hi):  # pragma: no cover - compiled
    for j in range(lo, hi):
        c = 0
        for b in range(packed.shape[1]):
            c += popcount[packed[j, b]]
        counts[j] = c


@compiled
def _list_carriers(packed, rows, flip, n_ref, ptr, out, lo, hi):  # pragma: no cover - compiled
    """out[ptr[i]:ptr[i + 1]] = the haplotypes of row rows[i] whose bit differs from flip[i]."""
    for i in range(lo, hi):
        row = packed[rows[i]]
        t = ptr[i]
        invert = 0xFF if flip[i] else 0
        for b in range(packed.shape[1]):
            byte = row[b] ^ invert
            if byte:
                for bit in range(8):
                    r = 8 * b + bit
                    if (byte >> (7 - bit)) & 1 and r < n_ref:
                        out[t] = r
                        t += 1


@compiled
def _decode(sites, code, carrier_ptr, carriers, carrier_base, dense_before, sequence_ptr, bits, bits_base,
            block_row, hap_index, n_ref, out, lo, hi):  # pragma: no cover - compiled
    n_bytes = out.shape[1]
    tail = n_ref & 7
    last_mask = 0xFF if tail == 0 else (0xFF << (8 - tail)) & 0xFF
    for i in range(lo, hi):
        j = sites[i]
        row = out[i]
        if code[j] == DENSE:
            s0 = sequence_ptr[dense_before[j]] - bits_base
            index = hap_index[block_row[i]]
            for b in range(n_bytes):
                v = 0
                for bit in range(8):
                    r = 8 * b + bit
                    if r < n_ref:
                        s = index[r]
                        v |= ((bits[s0 + (s >> 3)] >> (7 - (s & 7))) & 1) << (7 - bit)
                row[b] = v
        else:
            fill = 0xFF if code[j] == SPARSE_REF else 0
            for b in range(n_bytes):
                row[b] = fill
            if fill:
                row[n_bytes - 1] &= last_mask
            for t in range(carrier_ptr[j] - carrier_base, carrier_ptr[j + 1] - carrier_base):
                r = carriers[t]
                row[r >> 3] ^= 1 << (7 - (r & 7))


@dataclass
class CompactHaplotypes:
    """A contig's haplotypes, compact (see the module's docstring); rows are read as np.packbits rows.

    Attributes:
        n_haplotypes: R.
        code: (J,) uint8 SPARSE_ALT, SPARSE_REF or DENSE per site.
        carrier_ptr: (J + 1,) int64; site j's listed haplotypes are carriers[carrier_ptr[j]:carrier_ptr[j + 1]].
        carriers: uint16 (R <= 65,536) or uint32 haplotype indices, in the order of the sites.
        block_start: (B + 1,) int64; block b holds the dense sites of ordinals [block_start[b], block_start[b + 1]).
        block_sequences: (B,) int64 distinct sequences of each block.
        hap_index: (B, R) uint16, each haplotype's sequence in each block.
        sequence_bits: uint8, for each dense site in order, its alleles of its block's sequences,
            ceil(sequences / 8) bytes as np.packbits packs them.
        threads: threads decoding rows.
        source: the model file the arrays are read from, which errors name.

    The three large arrays may be arrays or rows read from a model file (`FileRows`): only the parts
    that hold the rows asked for are read.
    """

    n_haplotypes: int
    code: np.ndarray
    carrier_ptr: np.ndarray
    carriers: StoredArray
    block_start: np.ndarray
    block_sequences: np.ndarray
    hap_index: StoredArray
    sequence_bits: StoredArray
    threads: int = 1
    source: str = "panel"

    def __post_init__(self) -> None:
        """Derive the offsets of each site's data, checking that the arrays' sizes agree (ValueError)."""
        n_blocks = len(self.block_sequences)
        dense = self.code == DENSE
        self.dense_before = np.zeros(len(self.code) + 1, dtype=np.int64)
        np.cumsum(dense, out=self.dense_before[1:])
        block_sites = np.diff(self.block_start)
        if (len(self.block_start) != n_blocks + 1 or (block_sites < 1).any() or (n_blocks and self.block_start[0])
                or ((self.block_sequences < 1) | (self.block_sequences > MAX_SEQUENCES)).any()):
            raise ValueError("inconsistent blocks of the compact haplotypes")
        widths = np.repeat((self.block_sequences + 7) // 8, block_sites)
        self.sequence_ptr = np.zeros(len(widths) + 1, dtype=np.int64)
        np.cumsum(widths, out=self.sequence_ptr[1:])
        if (len(widths) != self.dense_before[-1] or len(self.carrier_ptr) != len(self.code) + 1
                or self.carrier_ptr[0] != 0 or (np.diff(self.carrier_ptr) < 0).any()
                or len(self.carriers) != self.carrier_ptr[-1] or len(self.sequence_bits) != self.sequence_ptr[-1]
                or tuple(self.hap_index.shape) != (n_blocks, self.n_haplotypes) or (self.code > DENSE).any()):
            raise ValueError("the compact haplotypes' arrays disagree in size")

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.code), -(-self.n_haplotypes // 8))

    def __len__(self) -> int:
        return len(self.code)

    def __getitem__(self, index) -> np.ndarray:
        """np.packbits rows of a slice (step 1) or of an array of site indices."""
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self.code))
            if step != 1:
                raise IndexError("slices of the panel's rows have step 1")
            sites = np.arange(start, max(start, stop), dtype=np.int64)
        else:
            sites = np.asarray(index, dtype=np.int64).reshape(-1)
        return self._decode(sites)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        rows = self[:]
        return rows if dtype is None else rows.astype(dtype)

    def _decode(self, sites: np.ndarray) -> np.ndarray:
        out = np.zeros((len(sites), self.shape[1]), dtype=np.uint8)
        if len(sites) == 0:
            return out
        if sites.min() < 0 or sites.max() >= len(self.code):
            raise IndexError("site index out of range")
        lo, hi = int(sites.min()), int(sites.max()) + 1
        carrier_base = int(self.carrier_ptr[lo])
        carriers = np.asarray(self.carriers[carrier_base : int(self.carrier_ptr[hi])])
        d_lo, d_hi = int(self.dense_before[lo]), int(self.dense_before[hi])
        bits_base = int(self.sequence_ptr[d_lo])
        bits = np.asarray(self.sequence_bits[bits_base : int(self.sequence_ptr[d_hi])])
        block = np.searchsorted(self.block_start, self.dense_before[sites], side="right") - 1
        if d_hi > d_lo:
            b_lo = int(np.searchsorted(self.block_start, d_lo, side="right")) - 1
            b_hi = int(np.searchsorted(self.block_start, d_hi - 1, side="right"))
            hap_index = np.asarray(self.hap_index[b_lo:b_hi])
        else:
            b_lo, hap_index = 0, np.zeros((1, self.n_haplotypes), dtype=np.uint16)
        block_row = np.clip(block - b_lo, 0, len(hap_index) - 1)
        # The compiled loop indexes without bounds checks: a corrupt file must not reach it.
        if (len(carriers) and int(carriers.max()) >= self.n_haplotypes) or (
                d_hi > d_lo and (hap_index.max(axis=1) >= self.block_sequences[b_lo:b_hi]).any()):
            raise ModelFileError(self.source, "corrupt model file (haplotype indices out of range)")
        run_parts(_decode, len(sites), self.threads, sites, self.code, self.carrier_ptr, carriers, carrier_base,
                  self.dense_before, self.sequence_ptr, bits, bits_base, block_row, hap_index, self.n_haplotypes, out)
        return out

    def tensors(self) -> dict[str, np.ndarray]:
        """The arrays a model file stores, by name (`from_tensors` reads them back)."""
        return {"site_code": self.code, "carrier_count": np.diff(self.carrier_ptr).astype(np.uint32),
                "carriers": np.asarray(self.carriers), "block_start": self.block_start,
                "block_sequences": self.block_sequences, "hap_index": np.asarray(self.hap_index),
                "sequence_bits": np.asarray(self.sequence_bits)}

    @classmethod
    def from_tensors(cls, n_haplotypes: int, tensors: dict, *, threads: int = 1,
                     source: str = "panel") -> CompactHaplotypes:
        """The haplotypes from the arrays of `tensors()` (the LARGE_TENSORS may be rows read from a file);
        ValueError where their sizes disagree."""
        carrier_ptr = np.zeros(len(tensors["carrier_count"]) + 1, dtype=np.int64)
        np.cumsum(tensors["carrier_count"], out=carrier_ptr[1:])
        return cls(n_haplotypes=n_haplotypes, code=tensors["site_code"], carrier_ptr=carrier_ptr,
                   carriers=tensors["carriers"], block_start=tensors["block_start"],
                   block_sequences=tensors["block_sequences"], hap_index=tensors["hap_index"],
                   sequence_bits=tensors["sequence_bits"], threads=threads, source=source)


# The arrays of a CompactHaplotypes that a model file's reader keeps in the file and reads in parts.
LARGE_TENSORS = ("carriers", "hap_index", "sequence_bits")


def encode(packed, n_ref: int, *, threads: int = 1) -> CompactHaplotypes:
    """Encode (J, ceil(R / 8)) np.packbits rows (an array, or rows read from a file a block at a time)."""
    n_sites, width = packed.shape
    if width != -(-n_ref // 8):
        raise ValueError(f"{width} bytes per site cannot hold {n_ref} haplotypes")
    carrier_dtype = np.uint16 if n_ref <= 1 << 16 else np.uint32
    threshold = SPARSE_SHARE * n_ref
    code = np.empty(n_sites, dtype=np.uint8)
    carrier_counts = np.zeros(n_sites, dtype=np.int64)
    carrier_parts: list[np.ndarray] = []
    blocks = _Blocks(n_ref)
    step = max(1, ENCODE_BYTES // max(1, width))
    for start in range(0, n_sites, step):
        rows = np.ascontiguousarray(packed[start : start + step], dtype=np.uint8)
        alt = np.zeros(len(rows), dtype=np.int64)
        run_parts(_alt_counts, len(rows), threads, rows, _POPCOUNT8, alt)
        flip = alt > n_ref - alt
        minor = np.where(flip, n_ref - alt, alt)
        sparse = minor <= threshold
        code[start : start + len(rows)] = np.where(sparse, np.where(flip, SPARSE_REF, SPARSE_ALT), DENSE)
        listed = np.flatnonzero(sparse)
        ptr = np.zeros(len(listed) + 1, dtype=np.int64)
        np.cumsum(minor[listed], out=ptr[1:])
        out = np.empty(int(ptr[-1]), dtype=np.int64)
        run_parts(_list_carriers, len(listed), threads, rows, listed, flip[listed], n_ref, ptr, out)
        carrier_parts.append(out.astype(carrier_dtype))
        carrier_counts[start + listed] = minor[listed]
        blocks.add(rows[~sparse])
    blocks.finish()
    carrier_ptr = np.zeros(n_sites + 1, dtype=np.int64)
    np.cumsum(carrier_counts, out=carrier_ptr[1:])
    return CompactHaplotypes(
        n_haplotypes=n_ref, code=code, carrier_ptr=carrier_ptr,
        carriers=np.concatenate(carrier_parts) if carrier_parts else np.zeros(0, dtype=carrier_dtype),
        block_start=np.concatenate([[0], np.cumsum(blocks.sites)]).astype(np.int64),
        block_sequences=np.asarray(blocks.sequences, dtype=np.int64),
        hap_index=np.stack(blocks.hap_index) if blocks.hap_index else np.zeros((0, n_ref), dtype=np.uint16),
        sequence_bits=np.concatenate(blocks.bits) if blocks.bits else np.zeros(0, dtype=np.uint8),
        threads=threads,
    )


class _Blocks:
    """Dense sites cut into blocks of distinct sequences as they arrive."""

    def __init__(self, n_ref: int):
        self.n_ref = n_ref
        self.pending = np.zeros((0, -(-n_ref // 8)), dtype=np.uint8)
        self.sites: list[int] = []
        self.sequences: list[int] = []
        self.hap_index: list[np.ndarray] = []
        self.bits: list[np.ndarray] = []

    def add(self, rows: np.ndarray) -> None:
        """Cut blocks from the sites pending and `rows` while BLOCK_SEARCH_SITES of them are there,
        copying at most that many rows at a time (not the whole of `rows`)."""
        taken = 0
        while True:
            more = rows[taken : taken + BLOCK_SEARCH_SITES - len(self.pending)]
            taken += len(more)
            self.pending = np.concatenate([self.pending, more])
            if len(self.pending) < BLOCK_SEARCH_SITES:
                return
            self.pending = self.pending[self._cut(self.pending) :]

    def finish(self) -> None:
        done = 0
        while done < len(self.pending):
            done += self._cut(self.pending[done : done + BLOCK_SEARCH_SITES])
        self.pending = self.pending[done:]

    def _cut(self, rows: np.ndarray) -> int:
        """Make a block of the first sites of `rows`; returns how many it holds."""
        distinct = copying_kernels.distinct_sequences(rows, self.n_ref, MAX_SEQUENCES)
        length = np.arange(1, len(distinct) + 1)
        bytes_per_site = (2 * self.n_ref + length * ((distinct + 7) // 8)) / length
        bytes_per_site[distinct > MAX_SEQUENCES] = np.inf
        n = int(np.argmin(bytes_per_site)) + 1
        group_of, n_groups, alt_ptr, alt_group = copying_kernels.group_intervals(rows[:n], self.n_ref,
                                                                                 np.array([0, n]))
        n_seq = int(n_groups[0])
        alleles = np.zeros((n, n_seq), dtype=np.uint8)
        alleles[np.repeat(np.arange(n), np.diff(alt_ptr)), alt_group] = 1
        self.sites.append(n)
        self.sequences.append(n_seq)
        self.hap_index.append(group_of[0].astype(np.uint16))
        self.bits.append(np.packbits(alleles, axis=1).reshape(-1))
        return n
