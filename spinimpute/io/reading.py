"""Reading VCF/BCF files (cyvcf2, htslib) into the panel's and the target's arrays.

Nothing here knows about models. Every problem with a file is an `InputFileError` naming it.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from spinimpute.errors import InputFileError, OutputFileError
from spinimpute.io import strand
from spinimpute.io.bgzf import truncated_bgzf
from spinimpute.io.matching import MATCH_CASES, match_alleles, match_contig
from spinimpute.io.modelfile import FileRows
from spinimpute.io.vcf_text import RecordBlock, is_text_vcf, text_record_blocks
from spinimpute.panel import PackedHaplotypes, Panel, PanelContig, Sites, Strings
from spinimpute.target import MISSING, Target, TargetContig

# A/T and C/G SNPs oriented by linkage per read of the panel's rows (theirs and their flanks').
LINKAGE_BATCH = 64


def open_vcf(path, threads: int = 1):
    import cyvcf2

    path = str(path)
    if path != "-" and not os.path.exists(path):
        raise InputFileError(path, "file not found")
    if path != "-" and not os.access(path, os.R_OK):
        raise InputFileError(path, "file is not readable")
    if path != "-" and truncated_bgzf(path):
        raise InputFileError(path, "truncated BGZF file (no end-of-file marker)")
    try:
        return cyvcf2.VCF(path, threads=max(1, threads), lazy=True)
    except Exception as exc:  # noqa: BLE001 - cyvcf2 raises bare Exception on bad headers
        raise InputFileError(path, _header_problem(path) or f"not a readable VCF/BCF file ({exc})") from None


def _header_problem(path: str) -> str | None:
    """A specific reason why htslib rejected a text VCF header, where one can be found."""
    import gzip

    try:
        with open(path, "rb") as raw:
            magic = raw.read(2)
        opener = gzip.open if magic == b"\x1f\x8b" else open
        with opener(path, "rt", errors="replace") as handle:
            for line in handle:
                if line.startswith("#CHROM"):
                    samples = line.rstrip("\n").split("\t")[9:]
                    seen = set()
                    for s in samples:
                        if s in seen:
                            return f"duplicate sample name '{s}'"
                        seen.add(s)
                    return None
                if not line.startswith("##"):
                    return "not a VCF file (no #CHROM header line)"
    except (OSError, EOFError):
        return None
    return "not a VCF file (no #CHROM header line)"


def _check_samples(path, samples: list[str]) -> None:
    if not samples:
        raise InputFileError(path, "the file has no samples")
    seen = set()
    for s in samples:
        if s in seen:
            raise InputFileError(path, f"duplicate sample name '{s}'")
        seen.add(s)


def declared_fields(vcf) -> set[tuple[str, str]]:
    """The (type, ID) pairs the header declares, e.g. ("FORMAT", "DS") or ("INFO", "DR2")."""
    return {(h.type, h.info().get("ID")) for h in vcf.header_iter()}


def contig_lengths(vcf) -> dict[str, int]:
    """The lengths of the header's ##contig lines that give one."""
    try:
        return {name: int(length) for name, length in zip(vcf.seqnames, vcf.seqlens) if length > 0}
    except AttributeError:  # cyvcf2: "no sequence lengths found in header"
        return {}


def records(path, vcf) -> Iterator:
    """Iterate records, turning htslib read failures into InputFileError."""
    try:
        yield from vcf
    except Exception as exc:  # noqa: BLE001 - cyvcf2 raises bare Exception on a bad record
        raise InputFileError(path, f"truncated or corrupt file: htslib could not read a record ({exc})") from None


def _diploid_view(path, rec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A record's genotypes as two allele slots per sample.

    Haploid genotypes (male chrX outside the pseudo-autosomal regions) fill both slots
    with their one allele, so that a haploid sample looks homozygous to the copying model.

    Returns:
        alleles (n_samples, 2) int (negative = missing), phased (n_samples,) bool (haploid
        calls count as phased), haploid (n_samples,) bool.
    """
    try:
        gt = rec.genotype.array()
    except Exception:  # noqa: BLE001 - cyvcf2 raises a bare Exception for a record without GT
        raise InputFileError(path, f"no genotypes (FORMAT/GT) at {rec.CHROM}:{rec.POS}") from None
    if gt.shape[1] > 3:
        raise InputFileError(path, f"ploidy above 2 at {rec.CHROM}:{rec.POS}")
    if gt.shape[1] == 2:  # every sample haploid
        first = gt[:, 0]
        return np.stack([first, first], axis=1), np.ones(len(gt), dtype=bool), np.ones(len(gt), dtype=bool)
    haploid = gt[:, 1] == -2
    alleles = gt[:, :2].copy()
    alleles[haploid, 1] = alleles[haploid, 0]
    return alleles, gt[:, 2].astype(bool) | haploid, haploid


PANEL_BLOCK_RECORDS = 2048  # records htslib reads into one block (BCF input)


def _htslib_record_blocks(path, vcf) -> Iterator[RecordBlock]:
    """The records as htslib reads them (BCF, standard input), in blocks of PANEL_BLOCK_RECORDS."""
    batch: list = []

    def block() -> RecordBlock:
        alleles = np.stack([a for _, a, _ in batch])
        return RecordBlock([r.CHROM for r, _, _ in batch], np.array([r.POS for r, _, _ in batch], dtype=np.int64),
                           [r.ID or "." for r, _, _ in batch], [r.REF for r, _, _ in batch],
                           [list(r.ALT) for r, _, _ in batch], alleles, np.asarray((alleles < 0).any(axis=1)),
                           np.array([not phased for _, _, phased in batch]))

    for rec in records(path, vcf):
        pairs, phased, _ = _diploid_view(path, rec)
        if pairs.max(initial=0) > 127:
            raise InputFileError(path, f"an allele index above 127 at {rec.CHROM}:{rec.POS}")
        batch.append((rec, pairs.reshape(-1).astype(np.int8), bool(phased.all())))
        if len(batch) == PANEL_BLOCK_RECORDS:
            yield block()
            batch = []
    if batch:
        yield block()


# ALT alleles that are no allele of the record's own (gVCF's reference blocks; '*', an allele
# of an overlapping deletion): not sites, and "not this ALT" at the record's other ALT sites.
PLACEHOLDER_ALLELES = frozenset({"*", "<*>", "<NON_REF>", "<X>"})


def allele_kind(ref: str, alt: str) -> str:
    """'snp', 'indel', 'symbolic' (an SV's <DEL>, <INS>, ... or a breakend), 'placeholder' or 'other'
    (MNPs and anything else), as the panel's sites are counted."""
    if alt in PLACEHOLDER_ALLELES:
        return "placeholder"
    if alt.startswith("<") or "[" in alt or "]" in alt:
        return "symbolic"
    if len(ref) == len(alt):
        return "snp" if len(ref) == 1 else "other"
    return "indel"


def read_panel(path, *, threads: int = 1, spill: Path | None = None) -> Panel:
    """Read a phased reference panel.

    Multiallelic records are split into one biallelic site per ALT allele, indels and symbolic
    alleles (SVs) included; placeholder ALTs ('*', '<*>', '<NON_REF>') give no site, and a site
    repeated exactly (same position, REF and ALT) is kept once, as `bcftools norm -d exact` does.
    `Panel.counts` counts each kind. Every genotype must be phased, diploid and non-missing. VCF
    text is parsed a block at a time by a compiled loop (`spinimpute.io.vcf_text`); BCF through htslib.

    Args:
        spill: a directory to write each contig's packed haplotypes to as they are read, which
            `PanelContig.packed` then reads rows of (`FileRows`): memory then does not grow with the
            panel's length. Without it they are held in memory.
    """
    vcf = open_vcf(path, threads)
    samples = list(vcf.samples)
    lengths = contig_lengths(vcf)
    _check_samples(path, samples)
    n_haps = 2 * len(samples)
    blocks = text_record_blocks(path, len(samples), threads=threads) if is_text_vcf(path) else _htslib_record_blocks(path, vcf)
    contigs: dict[str, dict] = {}
    counts = {"records": 0, "records_without_alt": 0, "multiallelic_records": 0, "snp_sites": 0, "indel_sites": 0,
              "symbolic_sites": 0, "other_sites": 0, "placeholder_alleles": 0, "duplicate_sites": 0}
    panel_contigs = {}
    width = -(-n_haps // 8)
    with contextlib.ExitStack() as files:
        _read_blocks(path, blocks, contigs, counts, spill, files)
        vcf.close()
        if not contigs:
            raise InputFileError(path, "the file has no variant records")
        for chrom, e in contigs.items():
            positions, carriers, ids, refs, alts = e["columns"].read()
            sites = Sites(chrom, positions, ids, refs, alts)
            if spill is not None:
                e["file"].flush()
                packed: PackedHaplotypes = FileRows(Path(e["file"].name), 0, (len(sites), width))
            else:
                packed = np.concatenate(e["packed"]) if e["packed"] else np.zeros((0, width), np.uint8)
            panel_contigs[chrom] = PanelContig(sites, packed, n_haps, carriers)
    return Panel(samples, panel_contigs, lengths, counts)


class _SiteColumns:
    """A contig's per-site columns (positions, carrier counts, IDs, REF and ALT alleles) appended, as
    blocks of records are read, to unnamed temporary files in `directory` (the spill directory), or
    to in-memory buffers without one, and read back once at the end: held as a list of pieces per
    block, a chromosome's columns took twice their size when joined, and their pieces fragmented the
    heap."""

    NUMERIC: ClassVar[dict[str, type]] = {"pos": np.int64, "count": np.int64}
    TEXT = ("id", "ref", "alt")

    def __init__(self, directory: Path | None, files: contextlib.ExitStack):
        self.location = str(directory)
        self.handles: dict[str, Any] = {}
        for name in (*self.NUMERIC, *self.TEXT):
            if directory is None:
                self.handles[name] = io.BytesIO()
                continue
            with _writing(self.location):
                self.handles[name] = files.enter_context(tempfile.TemporaryFile(dir=directory))  # noqa: SIM115

    def append(self, positions: np.ndarray, carriers: np.ndarray, ids: Strings, refs: Strings, alts: Strings) -> None:
        with _writing(self.location):
            self.handles["pos"].write(positions.astype(np.int64).tobytes())
            self.handles["count"].write(carriers.astype(np.int64).tobytes())
            for name, values in zip(self.TEXT, (ids, refs, alts)):
                self.handles[name].write(values.lines().tobytes())

    def read(self) -> tuple[np.ndarray, np.ndarray, Strings, Strings, Strings]:
        """Positions, carrier counts (int64), IDs, REF and ALT alleles, each read back whole."""
        columns: dict[str, np.ndarray] = {}
        for name, handle in self.handles.items():
            dtype = self.NUMERIC.get(name, np.uint8)
            if isinstance(handle, io.BytesIO):
                columns[name] = np.frombuffer(handle.getbuffer(), dtype=dtype).copy()
                continue
            handle.flush()
            handle.seek(0)
            columns[name] = np.fromfile(handle, dtype=dtype)
        ids, refs, alts = (Strings.from_lines(columns[name]) for name in self.TEXT)
        return columns["pos"], columns["count"], ids, refs, alts


def _read_blocks(path, blocks: Iterator[RecordBlock], contigs: dict[str, dict], counts: dict, spill: Path | None,
                 files: contextlib.ExitStack) -> None:
    """The records of `blocks` into `contigs` (an entry per contig), checked for order; packed rows
    written to a file per contig in `spill` (opened on `files`), or kept."""
    current = None
    last_pos = 0
    for block in blocks:
        # A record without an ALT gives no site, whatever its genotypes, as before blocks were read.
        has_alt = np.array([bool(alts) for alts in block.alts], dtype=bool)
        for i in np.flatnonzero((block.missing | block.unphased) & has_alt)[:1]:
            problem = "missing genotype" if block.missing[i] else "unphased genotype"
            requirement = "complete" if block.missing[i] else "phased"
            raise InputFileError(path, f"{problem} at {block.chroms[i]}:{block.positions[i]}; the panel must be "
                                       f"{requirement}")
        # Runs of records on one contig, each checked for order and packed at once.
        chroms = block.chroms
        edges = [0] + [i for i in range(1, len(chroms)) if chroms[i] != chroms[i - 1]] + [len(chroms)]
        for a, b in itertools.pairwise(edges):
            chrom = chroms[a]
            if chrom != current:
                if chrom in contigs:
                    raise InputFileError(path, f"records of contig '{chrom}' are not contiguous; sort the file")
                contigs[chrom] = {"columns": _SiteColumns(spill, files), "packed": [],
                                  "last_pos": 0, "last_sites": set()}
                if spill is not None:
                    spilled = spill / f"contig{len(contigs)}.bits"
                    with _writing(spilled):
                        contigs[chrom]["file"] = files.enter_context(open(spilled, "wb"))  # noqa: SIM115 - closed by files
                current, last_pos = chrom, 0
            positions = block.positions[a:b]
            unsorted = np.flatnonzero(np.diff(positions, prepend=last_pos) < 0)
            if len(unsorted):
                raise InputFileError(path, f"records are not sorted by position at {chrom}:{positions[unsorted[0]]}")
            last_pos = int(positions[-1])
            _add_sites(contigs[chrom], block, a, b, counts)


@contextlib.contextmanager
def _writing(spilled):
    """A failure to write a spill file (a full disk) as an OutputFileError naming it."""
    try:
        yield
    except OSError as exc:
        raise OutputFileError(spilled, f"could not write the panel's scratch file: {exc.strerror or exc}") from None


def _add_sites(entry: dict, block: RecordBlock, start: int, stop: int, counts: dict) -> None:
    """Records [start, stop) of `block` as biallelic sites, one per ALT allele, in file order, less
    placeholder alleles and sites that repeat one at the same position (`entry["last_sites"]` holds
    the (REF, ALT) pairs at the contig's last position); each kind counted in `counts`."""
    record_of, allele_of = [], []
    last = entry["last_sites"]
    for i in range(start, stop):
        alts = block.alts[i]
        counts["records"] += 1
        counts["records_without_alt"] += not alts
        counts["multiallelic_records"] += len(alts) > 1
        pos, ref = int(block.positions[i]), block.refs[i]
        if entry["last_pos"] != pos:
            last.clear()
            entry["last_pos"] = pos
        for k, alt in enumerate(alts, start=1):
            kind = allele_kind(ref, alt)
            if kind == "placeholder":
                counts["placeholder_alleles"] += 1
                continue
            if (ref, alt) in last:
                counts["duplicate_sites"] += 1
                continue
            last.add((ref, alt))
            counts[f"{kind}_sites"] += 1
            record_of.append(i)
            allele_of.append(k)
    records_, alleles_ = np.asarray(record_of, dtype=np.int64), np.asarray(allele_of, dtype=np.int8)
    packed = np.empty((len(records_), -(-block.alleles.shape[1] // 8)), dtype=np.uint8)
    count = np.empty(len(records_), dtype=np.int64)
    for k in np.unique(alleles_):
        rows = np.flatnonzero(alleles_ == k)
        carries = block.alleles[records_[rows]] == k
        packed[rows] = np.packbits(carries, axis=1)
        count[rows] = np.count_nonzero(carries, axis=1)
    entry["columns"].append(block.positions[records_], count, Strings.of(block.ids[i] for i in record_of),
                            Strings.of(block.refs[i] for i in record_of),
                            Strings.of(block.alts[i][k - 1] for i, k in zip(record_of, allele_of)))
    if "file" in entry:
        with _writing(entry["file"].name):
            entry["file"].write(packed.tobytes())
    else:
        entry["packed"].append(packed)


def read_target(
    path, panel_sites: dict[str, Sites], panel_alt_freq: dict[str, np.ndarray] | None = None, *,
    panel_haplotypes: Callable[[str, np.ndarray], np.ndarray] | None = None, threads: int = 1
) -> Target:
    """Read target genotypes at the panel's sites, in panel orientation.

    Multiallelic records are split into biallelic ones. Each is matched to the panel by
    position and alleles (`match_alleles`): REF/ALT swaps are flipped, strand flips of
    non-palindromic SNPs are complemented, A/T and C/G SNPs are oriented by allele
    frequency, or else by linkage with the neighbouring markers (`spinimpute.io.strand`; needs
    `panel_haplotypes`) or dropped, and other records are dropped. `Target.counts` counts
    each case.

    Args:
        panel_haplotypes: (contig, (n,) site indices) -> (n, R) uint8 panel ALT indicators.
    """
    vcf = open_vcf(path, threads)
    samples = list(vcf.samples)
    _check_samples(path, samples)
    n_haps = 2 * len(samples)
    by_position: dict[str, dict[int, list]] = {}
    for chrom, sites in panel_sites.items():
        freq = panel_alt_freq[chrom] if panel_alt_freq is not None else np.full(len(sites), np.nan)
        table: dict[int, list] = {}
        for i, (p, r, a) in enumerate(zip(sites.positions, sites.refs, sites.alts)):
            table.setdefault(int(p), []).append((i, r, a, float(freq[i])))
        by_position[chrom] = table
    known = list(panel_sites)
    counts: dict[str, Any] = {"records": 0, "matched": 0, **{c: 0 for c in MATCH_CASES}, "not_in_panel": 0,
                              "duplicate": 0, "other_contig": 0, "unphased_het": 0, "absent_allele_calls": 0}
    per_contig: dict[str, dict[int, tuple]] = {}
    ambiguous: list[str] = []  # A/T and C/G records and what was done with each
    pending: dict[str, dict[int, tuple]] = {}  # A/T and C/G SNPs left to orient by linkage
    name_map: dict[str, str | None] = {}
    current, last_pos = None, 0
    for rec in records(path, vcf):
        chrom = rec.CHROM
        if chrom != current:
            current, last_pos = chrom, 0
        if rec.POS < last_pos:
            raise InputFileError(path, f"records are not sorted by position at {chrom}:{rec.POS}")
        last_pos = rec.POS
        counts["records"] += 1
        if chrom not in name_map:
            name_map[chrom] = match_contig(chrom, known)
        panel_chrom = name_map[chrom]
        if panel_chrom is None:
            counts["other_contig"] += 1
            continue
        candidates = by_position[panel_chrom].get(rec.POS)
        if not candidates:
            counts["not_in_panel"] += len(rec.ALT) or 1
            continue
        pairs, phased, haploid = _diploid_view(path, rec)
        raw = pairs.reshape(n_haps)
        unphased_gt = ~phased
        matches = []
        for k, alt in enumerate(rec.ALT, start=1):
            alleles = np.where(raw < 0, MISSING, (raw == k).astype(np.int8)).astype(np.int8)
            present = alleles[alleles >= 0]
            target_freq = float(present.mean()) if len(present) else 0.5
            idx, flip, case = match_alleles(rec.REF, alt, candidates, target_freq)
            if case == "ambiguous_unresolved" and panel_haplotypes is None:
                idx, case = None, "ambiguous_dropped"
            matches.append((k, alt, idx, flip, case))
        # An allele of this record that matches no panel site says nothing of the panel's alleles
        # here: its calls are missing at the record's other sites, as '.' is, not REF.
        absent = [k for k, _, idx, _, _ in matches if idx is None]
        if absent and len(absent) < len(matches):
            unknown = np.isin(raw, absent)
            counts["absent_allele_calls"] += int(unknown.reshape(-1, 2).any(axis=1).sum())
            raw = np.where(unknown, MISSING, raw)
        for k, alt, idx, flip, case in matches:
            alleles = np.where(raw < 0, MISSING, (raw == k).astype(np.int8)).astype(np.int8)
            label = f"{chrom}:{rec.POS}:{rec.REF}:{alt}"
            if case == "ambiguous_unresolved":
                assert idx is not None  # its panel site, left to orient by linkage
                waiting = pending.setdefault(panel_chrom, {})
                if idx in waiting:
                    counts["duplicate"] += 1
                else:
                    waiting[idx] = (alleles, unphased_gt, haploid, len(ambiguous))
                    ambiguous.append(label)  # its action is added once it is decided
                continue
            counts[case] += 1
            if case.startswith("ambiguous"):
                ambiguous.append(f"{label} {'dropped' if idx is None else ('flipped' if flip else 'kept')}")
            if idx is None:
                continue
            if flip:
                alleles = _flipped(alleles)
            _store(per_contig.setdefault(panel_chrom, {}), idx, alleles, unphased_gt, haploid, counts)
    vcf.close()
    for chrom, waiting_sites in pending.items():
        _orient_by_linkage(chrom, waiting_sites, per_contig.setdefault(chrom, {}), panel_haplotypes, counts, ambiguous)
    contigs = {}
    for chrom in known:
        found = per_contig.get(chrom)
        if not found:
            continue
        index = np.asarray(sorted(found), dtype=np.int64)
        contigs[chrom] = TargetContig(
            index,
            np.stack([found[i][0] for i in index]),
            np.stack([found[i][1] for i in index]),
            np.stack([found[i][2] for i in index]),
        )
    names = {mapped: chrom for chrom, mapped in name_map.items() if mapped is not None and mapped != chrom}
    if names:
        counts["renamed_contigs"] = [f"{chrom}->{mapped}" for mapped, chrom in names.items()]
    counts["ambiguous_sites"] = ambiguous
    return Target(samples, contigs, counts, names)


def _flipped(alleles: np.ndarray) -> np.ndarray:
    return np.where(alleles == MISSING, MISSING, 1 - alleles).astype(np.int8)


def _store(found: dict, idx: int, alleles: np.ndarray, unphased_gt: np.ndarray, haploid: np.ndarray,
           counts: dict) -> None:
    """Keep a matched record's alleles at panel site `idx`, unless an earlier record took that site."""
    if idx in found:
        counts["duplicate"] += 1
        return
    counts["matched"] += 1
    pairs = alleles.reshape(-1, 2)
    het = unphased_gt & (pairs[:, 0] != pairs[:, 1]) & (pairs >= 0).all(axis=1)
    counts["unphased_het"] += int(het.sum())
    found[idx] = (alleles, het, haploid)


def _orient_by_linkage(chrom: str, pending: dict, found: dict, panel_haplotypes, counts: dict,
                       ambiguous: list[str]) -> None:
    """Orient a contig's A/T and C/G SNPs that frequency could not by their correlations with the
    nearest unambiguous markers (`spinimpute.io.strand`); store them or count them dropped."""
    known = np.asarray(sorted(found), dtype=np.int64)
    flanks_of = {}
    for idx in pending:
        at = int(np.searchsorted(known, idx))
        flanks_of[idx] = known[max(0, at - strand.FLANK_MARKERS) : at + strand.FLANK_MARKERS]
    decisions = {}
    in_order = sorted(pending)
    for first in range(0, len(in_order), LINKAGE_BATCH):
        # The panel's rows of a batch of neighbouring SNPs and their flanks in one read (a read per
        # SNP decodes the same blocks of the model file again and again).
        batch = in_order[first : first + LINKAGE_BATCH]
        needed = np.unique(np.concatenate([batch, *(flanks_of[idx] for idx in batch)]).astype(np.int64))
        rows = panel_haplotypes(chrom, needed)
        for idx in batch:
            alleles, flanks = pending[idx][0], flanks_of[idx]
            panel = rows[np.searchsorted(needed, np.concatenate([[idx], flanks]).astype(np.int64))]
            target_flanks = np.stack([found[i][0] for i in flanks]) if len(flanks) else np.zeros((0, len(alleles)))
            decisions[idx] = strand.linkage_orientation(panel[0], panel[1:], alleles, target_flanks)
    # Stored only once all are decided, so that no SNP of uncertain strand serves as a neighbour.
    for idx, (alleles, unphased_gt, haploid, label_at) in pending.items():
        decision = decisions[idx]
        if idx in found:  # a later record at the same panel site took it
            counts["duplicate"] += 1
            ambiguous[label_at] += " duplicate"
            continue
        if decision == strand.UNDECIDED:
            counts["ambiguous_dropped"] += 1
            ambiguous[label_at] += " dropped"
            continue
        counts["ambiguous_linkage"] += 1
        ambiguous[label_at] += " flipped by linkage" if decision == strand.FLIP else " kept by linkage"
        _store(found, idx, _flipped(alleles) if decision == strand.FLIP else alleles, unphased_gt, haploid, counts)


def read_dosages(path, *, field: str = "DS", threads: int = 1):
    """Read per-sample ALT dosages of biallelic records.

    Args:
        field: FORMAT field holding dosages, or "GT" to count ALT alleles of the genotype.

    Returns:
        samples, and a dict mapping (contig, pos, ref, alt) to a (n_samples,) float32
        dosage array (NaN where missing), plus a dict of INFO flags per key
        ("IMP", "TYPED", "IMPUTED") present on the record.
    """
    vcf = open_vcf(path, threads)
    samples = list(vcf.samples)
    _check_samples(path, samples)
    # (Records without GT fail in `_diploid_view`; a header may leave GT undeclared, as htslib tolerates.)
    if field != "GT" and ("FORMAT", field) not in declared_fields(vcf):
        raise InputFileError(path, f"no FORMAT/{field} in the header" + (" (dosages)" if field == "DS" else ""))
    dosages = {}
    flags = {}
    for rec in records(path, vcf):
        if len(rec.ALT) != 1:
            continue
        key = (rec.CHROM, rec.POS, rec.REF, rec.ALT[0])
        if field == "GT":
            pairs, _, haploid = _diploid_view(path, rec)
            alleles = pairs.astype(np.float32)
            alleles[alleles < 0] = np.nan
            alleles[haploid, 1] = 0.0  # a haploid call counts its one allele once
            ds = alleles.sum(axis=1)
        else:
            values = rec.format(field)
            if values is None:
                raise InputFileError(path, f"record {rec.CHROM}:{rec.POS} has no FORMAT/{field}")
            ds = np.asarray(values, dtype=np.float32)[:, 0]
        dosages[key] = ds
        flags[key] = {f for f in ("IMP", "TYPED", "IMPUTED") if rec.INFO.get(f) is not None}
    vcf.close()
    return samples, dosages, flags


def read_site_keys(path, *, threads: int = 1) -> set[tuple[str, int, str, str]]:
    """The (contig, pos, ref, alt) keys of a VCF's biallelic records."""
    vcf = open_vcf(path, threads)
    keys = {(r.CHROM, r.POS, r.REF, r.ALT[0]) for r in records(path, vcf) if len(r.ALT) == 1}
    vcf.close()
    return keys

