"""The imputed VCF: Beagle-style records (GT, DS, GP; INFO DR2, AF, IMP), in BGZF indexed as written
or as plain text, as the output's name says."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Literal

import numpy as np

from spinimpute.errors import OutputFileError
from spinimpute.io.bgzf import BGZF_BLOCK_INPUT, BgzfTextWriter, write_bgzf
from spinimpute.io.genotype_text import format_genotype_rows, record_text
from spinimpute.io.tabix import TabixIndexBuilder
from spinimpute.panel import Sites

INFO_HEADER = [
    '##INFO=<ID=AF,Number=A,Type=Float,Description="Estimated ALT Allele Frequencies">',
    ('##INFO=<ID=DR2,Number=A,Type=Float,Description="Dosage R-Squared: estimated squared correlation '
     'between estimated REF dose [P(RA) + 2*P(RR)] and true REF dose">'),
    '##INFO=<ID=IMP,Number=0,Type=Flag,Description="Imputed marker">',
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
    '##FORMAT=<ID=DS,Number=A,Type=Float,Description="estimated ALT dose [P(RA) + 2*P(AA)]">',
]


GP_HEADER = '##FORMAT=<ID=GP,Number=G,Type=Float,Description="Estimated Genotype Probability">'


@dataclass
class RecordBlock:
    """VCF records as text, with what their index needs: each record's span (0-based,
    end exclusive) on `contig` and its length in bytes."""

    contig: str
    text: bytes | np.ndarray  # bytes, or a uint8 array
    beg: np.ndarray
    end: np.ndarray
    lengths: np.ndarray


OutputFormat = Literal["bgzf", "text"]


def output_format(path) -> OutputFormat:
    """The format an output's name asks for, as htslib's tools read names: '.vcf.gz' or '.vcf.bgz'
    BGZF (indexed with .tbi), '.vcf' plain text; OutputFileError for any other name."""
    name = str(path)
    if name.endswith((".vcf.gz", ".vcf.bgz")):
        return "bgzf"
    if name.endswith(".vcf"):
        return "text"
    raise OutputFileError(path, "the output's format follows its name: .vcf.gz or .vcf.bgz (bgzipped, with a .tbi "
                                "index) or .vcf (plain text); for BCF convert with 'bcftools view -Ob'")


class PlainTextWriter:
    """The BgzfTextWriter interface for plain text."""

    def __init__(self, path):
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()

    def write(self, text: bytes | np.ndarray) -> None:
        self._file.write(text if isinstance(text, bytes) else text.data)

    def close(self) -> None:
        self._file.close()


class ImputedVcfWriter:
    """Writes imputed sites as a Beagle-style VCF (GT, DS, GP; INFO DR2, AF, IMP), BGZF or plain text.

    With `index_path` (BGZF only), also writes the file's tabix index there on close. Without
    `gp`, the FORMAT fields are GT:DS only (as Beagle writes by default). `contigs` maps each
    contig's name as written to its length (None where unknown); `names` maps the panel's
    contig names to those written, where they differ.
    """

    def __init__(self, path, *, samples: list[str], contigs: dict[str, int | None], extra_header: list[str],
                 threads: int = 1, index_path=None, gp: bool = True, fmt: OutputFormat = "bgzf",
                 names: dict[str, str] | None = None):
        if fmt == "text" and index_path is not None:
            raise ValueError("a plain-text VCF has no tabix index")
        self._out = BgzfTextWriter(path, threads=threads) if fmt == "bgzf" else PlainTextWriter(path)
        self._index = TabixIndexBuilder() if index_path is not None else None
        self._index_path = index_path
        self._names = dict(names or {})
        self.gp = gp
        lines = ["##fileformat=VCFv4.2", *extra_header]
        lines += [f"##contig=<ID={c}>" if length is None else f"##contig=<ID={c},length={length}>"
                  for c, length in contigs.items()]
        lines += INFO_HEADER + ([GP_HEADER] if gp else [])
        lines.append("\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples]))
        header = ("\n".join(lines) + "\n").encode()
        self._out.write(header)
        self._text_offset = len(header)

    def block_text(
        self,
        sites: Sites,
        start: int,
        hap_prob: np.ndarray,
        typed: np.ndarray,
        af: np.ndarray,
        dr2: np.ndarray,
        haploid: np.ndarray | None = None,
    ) -> RecordBlock:
        """The records of sites [start, start + len(hap_prob)) of `sites`; changes nothing in
        the writer, so that blocks can be formatted on several threads and written in order."""
        format_keys = "GT:DS:GP" if self.gp else "GT:DS"
        contig = self._names.get(sites.contig, sites.contig)
        stop = start + len(hap_prob)
        positions = sites.positions[start:stop].tolist()
        ids, refs, alts = list(sites.ids[start:stop]), list(sites.refs[start:stop]), list(sites.alts[start:stop])
        fixed = [
            f"{contig}\t{positions[k]}\t{ids[k]}\t{refs[k]}\t{alts[k]}\t.\tPASS\tDR2={dr2[k]:.2f};AF={af[k]:.4f}"
            f"{'' if typed[k] else ';IMP'}\t{format_keys}".encode()  # INFO as Beagle writes it
            for k in range(len(hap_prob))
        ]
        beg = np.asarray(sites.positions[start:stop], dtype=np.int64) - 1
        end = beg + np.fromiter(map(len, refs), dtype=np.int64, count=len(refs))
        if haploid is not None and haploid.any():
            genotypes = format_genotype_rows(hap_prob, haploid, gp=self.gp)
            lengths = np.array([len(p) + len(c) + 1 for p, c in zip(fixed, genotypes)], dtype=np.int64)
            return RecordBlock(contig, b"".join(part for columns, prefix in zip(genotypes, fixed)
                                                for part in (prefix, columns, b"\n")), beg, end, lengths)
        prefixes = np.frombuffer(b"".join(fixed), dtype=np.uint8)
        prefix_ends = np.cumsum(np.fromiter(map(len, fixed), dtype=np.int64, count=len(fixed)))
        text, ends = record_text(hap_prob, prefixes, prefix_ends, gp=self.gp)
        return RecordBlock(contig, text, beg, end, np.diff(ends, prepend=0))

    def write_records(self, block: RecordBlock) -> None:
        """Append records made by `block_text`, in file order."""
        self._out.write(block.text)
        if self._index is not None:
            ends = self._text_offset + np.cumsum(block.lengths)
            self._index.add(block.contig, block.beg, block.end, ends - block.lengths, ends)
        self._text_offset += len(block.text)

    def write_block(self, sites: Sites, start: int, hap_prob, typed, af, dr2, haploid=None) -> None:
        """Write sites [start, start + len(hap_prob)) of `sites` (see `block_text`)."""
        self.write_records(self.block_text(sites, start, hap_prob, typed, af, dr2, haploid))

    def close(self) -> None:
        self._out.close()
        if self._index is not None and isinstance(self._out, BgzfTextWriter):
            write_bgzf(self._index_path, self._index.index_bytes(self._out.block_offsets, BGZF_BLOCK_INPUT))
            self._index = None

