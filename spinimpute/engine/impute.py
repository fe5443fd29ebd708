"""The imputation engine: runs a model over the windows of each contig.

For each group of windows it groups the panel's haplotypes between the target's typed
markers, runs the copying model for the target haplotypes in batches and the SPIN
predictor per window, and hands back the probabilities of each window's core sites, so
windows stream and memory does not grow with contig length. The engine works on numpy
arrays; the model is a backend behind the `Imputer` protocol: `spinimpute.engine.cpu.CpuImputer`
(numpy and compiled loops, no torch) or `spinimpute.engine.torch_backend.TorchImputer` (the
torch module on a GPU), which take and give the same arrays.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Self

import numpy as np

from spinimpute.compiled import compiled, run_parts
from spinimpute.engine.protocol import Imputer
from spinimpute.errors import OutputFileError
from spinimpute.model import copying_numpy
from spinimpute.model.config import EVIDENCE_FEATURES, MASKED
from spinimpute.model.features import site_features
from spinimpute.panel import ReferenceContig
from spinimpute.target import TargetContig

log = logging.getLogger(__name__)

# Bytes of working memory per batch of query haplotypes; bounds peak memory per window.
QUERY_BATCH_BUDGET = 512 * 2**20
# Typed markers beyond each end of a group of windows that the copying model reads: a
# window's own flank holds few markers where the panel is dense or the array sparse, and
# the HMM needs that context (BENCHMARKS.md, constants).
CONTEXT_MARKERS = 192
# Sites of consecutive windows' cores imputed in one run of the copying model, so that
# the context markers are paid once per group rather than once per window.
HMM_BLOCK_SITES = 64000
# Target haplotypes whose copying states are chosen at once (at most; or one query batch).
SELECTION_HAPLOTYPES = 8192
# Bytes of a group's results (float32 per core site and target haplotype) held in memory until its
# windows are written. A larger cohort's results go to a temporary file (in TMPDIR) batch by batch
# and are read back in pieces of SPILL_PIECE_BYTES, so that memory does not grow with the cohort and
# groups keep their size (shrinking them repeats the context markers: BENCHMARKS.md, cohort size).
GROUP_RESULT_BYTES = 3 << 29
SPILL_PIECE_BYTES = 64 * 2**20


def predict_probabilities(model: Imputer, *, inducing, hmm_prob, hmm_evidence, typed_columns, typed_alleles,
                          features) -> np.ndarray:
    """ALT probabilities (Q, W') of a window's sites from the copying model's (Q, W') and the SPIN predictor.

    Args:
        inducing: (I, F*E) the window's inducing points.
        hmm_evidence: (Q, W', EVIDENCE_FEATURES) the copying model's evidence.
        typed_columns: (M,) positions of the typed markers among the W' sites.
        typed_alleles: (Q, M) their alleles, negative where missing; observed alleles are
            returned as they are (0 or 1).
        features: (W', SITE_FEATURES) site features.
    """
    query_alleles = np.full(hmm_prob.shape, MASKED, dtype=np.int8)
    query_alleles[:, typed_columns] = np.where(typed_alleles >= 0, typed_alleles, MASKED)
    prob = model.predict(inducing=inducing, query_alleles=query_alleles, hmm_prob=hmm_prob, hmm_evidence=hmm_evidence,
                         site_features=features)
    prob[:, typed_columns] = np.where(typed_alleles >= 0, typed_alleles, prob[:, typed_columns])
    return prob


@dataclass
class ImputedBlock:
    """Results for the core sites [start, stop) of one window.

    Attributes:
        hap_prob: (stop - start, n_target_haplotypes) float32 ALT probabilities; typed,
            observed alleles are exactly 0 or 1.
        typed: (stop - start,) bool, sites present in the target.
        haploid: (stop - start, n_samples) bool ploidy of each call, or None if all diploid.
    """

    contig: str
    start: int
    stop: int
    hap_prob: np.ndarray
    typed: np.ndarray
    haploid: np.ndarray | None = None


def query_batch_size(n_markers: int, n_states: int, *, compiled: bool = False, n_sites: int = 0,
                     budget: int | None = None) -> int:
    """Query haplotypes per batch within `budget` bytes (QUERY_BATCH_BUDGET by default)."""
    if compiled:
        # The compiled copying model keeps its state per thread: what grows with the batch is
        # the float32 probabilities, evidence and logits of the sites.
        per_query = (16 + 4 * EVIDENCE_FEATURES) * n_sites
    else:
        # The torch copying model at its peak, per marker and state: the gathered states, emissions,
        # alpha and gamma as lists and stacked (float32), and the states' int64 interval groups.
        per_query = 32 * n_markers * n_states
    return max(1, (budget or QUERY_BATCH_BUDGET) // max(1, per_query))


def window_groups(contig: ReferenceContig, sites: range | None) -> list[list[int]]:
    """Consecutive windows imputed together: fixed by the model, whatever `sites` is and whatever
    the cohort's size (so a chunk's or a sample's results are those of a whole-contig, whole-cohort run)."""
    per_group = max(1, HMM_BLOCK_SITES // max(1, max((w.core_stop - w.core_start for w in contig.windows), default=1)))
    needed = contig.windows_covering(sites)
    groups: dict[int, list[int]] = {}
    for w_index in needed:
        first = w_index // per_group * per_group
        groups.setdefault(first, list(range(first, min(len(contig.windows), first + per_group))))
    return list(groups.values())


def impute_contig(
    model: Imputer,
    contig: ReferenceContig,
    target: TargetContig,
    *,
    name: str,
    sites: range | None = None,
) -> Iterator[ImputedBlock]:
    """Impute the sites of a panel contig (all, or the index range `sites`), one block per window.

    The copying model runs once per group of consecutive windows (`window_groups`), over
    the group's sites and the typed markers from CONTEXT_MARKERS before it to
    CONTEXT_MARKERS after it; the SPIN predictor then runs per window with the window's
    inducing points. Groups are fixed by the model, so a site gets the same result
    whether a run covers the whole contig or only a region around it.
    """
    typed_sites = np.zeros(len(contig.sites), dtype=bool)
    typed_sites[target.site_index] = True
    needed = set(contig.windows_covering(sites))
    for group in window_groups(contig, sites):
        with _GroupResults([contig.windows[i].core_stop - contig.windows[i].core_start for i in group],
                           target.alleles.shape[1], threads=model.threads) as results:
            _impute_group(model, contig, target, group, results)
            for position, w_index in enumerate(group):
                if w_index not in needed:
                    continue
                core_start = contig.windows[w_index].core_start
                for offset, hap_prob in results.pieces(position):
                    lo, hi = core_start + offset, core_start + offset + len(hap_prob)
                    if sites is not None:
                        lo, hi = max(lo, sites.start), min(hi, sites.stop)
                        if lo >= hi:
                            continue
                        hap_prob = hap_prob[lo - core_start - offset : hi - core_start - offset]
                    yield ImputedBlock(name, lo, hi, hap_prob, typed_sites[lo:hi],
                                       target.haploid_at(np.arange(lo, hi), contig.sites.positions))


class _GroupResults:
    """A group's results, (core sites, target haplotypes) float32 per window, put a batch of
    haplotypes at a time: in memory within GROUP_RESULT_BYTES, else in a temporary file, each
    batch's block of each window stored row by row, read back in pieces of SPILL_PIECE_BYTES."""

    def __init__(self, core_sizes: list[int], n_haplotypes: int, *, threads: int = 1):
        self.core_sizes, self.n_haplotypes, self.threads = core_sizes, n_haplotypes, threads
        self.spilled = 4 * sum(core_sizes) * n_haplotypes > GROUP_RESULT_BYTES
        self.arrays: list[np.ndarray] = []
        self.stored: list[list[tuple[int, int, int]]] = [[] for _ in core_sizes]  # (first column, columns, offset)
        self.end = 0
        self.file = None
        self.fd = -1
        self.directory = tempfile.gettempdir()
        if self.spilled:
            try:
                # Closed (and so removed) by __exit__; an unnamed file leaves nothing behind a kill -9.
                self.file = tempfile.TemporaryFile(dir=self.directory, prefix="spinimpute-", buffering=0)  # noqa: SIM115
                self.fd = self.file.fileno()
            except OSError as exc:
                raise OutputFileError(self.directory, f"cannot create a temporary file for a large cohort's results: "
                                                      f"{exc.strerror or exc}") from None
        else:
            self.arrays = [np.empty((n, n_haplotypes), dtype=np.float32) for n in core_sizes]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()

    def put(self, window: int, first: int, values: np.ndarray) -> None:
        """The (core sites, columns) results of window `window` for haplotypes first, first + 1, ..."""
        if not self.spilled:
            copy_tiled(values, self.arrays[window][:, first : first + values.shape[1]], threads=self.threads)
            return
        contiguous = np.empty(values.shape, dtype=np.float32)
        copy_tiled(values, contiguous, threads=self.threads)
        data = contiguous.data.cast("B")
        try:
            written = 0
            while written < len(data):
                written += os.pwrite(self.fd, data[written:], self.end + written)
        except OSError as exc:
            raise OutputFileError(self.directory, f"cannot write a large cohort's results to a temporary file: "
                                  f"{exc.strerror or exc}") from None
        self.stored[window].append((first, values.shape[1], self.end))
        self.end += len(data)

    def pieces(self, window: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first core row, (rows, target haplotypes) results) of window `window`, in order."""
        if not self.spilled:
            yield 0, self.arrays[window]
            return
        n_rows = self.core_sizes[window]
        step = max(1, SPILL_PIECE_BYTES // (4 * max(1, self.n_haplotypes)))
        for r0 in range(0, n_rows, step):
            r1 = min(n_rows, r0 + step)
            piece = np.empty((r1 - r0, self.n_haplotypes), dtype=np.float32)
            for first, columns, offset in self.stored[window]:
                block = np.empty((r1 - r0, columns), dtype=np.float32)
                try:
                    got = os.preadv(self.fd, [block.data.cast("B")], offset + 4 * r0 * columns)
                except OSError as exc:
                    raise OutputFileError(self.directory, f"cannot read a large cohort's results back from a "
                                                          f"temporary file: {exc.strerror or exc}") from None
                if got != block.nbytes:
                    raise OutputFileError(self.directory, f"a temporary file of a large cohort's results was cut "
                                                          f"short ({got} of {block.nbytes} bytes read)")
                piece[:, first : first + columns] = block
            yield r0, piece


def _impute_group(model: Imputer, contig: ReferenceContig, target: TargetContig, group: list[int],
                  results: _GroupResults) -> None:
    """Impute the core sites of the windows `group` for every target haplotype into `results`,
    a batch of whole samples at a time (the most likely phase, then each drawn phasing)."""
    if contig.inducing is None:
        raise ValueError("the panel's inducing points are not encoded")
    windows = [contig.windows[i] for i in group]
    k = model.kmer
    # Sites predicted per window: the whole k-mer tokens (counted from the window's start)
    # that cover its core; the copying model covers all of them.
    spans = []
    for w in windows:
        lo = w.start + (w.core_start - w.start) // k * k
        hi = min(w.stop, w.start + -(-(w.core_stop - w.start) // k) * k)
        spans.append((lo, hi))
    g_lo, g_hi = min(a for a, _ in spans), max(b for _, b in spans)
    n_ref = contig.n_haplotypes
    site_cm = contig.cm[g_lo:g_hi].astype(np.float32)
    lo, hi = np.searchsorted(target.site_index, [g_lo, g_hi])
    c_lo, c_hi = max(0, lo - CONTEXT_MARKERS), min(len(target.site_index), hi + CONTEXT_MARKERS)
    marker_sites = target.site_index[c_lo:c_hi]
    markers = contig.haplotypes_at(marker_sites)  # (M, R)
    marker_cm = contig.cm[marker_sites].astype(np.float32)
    alleles = target.alleles[c_lo:c_hi]  # (M, H), -1 missing
    n_target_haps = alleles.shape[1]
    # Drawn phasings (unphased targets): each is imputed, its slots put back in the order of
    # `alleles` (from the last typed site at or before each site) and averaged with the rest.
    flips = target.draw_flips(c_lo, c_hi)
    n_phasings = 1 + len(flips)
    # Grouped straight from the model file's packed rows: the group's sites are never unpacked.
    groups = copying_numpy.group_packed_sites(
        contig.packed_haplotypes[g_lo:g_hi], n_ref, copying_numpy.interval_bounds(marker_cm, site_cm), markers,
        threads=model.threads,
    ) if len(marker_sites) else None
    batch = query_batch_size(len(marker_sites), min(n_ref, model.copying_states), compiled=model.compiled,
                             n_sites=g_hi - g_lo, budget=model.memory_budget)
    batch = max(2, batch - batch % 2)  # whole samples: averaging phasings needs both haplotypes of each
    # Candidate states are chosen for several batches at once (a PBWT pass over a large panel serves
    # any number of queries): up to SELECTION_HAPLOTYPES whose rankings fit the batch budget, or one batch.
    per_selected = copying_numpy.selection_bytes(n_ref, min(n_ref, model.copying_states))
    selected = min(SELECTION_HAPLOTYPES, (model.memory_budget or QUERY_BATCH_BUDGET) // per_selected)
    selection_span = batch * max(1, selected // batch)

    def states_of(query: np.ndarray) -> np.ndarray | None:
        """(Q, K) candidate states of the (Q, M) query haplotypes; None where the copying model runs over all."""
        if groups is None or n_ref <= model.copying_states:
            return None
        return copying_numpy.select_candidates(markers, query, model.copying_states, threads=model.threads)

    per_window = []
    for w_index, w, (lo_w, hi_w) in zip(group, windows, spans):
        features = site_features(contig.alt_freq[w.start : w.stop], contig.cm[w.start : w.stop])
        w_lo, w_hi = np.searchsorted(marker_sites, [lo_w, hi_w])
        per_window.append({
            "inducing": contig.inducing[w_index],
            "features": features[lo_w - w.start : hi_w - w.start],
            "markers": slice(int(w_lo), int(w_hi)),
            "typed_columns": marker_sites[w_lo:w_hi] - lo_w,
            "core": slice(w.core_start - lo_w, w.core_stop - lo_w),
        })
        if n_phasings > 1:
            # The typed site (group row) at or before each core site, whose drawn slot order it takes.
            per_window[-1]["last_marker"] = np.maximum(
                np.searchsorted(marker_sites, np.arange(w.core_start, w.core_stop), side="right") - 1, 0)

    # The copying model reads each state's row of markers: laid out so once per group, not per batch.
    markers_by_haplotype = np.ascontiguousarray(markers.T)

    def core_probabilities(query: np.ndarray, candidates: np.ndarray | None) -> list[np.ndarray]:
        """(core sites, Q) ALT probabilities of each window for the (Q, M) query haplotypes."""
        if groups is not None:  # typed markers in reach
            hmm_prob, evidence = model.copy_probabilities(markers=markers_by_haplotype.T, query=query,
                                                          candidates=candidates, marker_cm=marker_cm, site_cm=site_cm,
                                                          groups=groups)
        else:
            hmm_prob, evidence = copying_numpy.frequency_posteriors(contig.alt_freq[g_lo:g_hi], len(query), n_ref)
        return [
            predict_probabilities(model, inducing=part["inducing"], hmm_prob=hmm_prob[:, lo_w - g_lo : hi_w - g_lo],
                                  hmm_evidence=evidence[:, lo_w - g_lo : hi_w - g_lo],
                                  typed_columns=part["typed_columns"], typed_alleles=query[:, part["markers"]],
                                  features=part["features"])[:, part["core"]].T
            for (lo_w, hi_w), part in zip(spans, per_window)
        ]

    target_alleles = np.ascontiguousarray(alleles.T, dtype=np.int8)  # (H, M)
    # A drawn phasing whose slot order for a sample does not change over the group's markers
    # imputes that sample as the most likely phase does (slots swapped at most, which the
    # alignment undoes): only the samples whose order changes there are imputed again.
    changed = np.asarray(flips.any(axis=1) & ~flips.all(axis=1))  # (n_draws, n_samples)

    def redo_query(draw: int, redo: np.ndarray) -> np.ndarray:
        """(2 x samples, M) the haplotypes of the samples `redo` in the slot order of drawn phasing `draw`."""
        return np.ascontiguousarray(_swap_slots(alleles[:, _haplotype_rows(redo)], flips[draw][:, redo]).T,
                                    dtype=np.int8)

    for h0 in range(0, n_target_haps, batch):
        h1 = min(n_target_haps, h0 + batch)  # whole samples: batch is even
        if h0 % selection_span == 0:
            span_start, span_states = h0, states_of(target_alleles[h0 : h0 + selection_span])
            # The drawn phasings' states too, for the span's samples whose slot order changes.
            span_samples = np.arange(h0 // 2, min(n_target_haps, h0 + selection_span) // 2)
            span_redo = [span_samples[changed[draw, span_samples]] for draw in range(n_phasings - 1)]
            redo_states = [states_of(redo_query(draw, redo)) if len(redo) else None
                           for draw, redo in enumerate(span_redo)]
        samples = np.arange(h0 // 2, h1 // 2)
        outs = core_probabilities(target_alleles[h0:h1],
                                  None if span_states is None else span_states[h0 - span_start : h1 - span_start])
        if n_phasings > 1:
            both_alt = [prob[:, 0::2] * prob[:, 1::2] for prob in outs]
            # Each unchanged sample takes the most likely phase's result once per drawn phasing.
            reused = (n_phasings - 1 - changed[:, samples].sum(axis=0)).astype(np.float32)
            for prob, both in zip(outs, both_alt):
                prob *= 1 + np.repeat(reused, 2)
                both *= 1 + reused
            for draw in range(n_phasings - 1):
                redo = samples[changed[draw, samples]]
                if not len(redo):
                    continue
                haps = _haplotype_rows(redo)
                states = redo_states[draw]
                if states is not None:  # the rows of these samples' two haplotypes among the span's
                    states = states[_haplotype_rows(np.searchsorted(span_redo[draw], redo))]
                for prob, both, part, core_prob in zip(outs, both_alt, per_window,
                                                       core_probabilities(redo_query(draw, redo), states)):
                    swapped = flips[draw][np.ix_(part["last_marker"], redo)]
                    prob[:, haps - h0] += _swap_slots(core_prob, swapped)
                    both[:, redo - h0 // 2] += core_prob[:, 0::2] * core_prob[:, 1::2]
            outs = [_mixture_slots(prob, both, n_phasings) for prob, both in zip(outs, both_alt)]
        for position, prob in enumerate(outs):
            results.put(position, h0, prob)


def copy_tiled(source: np.ndarray, destination: np.ndarray, *, threads: int = 1) -> None:
    """destination[...] = source (2-d float32, any strides), tile by tile on `threads` threads: the
    engine's results (the transpose of the predictor's) go to new memory, whose pages cost more to
    fault in than the copy itself, and threads fault them in side by side."""
    run_parts(_copy_tiled, destination.shape[0], threads, source, destination)


@compiled
def _copy_tiled(source, destination, lo, hi):  # pragma: no cover - compiled
    tile = 64
    for i0 in range(lo, hi, tile):
        i1 = min(hi, i0 + tile)
        for j0 in range(0, destination.shape[1], tile):
            j1 = min(destination.shape[1], j0 + tile)
            for i in range(i0, i1):
                for j in range(j0, j1):
                    destination[i, j] = source[i, j]


def _haplotype_rows(samples: np.ndarray) -> np.ndarray:
    """The rows of the samples' two haplotypes each, sample by sample: 2 s, 2 s + 1."""
    return np.stack([2 * samples, 2 * samples + 1], axis=1).ravel()


def _mixture_slots(slot_sums: np.ndarray, both_alt_sums: np.ndarray, n: int) -> np.ndarray:
    """(N, H) haplotype ALT probabilities that give the average of n phasings' doses and genotype
    probabilities: the two roots of p1 + p2 = d, p1 p2 = b for the mean dose d and mean
    probability b that both haplotypes carry ALT (equal roots d / 2 where no real ones exist),
    the larger in the slot whose aligned mean (`slot_sums` / n) is larger.
    """
    mean = slot_sums / np.float32(n)
    first, second = mean[:, 0::2], mean[:, 1::2]
    dose = first + second
    spread = np.sqrt(np.maximum(dose * dose - np.float32(4.0 / n) * both_alt_sums, 0))
    high, low = np.minimum((dose + spread) / 2, 1), np.maximum((dose - spread) / 2, 0)
    out = np.empty_like(mean)
    out[:, 0::2] = np.where(first >= second, high, low)
    out[:, 1::2] = np.where(first >= second, low, high)
    return out


def _swap_slots(values: np.ndarray, swapped: np.ndarray) -> np.ndarray:
    """(N, H) values with each sample's two haplotype columns exchanged where `swapped` (N, H // 2)."""
    out = np.empty_like(values)
    first, second = values[:, 0::2], values[:, 1::2]
    out[:, 0::2] = np.where(swapped, second, first)
    out[:, 1::2] = np.where(swapped, first, second)
    return out
