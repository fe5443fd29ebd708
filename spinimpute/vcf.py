"""VCF input and output: files to numpy arrays and back.

Nothing here knows about models. Reading uses cyvcf2 (htslib); writing produces BGZF
text compressed on several threads and its tabix index as the text is written, both
published by renaming so that no partial output is ever visible under the final name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from isal import isal_zlib

from spinimpute import kernels, strand
from spinimpute.errors import InputFileError, OutputFileError, check_output_path
from spinimpute.tabix import TabixIndexBuilder

MISSING = -1  # allele code for a missing target allele


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
    """A phased reference panel on one contig.

    Attributes:
        sites: the panel's biallelic sites (multiallelic records are split).
        haplotypes: (n_sites, n_haplotypes) uint8 ALT indicators; haplotype 2i and
            2i+1 belong to sample i.
    """

    sites: Sites
    haplotypes: np.ndarray


@dataclass
class Panel:
    samples: list[str]
    contigs: dict[str, PanelContig]


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
        n_draws: phasings drawn beside the one in `alleles` (`spinimpute.phasing.phase_contig`).
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
    samples: list[str]
    contigs: dict[str, TargetContig]
    counts: dict[str, int]


def _open_vcf(path, threads: int = 1):
    import cyvcf2

    path = str(path)
    if path != "-" and not os.path.exists(path):
        raise InputFileError(path, "file not found")
    if path != "-" and not os.access(path, os.R_OK):
        raise InputFileError(path, "file is not readable")
    if path != "-" and _missing_bgzf_eof(path):
        raise InputFileError(path, "truncated BGZF file (no end-of-file marker)")
    try:
        return cyvcf2.VCF(path, threads=max(1, threads), lazy=True)
    except Exception as exc:  # noqa: BLE001 - cyvcf2 raises bare Exception on bad headers
        raise InputFileError(path, _header_problem(path) or f"not a readable VCF/BCF file ({exc})") from None


# The empty block that ends every complete BGZF file (SAM/BAM specification, 4.1.2).
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def _missing_bgzf_eof(path: str) -> bool:
    """True for a BGZF (or BCF) file cut short: gzip magic at the start, no EOF block at the end."""
    with open(path, "rb") as handle:
        if handle.read(4) != _BGZF_EOF[:4]:
            return False  # plain text, or plain gzip (which htslib rejects with its own message)
        handle.seek(0, os.SEEK_END)
        if handle.tell() < len(_BGZF_EOF):
            return True
        handle.seek(-len(_BGZF_EOF), os.SEEK_END)
        return handle.read() != _BGZF_EOF


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


def _records(path, vcf) -> Iterator:
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


def read_panel(path, *, threads: int = 1) -> Panel:
    """Read a phased reference panel.

    Multiallelic records are split into one biallelic site per ALT allele. Every
    genotype must be phased, diploid and non-missing.
    """
    vcf = _open_vcf(path, threads)
    samples = list(vcf.samples)
    _check_samples(path, samples)
    n_haps = 2 * len(samples)
    contigs: dict[str, dict] = {}
    current = None
    last_pos = 0
    for rec in _records(path, vcf):
        chrom = rec.CHROM
        if chrom != current:
            if chrom in contigs:
                raise InputFileError(path, f"records of contig '{chrom}' are not contiguous; sort the file")
            contigs[chrom] = {"pos": [], "id": [], "ref": [], "alt": [], "hap": []}
            current, last_pos = chrom, 0
        if rec.POS < last_pos:
            raise InputFileError(path, f"records are not sorted by position at {chrom}:{rec.POS}")
        last_pos = rec.POS
        alts = rec.ALT
        if not alts:
            continue  # monomorphic record without ALT carries no information
        alleles, phased, _ = _diploid_view(path, rec)
        if (alleles < 0).any():
            raise InputFileError(path, f"missing genotype at {chrom}:{rec.POS}; the panel must be complete")
        if not phased.all():
            raise InputFileError(path, f"unphased genotype at {chrom}:{rec.POS}; the panel must be phased")
        flat = alleles.reshape(n_haps)
        entry = contigs[chrom]
        for k, alt in enumerate(alts, start=1):
            entry["pos"].append(rec.POS)
            entry["id"].append(rec.ID or ".")
            entry["ref"].append(rec.REF)
            entry["alt"].append(alt)
            entry["hap"].append((flat == k).astype(np.uint8))
    vcf.close()
    if not contigs:
        raise InputFileError(path, "the file has no variant records")
    panel_contigs = {}
    for chrom, e in contigs.items():
        sites = Sites(chrom, np.asarray(e["pos"], dtype=np.int64), e["id"], e["ref"], e["alt"])
        haps = np.stack(e["hap"]) if e["hap"] else np.zeros((0, n_haps), np.uint8)
        panel_contigs[chrom] = PanelContig(sites, haps)
    return Panel(samples, panel_contigs)


def match_contig(name: str, known: list[str]) -> str | None:
    """The contig of `known` that `name` refers to, reconciling 'chr20' and '20'."""
    if name in known:
        return name
    alt = name[3:] if name.startswith("chr") else "chr" + name
    return alt if alt in known else None


_COMPLEMENT = {"A": "T", "T": "A", "C": "G", "G": "C"}
AMBIGUOUS_MAX_MAF = 0.4  # palindromic SNPs nearer 50 % than this cannot be oriented by frequency


def match_alleles(
    ref: str, alt: str, candidates: list[tuple[int, str, str, float]], target_alt_freq: float
) -> tuple[int | None, bool, str]:
    """Match a target biallelic record to one of the panel sites at its position.

    Args:
        ref, alt: the target's alleles.
        candidates: (panel index, REF, ALT, panel ALT frequency) of the panel sites at
            the same position.
        target_alt_freq: ALT frequency among the target's non-missing alleles.

    Returns:
        (panel index or None, whether to flip the target's 0/1 alleles, case), with case
        one of "exact", "swapped", "strand", "strand_swapped", "ambiguous_resolved" (an
        A/T or C/G SNP oriented by frequency), "ambiguous_unresolved" (one too near 50 %
        for that: its index is returned unflipped) and "allele_mismatch".
    """
    snp = len(ref) == 1 and len(alt) == 1 and ref in _COMPLEMENT and alt in _COMPLEMENT
    palindromic = snp and _COMPLEMENT[ref] == alt
    for index, p_ref, p_alt, p_freq in candidates:
        if palindromic and {p_ref, p_alt} == {ref, alt}:
            # A/T or C/G: the strand is unknown, so orient by allele frequency.
            if min(p_freq, 1 - p_freq) > AMBIGUOUS_MAX_MAF:
                return index, False, "ambiguous_unresolved"
            flip = abs((1 - target_alt_freq) - p_freq) < abs(target_alt_freq - p_freq)
            return index, flip, "ambiguous_resolved"
        if (ref, alt) == (p_ref, p_alt):
            return index, False, "exact"
        if (ref, alt) == (p_alt, p_ref):
            return index, True, "swapped"
    if snp and not palindromic:
        c_ref, c_alt = _COMPLEMENT[ref], _COMPLEMENT[alt]
        for index, p_ref, p_alt, _ in candidates:
            if (c_ref, c_alt) == (p_ref, p_alt):
                return index, False, "strand"
            if (c_ref, c_alt) == (p_alt, p_ref):
                return index, True, "strand_swapped"
    return None, False, "allele_mismatch"


# Counted outcomes of matching a record: match_alleles' cases, but that an A/T or C/G SNP
# too near 50 % to orient by frequency ends "ambiguous_linkage" (oriented by its neighbours)
# or "ambiguous_dropped".
MATCH_CASES = ("exact", "swapped", "strand", "strand_swapped", "ambiguous_resolved", "ambiguous_linkage",
               "ambiguous_dropped", "allele_mismatch")


def read_target(
    path, panel_sites: dict[str, Sites], panel_alt_freq: dict[str, np.ndarray] | None = None, *,
    panel_haplotypes: Callable[[str, np.ndarray], np.ndarray] | None = None, threads: int = 1
) -> Target:
    """Read target genotypes at the panel's sites, in panel orientation.

    Multiallelic records are split into biallelic ones. Each is matched to the panel by
    position and alleles (`match_alleles`): REF/ALT swaps are flipped, strand flips of
    non-palindromic SNPs are complemented, A/T and C/G SNPs are oriented by allele
    frequency, or else by linkage with the neighbouring markers (`spinimpute.strand`; needs
    `panel_haplotypes`) or dropped, and other records are dropped. `Target.counts` counts
    each case.

    Args:
        panel_haplotypes: (contig, (n,) site indices) -> (n, R) uint8 panel ALT indicators.
    """
    vcf = _open_vcf(path, threads)
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
    counts = {"records": 0, "matched": 0, **{c: 0 for c in MATCH_CASES}, "not_in_panel": 0, "duplicate": 0,
              "other_contig": 0, "unphased_het": 0}
    per_contig: dict[str, dict[int, tuple]] = {}
    ambiguous: list[str] = []  # A/T and C/G records and what was done with each
    pending: dict[str, dict[int, tuple]] = {}  # A/T and C/G SNPs left to orient by linkage
    name_map: dict[str, str | None] = {}
    current, last_pos = None, 0
    for rec in _records(path, vcf):
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
        for k, alt in enumerate(rec.ALT, start=1):
            alleles = np.where(raw < 0, MISSING, (raw == k).astype(np.int8)).astype(np.int8)
            present = alleles[alleles >= 0]
            target_freq = float(present.mean()) if len(present) else 0.5
            idx, flip, case = match_alleles(rec.REF, alt, candidates, target_freq)
            label = f"{chrom}:{rec.POS}:{rec.REF}:{alt}"
            if case == "ambiguous_unresolved" and panel_haplotypes is None:
                idx, case = None, "ambiguous_dropped"
            if case == "ambiguous_unresolved":
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
    for chrom, sites in pending.items():
        _orient_by_linkage(chrom, sites, per_contig.setdefault(chrom, {}), panel_haplotypes, counts, ambiguous)
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
    for chrom, mapped in name_map.items():
        if mapped is not None and mapped != chrom:
            counts.setdefault("renamed_contigs", []).append(f"{chrom}->{mapped}")
    counts["ambiguous_sites"] = ambiguous
    return Target(samples, contigs, counts)


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
    nearest unambiguous markers (`spinimpute.strand`); store them or count them dropped."""
    known = np.asarray(sorted(found), dtype=np.int64)
    decisions = {}
    for idx, (alleles, *_rest) in pending.items():
        at = int(np.searchsorted(known, idx))
        flanks = known[max(0, at - strand.FLANK_MARKERS) : at + strand.FLANK_MARKERS]
        panel = panel_haplotypes(chrom, np.concatenate([[idx], flanks]).astype(np.int64))
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
    vcf = _open_vcf(path, threads)
    samples = list(vcf.samples)
    _check_samples(path, samples)
    # (Records without GT fail in `_diploid_view`; a header may leave GT undeclared, as htslib tolerates.)
    if field != "GT" and ("FORMAT", field) not in declared_fields(vcf):
        raise InputFileError(path, f"no FORMAT/{field} in the header" + (" (dosages)" if field == "DS" else ""))
    dosages = {}
    flags = {}
    for rec in _records(path, vcf):
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
    vcf = _open_vcf(path, threads)
    keys = {(r.CHROM, r.POS, r.REF, r.ALT[0]) for r in _records(path, vcf) if len(r.ALT) == 1}
    vcf.close()
    return keys


# --------------------------------------------------------------------------- writing


def _process_umask() -> int:
    umask = os.umask(0)  # reading the umask means setting it; done once, at import, before any thread starts
    os.umask(umask)
    return umask


# The permissions open() gives a new file under the process's umask (0644 under 022).
_NEW_FILE_MODE = 0o666 & ~_process_umask()


@contextlib.contextmanager
def atomic_output(path, *, index: bool = True):
    """Yield a temporary path to write; publish it (and its .tbi) under `path` on success.

    With `index`, the .tbi is the one the writer left at the temporary path + '.tbi', or
    else made with tabix.

    On any failure or interrupt the temporary files are removed and nothing appears
    under the final name. SIGTERM is turned into an exception so that `kill` cleans up
    too.
    """
    path = check_output_path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp_index = Path(tmp_name + ".tbi")

    def _terminate(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = None
    with contextlib.suppress(ValueError):  # not in the main thread
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield tmp
        if index:
            if not tmp_index.exists():  # not indexed by its writer
                import pysam

                pysam.tabix_index(str(tmp), preset="vcf", force=True, keep_original=True)
            os.replace(tmp_index, str(path) + ".tbi")
        # mkstemp's 0600, or a writer's own (safetensors replaces the file), would make it private.
        tmp.chmod(_NEW_FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputFileError(path, f"could not write: {exc.strerror or exc}") from None
    finally:
        for leftover in (tmp, tmp_index):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


# BGZF as in the SAM specification: gzip members of at most 64 KiB, each with its compressed
# size in a 'BC' extra field, so that tabix can seek; an empty member marks the end.
_BGZF_BLOCK_INPUT = 0xFF00
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
# ISA-L level (0-3). On imputed genotype text level 1 deflates 3.3 GB/s per core, twelve times
# zlib's level 4 (used before), for a third more bytes (ratio 30 vs 41); that compression had
# been a seventh of impute CPU time.
BGZF_LEVEL = 1


def _bgzf_block(data: bytes, level: int) -> bytes:
    payload = isal_zlib.compress(data, level, -15)
    header = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x06\x00BC\x02\x00"
    size = len(header) + 2 + len(payload) + 8 - 1
    return header + struct.pack("<H", size) + payload + struct.pack("<II", isal_zlib.crc32(data), len(data))


class BgzfTextWriter:
    """Writes text as BGZF, compressing blocks on `threads` threads (ISA-L releases the GIL).

    Blocks are written in order as they complete, with a bounded number in flight, so
    memory stays small and compression overlaps whatever the caller computes next.
    """

    def __init__(self, path, *, threads: int = 1, level: int = BGZF_LEVEL):
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close() / __exit__
        self._level = level
        self._buffer = bytearray()
        self._pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
        self._pending: deque = deque()
        self._max_pending = 4 * threads
        self._block_offsets: list[int] = []

    def write(self, text: str | bytes) -> None:
        self._buffer += text.encode() if isinstance(text, str) else text
        if len(self._buffer) >= _BGZF_BLOCK_INPUT:
            cut = len(self._buffer) - len(self._buffer) % _BGZF_BLOCK_INPUT
            data = bytes(self._buffer[:cut])
            del self._buffer[:cut]
            for i in range(0, cut, _BGZF_BLOCK_INPUT):
                self._submit(data[i : i + _BGZF_BLOCK_INPUT])

    def _submit(self, chunk: bytes) -> None:
        if self._pool is None:
            self._write_block(_bgzf_block(chunk, self._level))
            return
        self._pending.append(self._pool.submit(_bgzf_block, chunk, self._level))
        while len(self._pending) > self._max_pending or (self._pending and self._pending[0].done()):
            self._write_block(self._pending.popleft().result())

    def _write_block(self, block: bytes) -> None:
        self._block_offsets.append(self._file.tell())
        self._file.write(block)

    @property
    def block_offsets(self) -> list[int]:
        """After close: the compressed offset of each block (block k holds text
        [k * 0xFF00, (k + 1) * 0xFF00)), then that of the end-of-file marker."""
        return self._block_offsets

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            if self._buffer:
                self._submit(bytes(self._buffer))
                self._buffer.clear()
            while self._pending:
                self._write_block(self._pending.popleft().result())
            self._block_offsets.append(self._file.tell())
            self._file.write(_BGZF_EOF)
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _decimal_table(n: int) -> np.ndarray:
    """Strings for k/100 with at most two decimals, as Beagle writes them."""
    out = []
    for k in range(n + 1):
        s = f"{k / 100:.2f}".rstrip("0").rstrip(".")
        out.append(s)
    return np.asarray(out, dtype=object)


_DS_TEXT = _decimal_table(200)
_P_TEXT = _decimal_table(100)
_GT_TEXT = np.asarray(["0|0:", "0|1:", "1|0:", "1|1:"], dtype=object)


def _byte_table(strings, width: int) -> np.ndarray:
    """(n, width) uint8 rows holding each string, NUL-padded (NUL never occurs in VCF text)."""
    table = np.zeros((len(strings), width), dtype=np.uint8)
    for i, text in enumerate(strings):
        raw = text.encode()
        table[i, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return table


# A diploid field is GT + ":" + DS (indexed by GT * 201 + DS in hundredths, at most 8
# bytes) and ":" + GP + "\t" (indexed by P(0) * 101 + P(2) in hundredths; P(1) is what
# they leave), each with its length; a compiled loop copies them (`kernels.diploid_text`).
_GT_DS_BYTES = _byte_table([gt + ds for gt in _GT_TEXT for ds in _DS_TEXT], 8)
_GP_BYTES = _byte_table(
    [f":{_P_TEXT[g0]},{_P_TEXT[max(0, 100 - g0 - g2)]},{_P_TEXT[g2]}\t" for g0 in range(101) for g2 in range(101)],
    16,
)
# Without GP the second field is the tab alone, whatever the probabilities.
_NO_GP_BYTES = _byte_table(["\t"] * len(_GP_BYTES), 1)


def _diploid_codes(hap_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Table indices of each call's GT:DS and GP text, (n_sites, n_samples) each."""
    p = hap_prob.reshape(hap_prob.shape[0], -1, 2)
    p1, p2 = p[..., 0], p[..., 1]
    ds = np.rint((p1 + p2) * 100).astype(np.int64)
    gp0 = np.rint((1 - p1) * (1 - p2) * 100).astype(np.int64)
    gp2 = np.rint(p1 * p2 * 100).astype(np.int64)
    gt = (p1 >= 0.5).astype(np.int64) * 2 + (p2 >= 0.5).astype(np.int64)
    return gt * 201 + ds, gp0 * 101 + gp2


def format_genotype_rows(hap_prob: np.ndarray, haploid: np.ndarray | None = None, *, gp: bool = True) -> list[bytes]:
    """Each site's sample columns as bytes, every field preceded by a tab.

    Args:
        hap_prob: (n_sites, n_haplotypes) ALT probabilities, sample i at 2i and 2i+1.
        haploid: optional (n_sites, n_samples) bool; haploid calls are written with one
            allele, DS in [0, 1] and two GP values, from the mean of the two slots.
        gp: write GT:DS:GP; GT:DS if False.
    """
    if haploid is not None and haploid.any():
        return [("\t" + "\t".join(row)).encode() for row in format_genotype_block(hap_prob, haploid, gp=gp)]
    gp_table, gp_lengths = (_GP_BYTES, _GP_LENGTHS) if gp else (_NO_GP_BYTES, _NO_GP_LENGTHS)
    text, ends = kernels.diploid_text(hap_prob, _GT_DS_BYTES, _GT_DS_LENGTHS, gp_table, gp_lengths)
    ends = ends.tolist()
    text = text[: ends[-1] if ends else 0].tobytes()
    return [text[a:b] for a, b in zip([0, *ends[:-1]], ends)]


def format_genotype_block(hap_prob: np.ndarray, haploid: np.ndarray | None = None, *, gp: bool = True) -> np.ndarray:
    """Per-sample 'GT:DS:GP' ('GT:DS' if not `gp`) strings for a block of sites.

    Args:
        hap_prob: (n_sites, n_haplotypes) ALT probabilities, sample i at 2i and 2i+1.
        haploid: optional (n_sites, n_samples) bool; haploid calls are written with one
            allele, DS in [0, 1] and two GP values, from the mean of the two slots.

    Returns:
        (n_sites, n_samples) object array of strings.
    """
    gt_ds, gp_code = _diploid_codes(hap_prob)
    fields = _GT_DS_TEXT[gt_ds] + _GP_TEXT[gp_code] if gp else _GT_DS_TEXT[gt_ds]
    if haploid is not None and haploid.any():
        p = hap_prob.reshape(hap_prob.shape[0], -1, 2).mean(axis=2)
        k = np.rint(p * 100).astype(np.int64)
        single = np.where(p >= 0.5, "1:", "0:").astype(object) + _P_TEXT[k]
        if gp:
            single = single + ":" + _P_TEXT[100 - k] + "," + _P_TEXT[k]
        fields = np.where(haploid, single, fields)
    return fields


_GT_DS_LENGTHS, _GP_LENGTHS = (_GT_DS_BYTES != 0).sum(axis=1), (_GP_BYTES != 0).sum(axis=1)
_NO_GP_LENGTHS = (_NO_GP_BYTES != 0).sum(axis=1)
_GT_DS_TEXT = np.asarray([row.tobytes().rstrip(b"\0").decode() for row in _GT_DS_BYTES], dtype=object)
_GP_TEXT = np.asarray([row.tobytes().rstrip(b"\0").decode()[:-1] for row in _GP_BYTES], dtype=object)

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
    text: bytes
    beg: np.ndarray
    end: np.ndarray
    lengths: np.ndarray


class ImputedVcfWriter:
    """Writes imputed sites as a Beagle-style VCF (GT, DS, GP; INFO AF, DR2, IMP) in BGZF.

    With `index_path`, also writes the file's tabix index there on close. Without `gp`,
    the FORMAT fields are GT:DS only (as Beagle writes by default).
    """

    def __init__(self, path, *, samples: list[str], contigs: list[str], extra_header: list[str], threads: int = 1,
                 index_path=None, gp: bool = True):
        self._out = BgzfTextWriter(path, threads=threads)
        self._index = TabixIndexBuilder() if index_path is not None else None
        self._index_path = index_path
        self.gp = gp
        lines = ["##fileformat=VCFv4.2", *extra_header]
        lines += [f"##contig=<ID={c}>" for c in contigs]
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
        genotypes = format_genotype_rows(hap_prob, haploid, gp=self.gp)
        format_keys = "GT:DS:GP" if self.gp else "GT:DS"
        parts = []
        lengths = np.empty(len(genotypes), dtype=np.int64)
        ref_lengths = np.empty(len(genotypes), dtype=np.int64)
        for k, columns in enumerate(genotypes):
            i = start + k
            info = f"AF={af[k]:.4g};DR2={dr2[k]:.2f}" + ("" if typed[k] else ";IMP")
            fixed = (
                f"{sites.contig}\t{sites.positions[i]}\t{sites.ids[i]}\t{sites.refs[i]}\t{sites.alts[i]}"
                f"\t.\tPASS\t{info}\t{format_keys}".encode()
            )
            parts += (fixed, columns, b"\n")
            lengths[k] = len(fixed) + len(columns) + 1
            ref_lengths[k] = len(sites.refs[i])
        beg = np.asarray(sites.positions[start : start + len(genotypes)], dtype=np.int64) - 1
        return RecordBlock(sites.contig, b"".join(parts), beg, beg + ref_lengths, lengths)

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
        if self._index is not None:
            write_bgzf(self._index_path, self._index.index_bytes(self._out.block_offsets, _BGZF_BLOCK_INPUT))
            self._index = None


def write_bgzf(path, data: bytes) -> None:
    """Write `data` as a BGZF file."""
    with BgzfTextWriter(path) as out:
        out.write(data)
