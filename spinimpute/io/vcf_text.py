"""VCF records read as text, a block at a time, their GT fields parsed by a compiled loop.

A panel of thousands of samples spends most of its reading time in htslib parsing every
sample's FORMAT fields into records one at a time (BENCHMARKS.md, prepare time); decompressing
the text is a small part of it. Here a block of complete lines (`BLOCK_BYTES` of text) is parsed
in one pass into an allele matrix and the few fields the panel needs. BGZF, gzip and plain text
are read this way; BCF is binary and is read through htslib (`spinimpute.io.reading`).
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import queue
import threading
import typing
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from spinimpute.compiled import compiled
from spinimpute.errors import InputFileError
from spinimpute.io.bgzf import BgzfFormatError, is_bgzf, read_bgzf

# Text decompressed and parsed at a time: the allele matrix of a block is at most half its size.
BLOCK_BYTES = 32 * 2**20
FIXED_FIELDS = 9  # CHROM POS ID REF ALT QUAL FILTER INFO FORMAT

# What the kernel found wrong with a line (LINE_PROBLEMS words them).
NO_PROBLEM, TOO_FEW_COLUMNS, BAD_POSITION, NO_GT, BAD_ALLELE, PLOIDY, SAMPLE_COUNT, ALLELE_INDEX = range(8)
LINE_PROBLEMS = {
    TOO_FEW_COLUMNS: "fewer than 10 tab-separated columns",
    BAD_POSITION: "a POS that is not a positive integer",
    NO_GT: "no genotypes (FORMAT/GT first)",
    BAD_ALLELE: "a genotype that is not allele indices separated by '|' or '/'",
    PLOIDY: "ploidy above 2",
    SAMPLE_COUNT: "a different number of genotype columns than the header has samples",
    ALLELE_INDEX: "an allele index above 127",
}
# Per-line counts the kernel returns beside the problem code.
PROBLEM, MISSING_ALLELES, UNPHASED, HAPLOID, MAX_ALLELE = range(5)

_TAB, _NEWLINE, _RETURN, _DOT, _COLON, _PIPE, _SLASH, _ZERO, _NINE = 9, 10, 13, 46, 58, 124, 47, 48, 57


@compiled
def parse_lines(text, n_samples, fields, positions, alleles, counts):  # pragma: no cover - compiled
    """Parse the complete lines of `text` (uint8, ending in a newline).

    Writes, for each record i: fields[i, k] the offset of field k (k < 9) and fields[i, 9] the
    offset of its end (the newline, or a carriage return before it); positions[i] its POS;
    alleles[i, 2s], alleles[i, 2s + 1] sample s's two alleles (-1 missing; a haploid call fills
    both); counts[i] its problem code, missing alleles, unphased genotypes, haploid genotypes and
    largest allele index. Stops after a line with a problem, or when the arrays are full. Returns
    the records parsed.
    """
    end = len(text)
    pos = 0
    line = 0
    while pos < end and line < len(positions):
        if text[pos] == _NEWLINE:  # a blank line
            pos += 1
            continue
        for k in range(5):
            counts[line, k] = 0
        problem = NO_PROBLEM
        for f in range(FIXED_FIELDS):
            fields[line, f] = pos
            while text[pos] != _TAB and text[pos] != _NEWLINE:
                pos += 1
            if text[pos] == _NEWLINE:
                problem = TOO_FEW_COLUMNS
                break
            pos += 1
        value = 0
        if problem == NO_PROBLEM:
            for p in range(fields[line, 1], fields[line, 2] - 1):
                if not _ZERO <= text[p] <= _NINE:
                    problem = BAD_POSITION
                value = value * 10 + (text[p] - _ZERO)
            if value < 1:
                problem = BAD_POSITION
        positions[line] = value
        if problem == NO_PROBLEM:
            f = fields[line, 8]
            if not (text[f] == 71 and text[f + 1] == 84 and (text[f + 2] == _COLON or text[f + 2] == _TAB)):
                problem = NO_GT
        sample = 0
        while problem == NO_PROBLEM:
            if sample == n_samples:
                problem = SAMPLE_COUNT
                break
            slot = 0
            first = -1
            while True:  # the genotype's alleles
                c = text[pos]
                if c == _DOT:
                    allele = -1
                    pos += 1
                elif _ZERO <= c <= _NINE:
                    allele = 0
                    while _ZERO <= text[pos] <= _NINE:
                        allele = allele * 10 + (text[pos] - _ZERO)
                        pos += 1
                    if allele > 127:
                        problem = ALLELE_INDEX
                        break
                    counts[line, MAX_ALLELE] = max(counts[line, MAX_ALLELE], allele)
                else:
                    problem = BAD_ALLELE
                    break
                if allele < 0:
                    counts[line, MISSING_ALLELES] += 1
                if slot == 0:
                    first = allele
                alleles[line, 2 * sample + slot] = allele
                slot += 1
                c = text[pos]
                if c == _PIPE or c == _SLASH:
                    if slot == 2:
                        problem = PLOIDY
                        break
                    if c == _SLASH:
                        counts[line, UNPHASED] += 1
                    pos += 1
                    continue
                break
            if problem != NO_PROBLEM:
                break
            if slot == 1:
                alleles[line, 2 * sample + 1] = first
                counts[line, HAPLOID] += 1
            while text[pos] != _TAB and text[pos] != _NEWLINE:  # the sample's other FORMAT fields
                pos += 1
            sample += 1
            if text[pos] == _NEWLINE:
                if sample != n_samples:
                    problem = SAMPLE_COUNT
                break
            pos += 1
        while text[pos] != _NEWLINE:  # after a problem, the rest of the line
            pos += 1
        fields[line, 9] = pos - 1 if pos > 0 and text[pos - 1] == _RETURN else pos
        counts[line, PROBLEM] = problem
        pos += 1
        line += 1
        if problem != NO_PROBLEM:
            break
    return line


@dataclasses.dataclass
class RecordBlock:
    """Consecutive records of a VCF, their genotypes as allele indices.

    Attributes:
        chroms, ids, refs: one string per record.
        alts: each record's ALT alleles (empty for '.').
        positions: (n,) int64.
        alleles: (n, 2 * n_samples) int8, sample s in columns 2s and 2s + 1; -1 missing; a
            haploid call fills both columns.
        missing, unphased: (n,) bool whether any allele is missing, any genotype unphased.
    """

    chroms: list[str]
    positions: np.ndarray
    ids: list[str]
    refs: list[str]
    alts: list[list[str]]
    alleles: np.ndarray
    missing: np.ndarray
    unphased: np.ndarray


def is_text_vcf(path) -> bool:
    """Whether `path` holds VCF text, plain, gzip or BGZF-compressed (not BCF, not standard input)."""
    if str(path) == "-":
        return False
    try:
        with gzip.open(path, "rb") as handle:
            start = handle.read(2)
    except (OSError, EOFError, zlib.error):
        with open(path, "rb") as handle:
            start = handle.read(2)
    return start == b"##" or start == b"#C"


def _decompressed(path) -> Iterator[bytes]:
    """The file's contents in pieces: BGZF block by block (`spinimpute.io.bgzf.read_bgzf`), other
    gzip and plain text as Python's modules read them."""
    if is_bgzf(path):
        try:
            for blocks in read_bgzf(path):
                yield from blocks
        except BgzfFormatError as exc:
            raise InputFileError(path, f"truncated or corrupt file ({exc})") from None
        return
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rb") if compressed else open(path, "rb") as handle:
        while True:
            try:
                piece = handle.read(BLOCK_BYTES)
            except (OSError, EOFError, zlib.error) as exc:
                raise InputFileError(path, f"truncated or corrupt file ({exc})") from None
            if not piece:
                return
            yield piece


def _text_chunks(path) -> Iterator[memoryview]:
    """The file's text after its header, in pieces of about BLOCK_BYTES that end at a newline."""
    pending: list[bytes] = []  # text read and not yet handed on
    size = 0
    in_header = True
    for piece in itertools.chain(_decompressed(path), [b""]):
        pending.append(piece)
        size += len(piece)
        if piece and size < BLOCK_BYTES:
            continue
        text = b"".join(pending)
        pending, size = [], 0
        if in_header:
            at = text.find(b"\n#CHROM")
            header_end = text.find(b"\n", at + 1) if at >= 0 else -1
            if header_end < 0:
                if piece:
                    pending, size = [text], len(text)
                continue
            text, in_header = text[header_end + 1 :], False
        if not piece:  # the end of the file
            if text.strip():
                yield memoryview(text if text.endswith(b"\n") else text + b"\n")
            return
        cut = text.rfind(b"\n")
        if cut < 0:
            pending, size = [text], len(text)
            continue
        yield memoryview(text)[: cut + 1]
        pending, size = [text[cut + 1 :]], len(text) - cut - 1


def _in_background(items: Iterator[memoryview]) -> Iterator[memoryview]:
    """`items`, produced one ahead by a thread (decompressing the next block while one is parsed)."""
    ahead: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def hand_over(item) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the consumer has gone

    def produce() -> None:
        try:
            for item in items:
                if not hand_over(item):
                    return
            hand_over(done)
        except BaseException as exc:  # noqa: BLE001 - raised again in the consumer
            hand_over(exc)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while (item := ahead.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def text_record_blocks(path, n_samples: int, *, threads: int = 1) -> Iterator[RecordBlock]:
    """The records of a text VCF in blocks, each block's pieces parsed on `threads` threads; a
    malformed record is an InputFileError naming it."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for text in _in_background(_text_chunks(path)):
            cuts = [0]
            for k in range(1, threads):
                cut = typing.cast(bytes, text.obj).find(b"\n", max(cuts[-1], len(text) * k // threads), len(text))
                if cut >= 0:
                    cuts.append(cut + 1)
            cuts.append(len(text))
            pieces = [text[a:b] for a, b in itertools.pairwise(cuts) if b > a]
            yield from pool.map(lambda piece: _parse(path, piece, n_samples), pieces)


def _parse(path, text: memoryview, n_samples: int) -> RecordBlock:
    """The records of `text`, complete lines."""
    # Each record holds at least 2 bytes per sample: a bound on the rows, short of counting them.
    rows = len(text) // (2 * n_samples + 18) + 1
    if n_samples < 64:
        rows = min(rows, bytes(text).count(b"\n"))
    fields = np.empty((rows, FIXED_FIELDS + 1), dtype=np.int64)
    positions = np.empty(rows, dtype=np.int64)
    alleles = np.empty((rows, 2 * n_samples), dtype=np.int8)
    counts = np.empty((rows, 5), dtype=np.int64)
    n = parse_lines(np.frombuffer(text, dtype=np.uint8), n_samples, fields, positions, alleles, counts)

    def field(start: int, stop: int) -> str:
        return str(text[start:stop], "utf-8", "replace")

    if n and counts[n - 1, PROBLEM] != NO_PROBLEM:
        where = ":".join(field(fields[n - 1, 0], fields[n - 1, 9]).split("\t")[:2])
        raise InputFileError(path, f"{LINE_PROBLEMS[int(counts[n - 1, PROBLEM])]} at {where}")
    if n == rows and bytes(text[fields[n - 1, 9] :]).strip():
        where = field(fields[n - 1, 0], fields[n - 1, 2] - 1).replace("\t", ":")
        raise InputFileError(path, f"malformed records after {where}")
    chroms, ids, refs, alts = [], [], [], []
    for f in fields[:n].tolist():
        chroms.append(field(f[0], f[1] - 1))
        ids.append(field(f[2], f[3] - 1))
        refs.append(field(f[3], f[4] - 1))
        alt = field(f[4], f[5] - 1)
        alts.append([] if alt == "." else alt.split(","))
    too_high = np.flatnonzero(counts[:n, MAX_ALLELE] > np.array([len(a) for a in alts], dtype=np.int64))
    if len(too_high):
        i = int(too_high[0])
        raise InputFileError(path, f"allele index {counts[i, MAX_ALLELE]} at {chroms[i]}:{positions[i]}, which "
                                   f"has {len(alts[i])} ALT allele(s)")
    return RecordBlock(chroms, positions[:n], ids, refs, alts, alleles[:n], counts[:n, MISSING_ALLELES] > 0,
                       counts[:n, UNPHASED] > 0)
