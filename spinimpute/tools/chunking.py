"""Sharding the genome for pipelines: chunk tables and ligation of chunk outputs.

A chunk is imputed with `impute --region`; because a model's windows are fixed, every
site comes out exactly as in a whole-chromosome run, and ligation is a concatenation in
panel order that checks the chunks neither overlap nor disagree.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass

from spinimpute.errors import InputFileError
from spinimpute.io.bgzf import BgzfTextWriter
from spinimpute.io.modelfile import ModelBundle
from spinimpute.io.writing import OutputFormat, PlainTextWriter


@dataclass(frozen=True)
class Chunk:
    """Region [start, end] written by one job; [input_start, input_end] is what it reads.

    The input span covers the model windows that impute the region, widened by the
    requested buffer: a pipeline that subsets the target per chunk must keep that span.
    """

    contig: str
    start: int
    end: int
    input_start: int
    input_end: int
    n_sites: int

    @property
    def region(self) -> str:
        return f"{self.contig}:{self.start}-{self.end}"


def parse_length(text: str) -> int:
    """'5Mb', '250kb', '1000' -> base pairs."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(bp|kb|mb|gb)?\s*", text.lower())
    if not match:
        raise ValueError(f"'{text}' is not a length like 5Mb, 250kb or 1000")
    scale = {"bp": 1, None: 1, "kb": 1e3, "mb": 1e6, "gb": 1e9}[match.group(2)]
    return round(float(match.group(1)) * scale)


def make_chunks(bundle: ModelBundle, *, size: int, buffer: int) -> list[Chunk]:
    """Tile each contig's panel sites into chunks of about `size` bp."""
    if size < 1 or buffer < 0:
        raise ValueError("chunk size must be positive and buffer non-negative")
    chunks = []
    for name, contig in bundle.contigs.items():
        positions = contig.sites.positions
        first, last = int(positions[0]), int(positions[-1])
        n_chunks = max(1, -(-(last - first + 1) // size))
        step = -(-(last - first + 1) // n_chunks)
        for k in range(n_chunks):
            start = first + k * step
            end = min(last, start + step - 1)
            lo = int(positions.searchsorted(start, side="left"))
            hi = int(positions.searchsorted(end, side="right"))
            if hi == lo:
                continue
            spans = [w for w in contig.windows if w.core_start < hi and w.core_stop > lo]
            input_start = min(int(positions[spans[0].start]), start - buffer)
            input_end = max(int(positions[spans[-1].stop - 1]), end + buffer)
            chunks.append(Chunk(name, start, end, max(1, input_start), input_end, hi - lo))
    return chunks


def chunk_table(chunks: list[Chunk]) -> str:
    lines = ["#contig\tstart\tend\tregion\tinput_start\tinput_end\tn_sites"]
    for c in chunks:
        lines.append(f"{c.contig}\t{c.start}\t{c.end}\t{c.region}\t{c.input_start}\t{c.input_end}\t{c.n_sites}")
    return "\n".join(lines) + "\n"


def _read_vcf_text(path) -> tuple[list[str], list[str]]:
    try:
        with gzip.open(path, "rt") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except (OSError, EOFError) as exc:
        raise InputFileError(path, f"not a complete bgzipped VCF ({exc})") from None
    lines = text.splitlines()
    header = [line for line in lines if line.startswith("#")]
    if not header or not header[-1].startswith("#CHROM"):
        raise InputFileError(path, "not a VCF file (no #CHROM header line)")
    return header, lines[len(header) :]


def ligate(chunk_paths: list, out_tmp_path, *, extra_header: list[str], fmt: OutputFormat = "bgzf") -> int:
    """Concatenate chunk outputs in genome order into `out_tmp_path` (bgzipped or plain text); returns
    records written.

    Chunks are ordered by their first record (contigs in the first chunk's header order);
    they must have the same samples and must not overlap.
    """
    parsed = []
    for path in chunk_paths:
        header, body = _read_vcf_text(path)
        parsed.append((path, header, body))
    samples = parsed[0][1][-1]
    contig_lines: dict[str, str] = {}  # each contig's header line (with its length), in order of first mention
    for path, header, _ in parsed:
        if header[-1] != samples:
            raise InputFileError(path, "samples differ from those of the first chunk")
        for h in header:
            if h.startswith("##contig="):
                contig_lines.setdefault(_contig_id(h), h)
    contig_order = list(contig_lines)

    def first_key(item):
        _, _, body = item
        if not body:
            return (len(contig_order), 0)
        chrom, pos = body[0].split("\t", 2)[:2]
        return (contig_order.index(chrom) if chrom in contig_order else len(contig_order), int(pos))

    parsed.sort(key=first_key)
    header = [h for h in parsed[0][1][:-1] if not h.startswith("##contig=")]
    header = [h for h in header if not h.startswith("##spinimpute_command=")]
    header += list(contig_lines.values()) + extra_header + [samples]
    n = 0
    last = None
    out = BgzfTextWriter(out_tmp_path) if fmt == "bgzf" else PlainTextWriter(out_tmp_path)
    try:
        out.write(("\n".join(header) + "\n").encode())
        for path, _, body in parsed:
            for k, line in enumerate(body):
                chrom, pos = line.split("\t", 2)[:2]
                key = (contig_order.index(chrom), int(pos))
                # Within a chunk, split multiallelics share a position; across chunks none may.
                if last is not None and (key < last or (k == 0 and key == last)):
                    raise InputFileError(path, f"chunk overlaps another or is out of order at {chrom}:{pos}")
                last = key
            if body:
                out.write(("\n".join(body) + "\n").encode())
                n += len(body)
    finally:
        out.close()
    return n


def _contig_id(line: str) -> str:
    """The ID of a ##contig header line."""
    found = re.search(r"ID=([^,>]+)", line)
    if found is None:
        raise ValueError(f"no ID in the header line {line!r}")
    return found.group(1)
