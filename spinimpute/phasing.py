"""Phasing of unphased target genotypes against the panel: a diploid copying model.

Imputation runs on phased haplotypes; a target with unphased heterozygous genotypes is
phased here first, window by window (see `phase_contig`), on the CPU without torch.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from spinimpute import copying, kernels
from spinimpute.impute import windows_for
from spinimpute.modelfile import ReferenceContig
from spinimpute.vcf import TargetContig
from spinimpute.windows import Window

# Candidate templates per sample, window and pass: the pair model's cost grows with their
# square. Real benchmark, switch error rates: one pass over model windows with 32 / 64 / 128,
# 0.066 / 0.055 / 0.049 (the per-haplotype model this replaced: 0.066); over merged windows,
# 64 once 0.0514 (impute 4.8 s), 48 twice 0.0497 (6.5 s), 64 twice 0.0478 (9.3 s).
# Simulations (seed 1 of four scenarios): 48 twice 0.0072-0.0125, 64 once 0.0090-0.0152.
PAIR_CANDIDATES = 48
# Typed markers that a phasing window's core holds at least: consecutive model windows are
# merged until they do, since phase is lost more often where windows join. Real benchmark
# (model windows of ~90 markers): switch errors 0.0536 unmerged, 0.0526 / 0.0537 / 0.0526 /
# 0.0550 at 150 / 200 / 250 / 300, 0.058 as one 843-marker window (long ones need more
# candidates); simulations within 0.0006; the tests' 60-marker windows 0.051 -> 0.023.
PHASING_CORE_MARKERS = 150
# Markers per chunk of candidate selection: each chunk picks its own best templates first,
# so that a window's candidates cover the recombinations inside it (0.055 -> 0.053).
CANDIDATE_CHUNK_MARKERS = 40
# Markers either side of a heterozygote whose templates agree that decide which haplotype
# carries its ALT (`_likelier_alt_slot`).
LOCAL_MARKERS = 10


def phase_contig(model, contig: ReferenceContig, target: TargetContig, *, sites: range | None = None,
                 threads: int = 1) -> TargetContig:
    """Resolve the phase of unphased heterozygous target genotypes against the panel.

    Window by window (model windows merged until their cores hold PHASING_CORE_MARKERS
    typed markers, `phasing_windows`), each sample's two haplotypes copy a pair of panel
    haplotypes under a diploid Li-Stephens model (`kernels.pair_viterbi`) over the window's
    typed markers: first among the candidates that best fit its homozygous genotypes
    (`pair_candidates`), then among those that best fit the two haplotypes so phased
    (`haplotype_candidates`). The most likely pair of template paths gives the phase of each
    heterozygote where the two templates differ; where they agree `_likelier_alt_slot`
    decides, or the input order stays. Heterozygotes phased in the input or by the previous
    window are fixed in order, which carries one phase across windows.

    Args:
        model: gives `switch_rate(n_reference)` and `mismatch()` (a `CpuImputer`).
        sites: only the phasing windows that reach the model windows imputing those sites
            or one window either side are phased; other unphased genotypes are left as written.

    Returns:
        A TargetContig whose alleles are phased (where `sites` reaches) and whose
        `unphased` mask is all False.
    """
    if not target.unphased.any():
        return target
    alleles = target.alleles.copy()
    unphased = target.unphased
    decided = ~unphased
    rate, error = float(model.switch_rate(contig.n_haplotypes)), float(model.mismatch())
    needed = windows_for(contig, sites)
    reach = set(range(max(0, needed[0] - 1), min(len(contig.windows), needed[-1] + 2))) if needed else set()
    for group in phasing_windows(contig, target.site_index):
        if reach.isdisjoint(group.model_windows):
            continue
        window = group.window
        lo, hi = np.searchsorted(target.site_index, [window.start, window.stop])
        open_sites = unphased[lo:hi] & ~decided[lo:hi]
        samples = np.flatnonzero(open_sites.any(axis=0))
        if len(samples) == 0:
            continue
        columns = target.site_index[lo:hi]
        markers = contig.haplotypes(window.start, window.stop)[columns - window.start]  # (M, R)
        first = alleles[lo:hi, 2 * samples].T  # (S, M)
        second = alleles[lo:hi, 2 * samples + 1].T
        genotypes = np.where((first < 0) | (second < 0), -1, first + second).astype(np.int8)
        jump = copying.switch_probability(np.diff(contig.cm[columns].astype(np.float64)), rate)
        anchored = decided[lo:hi, samples].T & (genotypes == 1)
        # First among the haplotypes that fit the genotypes, then again among those that fit
        # each haplotype of that first phase.
        chosen = np.stack([pair_candidates(g, markers) for g in genotypes])  # (S, K)
        templates = _candidate_alleles(markers, chosen)
        path = kernels.pair_viterbi(genotypes, first, second, anchored, templates, jump, error, threads=threads)
        copied = _copied_alleles(templates, path)
        chosen = np.stack([haplotype_candidates(copied[0][j], copied[1][j], markers) for j in range(len(samples))])
        templates = _candidate_alleles(markers, chosen)
        path = kernels.pair_viterbi(genotypes, first, second, anchored, templates, jump, error, threads=threads)
        copied_first, copied_second = (c.T for c in _copied_alleles(templates, path))  # (M, S)
        in_core = (columns >= window.core_start) & (columns < window.core_stop)
        resolved = open_sites[:, samples] & in_core[:, None]
        told = resolved & (copied_first != copied_second)
        r, c = np.nonzero(told)
        alleles[lo + r, 2 * samples[c]] = copied_first[r, c]
        alleles[lo + r, 2 * samples[c] + 1] = copied_second[r, c]
        for m, j in zip(*np.nonzero(resolved & ~told)):
            alt_first = _likelier_alt_slot(alleles[lo:hi, 2 * samples[j]], alleles[lo:hi, 2 * samples[j] + 1],
                                           templates[j], m, told[:, j] | ~open_sites[:, samples[j]])
            if alt_first is not None:
                alleles[lo + m, 2 * samples[j]], alleles[lo + m, 2 * samples[j] + 1] = (1, 0) if alt_first else (0, 1)
        r, c = np.nonzero(resolved)
        decided[lo + r, samples[c]] = True
    return TargetContig(target.site_index, alleles, np.zeros_like(unphased), target.haploid)


def pair_candidates(genotypes: np.ndarray, markers: np.ndarray, n_candidates: int = PAIR_CANDIDATES) -> np.ndarray:
    """(K,) panel haplotypes that fit a sample's homozygous genotypes best (fewest of them
    contradicted; `_fit_order`), K = min(n_candidates, R).

    Args:
        genotypes: (M,) ALT counts, -1 missing.
        markers: (M, R) panel alleles at the markers.
    """
    contradicts = ((genotypes == 0)[:, None] & (markers == 1)) | ((genotypes == 2)[:, None] & (markers == 0))
    return _first_distinct(_fit_order(contradicts, n_candidates // 2), min(n_candidates, markers.shape[1]))


def haplotype_candidates(first: np.ndarray, second: np.ndarray, markers: np.ndarray,
                         n_candidates: int = PAIR_CANDIDATES) -> np.ndarray:
    """(K,) panel haplotypes that fit either of a sample's two phased haplotypes best (fewest
    alleles differing; `_fit_order`), taken from each in turn, K = min(n_candidates, R).

    Args:
        first, second: (M,) the haplotypes' alleles at the markers.
        markers: (M, R) panel alleles at the markers.
    """
    orders = [_fit_order(markers != haplotype[:, None], n_candidates // 4) for haplotype in (first, second)]
    return _first_distinct(np.stack(orders, axis=1).ravel(), min(n_candidates, markers.shape[1]))


def _fit_order(misfit: np.ndarray, chunk_total: int) -> np.ndarray:
    """Panel haplotypes by their count of misfitting markers, (M, R) bool `misfit`: first each
    chunk of CANDIDATE_CHUNK_MARKERS markers' own best (`chunk_total` over all chunks, when
    there are two or more), then all of them by the count over every marker."""
    overall = np.argsort(misfit.sum(axis=0), kind="stable")
    n_chunks = len(misfit) // CANDIDATE_CHUNK_MARKERS
    if n_chunks < 2:
        return overall
    share = max(1, chunk_total // n_chunks)
    cuts = np.linspace(0, len(misfit), n_chunks + 1).round().astype(np.int64)
    picked = [np.argsort(misfit[a:b].sum(axis=0), kind="stable")[:share] for a, b in itertools.pairwise(cuts)]
    return np.concatenate([*picked, overall])


@dataclasses.dataclass
class PhasingWindow:
    """Consecutive model windows phased together: `window` spans them (the first one's left
    flank, the last one's right flank, their cores as one core)."""

    window: Window
    model_windows: range


def phasing_windows(contig: ReferenceContig, site_index: np.ndarray) -> list[PhasingWindow]:
    """The contig's model windows merged, in order, into groups whose cores hold at least
    PHASING_CORE_MARKERS of the target's typed sites `site_index` (the last group may hold fewer)."""
    out, first = [], 0
    windows = contig.windows
    for last, w in enumerate(windows):
        n_core = np.searchsorted(site_index, w.core_stop) - np.searchsorted(site_index, windows[first].core_start)
        if n_core >= PHASING_CORE_MARKERS or last == len(windows) - 1:
            a = windows[first]
            out.append(PhasingWindow(Window(a.start, w.stop, a.core_start, w.core_stop), range(first, last + 1)))
            first = last + 1
    return out


def _likelier_alt_slot(first, second, templates, m, known) -> bool | None:
    """Whether the first slot of a heterozygote at marker `m` whose two templates agree is
    the likelier to carry the ALT allele: the slot whose haplotype, over LOCAL_MARKERS
    either side, some candidate carrying ALT at `m` fits with fewer mismatches than any
    candidate carrying ALT fits the other; None on a tie.

    Args:
        first, second: (M,) the sample's alleles in each slot, -1 missing.
        templates: (M, K) its candidates' alleles.
        known: (M,) bool, markers whose order is known (homozygous, phased, or told here).
    """
    lo, hi = max(0, m - LOCAL_MARKERS), min(len(first), m + LOCAL_MARKERS + 1)
    near = known[lo:hi] & (first[lo:hi] >= 0)
    near[m - lo] = False
    carriers = templates[m] == 1
    if not carriers.any():
        return None
    fits = [((templates[lo:hi][near][:, carriers] != slot[lo:hi][near][:, None]).sum(axis=0)).min()
            for slot in (first, second)]
    if fits[0] == fits[1]:
        return None
    return bool(fits[0] < fits[1])


def _first_distinct(order: np.ndarray, k: int) -> np.ndarray:
    """The first k distinct values of `order`, sorted."""
    _, first_seen = np.unique(order, return_index=True)
    return np.sort(order[np.sort(first_seen)][:k])


def _copied_alleles(templates: np.ndarray, path: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S, M) alleles of the templates that the first and the second slot copy along `path`."""
    k = templates.shape[2]
    return (np.take_along_axis(templates, (path // k)[:, :, None], axis=2)[..., 0],
            np.take_along_axis(templates, (path % k)[:, :, None], axis=2)[..., 0])


def _candidate_alleles(markers: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """(S, M, K) alleles at the markers, (M, R), of each sample's chosen panel haplotypes, (S, K)."""
    return np.take_along_axis(markers.T[None], chosen[:, :, None], axis=1).transpose(0, 2, 1)
