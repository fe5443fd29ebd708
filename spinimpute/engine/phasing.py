"""Phasing of unphased target genotypes against the panel: a diploid copying model.

Imputation runs on phased haplotypes; a target with unphased heterozygous genotypes is
phased here first, window by window (see `phase_contig`), on the CPU without torch.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from spinimpute.engine import phasing_kernels
from spinimpute.engine.cpu import CpuImputer
from spinimpute.model import copying_numpy, pbwt
from spinimpute.panel import ReferenceContig, Window
from spinimpute.target import TargetContig

# The measurements behind each constant are in BENCHMARKS.md ("Where the engine's constants come from").
# Candidate templates per sample and window of the first pass (most likely path) and the
# second (posterior orientations); the pair model's cost grows with their square.
PAIR_CANDIDATES = 32
HAPLOTYPE_CANDIDATES = 96
# Typed markers that a phasing window's core holds at least: consecutive model windows are
# merged until they do, since phase is lost more often where windows join.
PHASING_CORE_MARKERS = 150
# Markers per chunk of candidate selection: each chunk picks its own best templates first,
# so that a window's candidates cover the recombinations inside it.
CANDIDATE_CHUNK_MARKERS = 40
# Phasings drawn beside the most likely one, whose imputations are averaged with it (see
# `phase_contig`); imputation runs once per phasing.
PHASE_DRAWS = 4


def phase_contig(model: CpuImputer, contig: ReferenceContig, target: TargetContig, *, sample_keys: np.ndarray,
                 sites: range | None = None, draws: int = 0, seed: int = 1, threads: int = 1) -> TargetContig:
    """Resolve the phase of unphased heterozygous target genotypes against the panel.

    Window by window (model windows merged until their cores hold PHASING_CORE_MARKERS
    typed markers, `phasing_windows`), each sample's two haplotypes copy a pair of panel
    haplotypes under a diploid Li-Stephens model (`phasing_kernels.pair_viterbi`) over the window's
    typed markers. The most likely pair of template paths among the candidates that best
    fit its homozygous genotypes (`pair_candidates`) gives a first phase; among those that
    best fit its two haplotypes so phased (`haplotype_candidates`), the model summed over all
    template paths gives each heterozygote's probability of having its ALT on the same
    haplotype as the previous heterozygote (`phasing_kernels.pair_relative_phase`), and each takes
    the likelier order relative to the one before (`_chained_orientation`), which minimises
    the expected number of switch errors. Heterozygotes phased in the input or by the
    previous window are fixed in order, which carries one phase across windows.

    `draws` more phasings are drawn from those probabilities: each takes the other order
    than the most likely one at each such heterozygote with the probability of that order,
    independently (`phase_switches`). Imputing each and averaging (`TargetContig.draw_flips`)
    integrates the doses over the phase's uncertainty instead of staking them on one phase.

    Args:
        model: gives `switch_rate(n_reference)` and `mismatch()` (a `CpuImputer`).
        sample_keys: (n_samples,) uint64 each target sample's key (`sample_keys` of its name),
            which its draws depend on rather than its place in the file.
        sites: only the phasing windows that reach the model windows imputing those sites
            or one window either side are phased; other unphased genotypes are left as written.
        draws: phasings drawn beside the most likely one.
        seed: seeds the draws, which depend on it, the samples' keys and the sites' positions
            only, so that a run over a region draws what a whole-contig run draws there, and a
            sample draws the same alone as in any batch.

    Returns:
        A TargetContig whose alleles are phased (where `sites` reaches), whose `unphased`
        mask is all False, and which holds the `draws` drawn phasings' switches.
    """
    if not target.unphased.any():
        return target
    alleles = target.alleles.copy()
    unphased = target.unphased
    decided = ~unphased
    rate, error = float(model.switch_rate(contig.n_haplotypes)), float(model.mismatch())
    positions = contig.sites.positions[target.site_index]
    switches = []
    needed = contig.windows_covering(sites)
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
        markers = contig.haplotypes_at(columns)  # (M, R)
        first = alleles[lo:hi, 2 * samples].T  # (S, M)
        second = alleles[lo:hi, 2 * samples + 1].T
        genotypes = np.where((first < 0) | (second < 0), -1, first + second).astype(np.int8)
        jump = copying_numpy.switch_probability(np.diff(contig.cm[columns].astype(np.float64)), rate)
        anchored = decided[lo:hi, samples].T & (genotypes == 1)
        # The most likely pair of template paths among the haplotypes that fit the genotypes;
        # then, among those that fit each haplotype of that phase, the posterior of each
        # heterozygote's orientation relative to the previous one, summed over all paths.
        chosen = pair_candidates(genotypes, markers, threads=threads)  # (S, K)
        templates = _candidate_alleles(markers, chosen)
        path = phasing_kernels.pair_viterbi(genotypes, first, second, anchored, templates, jump, error, threads=threads)
        copied_first, copied_second = _copied_alleles(templates, path)
        het = genotypes == 1
        hap_first = np.where(het & (copied_first != copied_second), copied_first,
                             np.where(het, first, genotypes // 2))  # missing stays -1
        hap_second = np.where(het, 1 - hap_first, hap_first)
        chosen = haplotype_candidates(hap_first, hap_second, markers, threads=threads)
        templates = _candidate_alleles(markers, chosen)
        same = phasing_kernels.pair_relative_phase(genotypes, first, second, anchored, templates, jump, error,
                                                   threads=threads)
        in_core = (columns >= window.core_start) & (columns < window.core_stop)
        resolved = open_sites[:, samples] & in_core[:, None]
        other_order = np.zeros((hi - lo, len(samples)))
        for j, sample in enumerate(samples):
            alt_first = _chained_orientation(first[j] == 1, genotypes[j] == 1, open_sites[:, sample], same[j])
            m = np.flatnonzero(resolved[:, j])
            alleles[lo + m, 2 * sample] = alt_first[m]
            alleles[lo + m, 2 * sample + 1] = ~alt_first[m]
            other_order[:, j] = np.where(resolved[:, j], _other_order_probability(genotypes[j] == 1, open_sites[:, sample],
                                                                                  same[j]), 0.0)
        if draws:
            switches.append(phase_switches(other_order, lo, positions[lo:hi], samples, sample_keys[samples], draws,
                                           seed))
        r, c = np.nonzero(resolved)
        decided[lo + r, samples[c]] = True
    switch_rows = np.concatenate(switches) if switches else np.zeros((0, 3), dtype=np.int64)
    return TargetContig(target.site_index, alleles, np.zeros_like(unphased), target.haploid,
                        n_draws=draws, draw_switches=switch_rows[np.argsort(switch_rows[:, 0], kind="stable")])


def sample_keys(names: list[str]) -> np.ndarray:
    """(n,) uint64 keys of sample names (the first 8 bytes of their BLAKE2b digest)."""
    return np.array([int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
                     for name in names], dtype=np.uint64)


def phase_switches(other_order: np.ndarray, row_offset: int, positions: np.ndarray, samples: np.ndarray,
                   keys: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """(n, 3) int64 (typed-site row, sample, draw) where a drawn phasing takes the other order.

    Args:
        other_order: (M, S) probability of the order the most likely phase did not take at
            each heterozygote, relative to the previous one (0 where nothing was decided).
        row_offset: the typed-site row of other_order's first row.
        positions: (M,) the sites' positions; samples: (S,) the samples' indices, keys: (S,)
            their keys; with `seed` and the draw, positions and keys alone decide each uniform
            number (`_uniform`).
    """
    rows, cols = np.nonzero(other_order > 0)
    out = []
    for draw in range(draws):
        taken = _uniform(seed, draw, positions[rows], keys[cols]) < other_order[rows, cols]
        out.append(np.stack([rows[taken] + row_offset, samples[cols[taken]], np.full(taken.sum(), draw)], axis=1))
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 3), dtype=np.int64)


def _uniform(seed: int, draw: int, positions: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Uniform numbers in [0, 1), one per (position, sample), from a hash of the four (splitmix64's finaliser)."""
    with np.errstate(over="ignore"):
        x = (np.uint64(seed % 2**64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(draw) * np.uint64(0xD1B54A32D192ED03)
             + positions.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
             + keys.astype(np.uint64) * np.uint64(0x94D049BB133111EB))
        for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            x = (x ^ (x >> np.uint64(shift))) * np.uint64(factor)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def pair_candidates(genotypes: np.ndarray, markers: np.ndarray, n_candidates: int = PAIR_CANDIDATES, *,
                    threads: int = 1) -> np.ndarray:
    """(S, K) panel haplotypes that fit each sample's homozygous genotypes best (fewest of them
    contradicted; `_fit_orders`), K = min(n_candidates, R), increasing.

    Args:
        genotypes: (S, M) ALT counts, -1 missing.
        markers: (M, R) panel alleles at the markers.
    """
    k = min(n_candidates, markers.shape[1])
    orders = _fit_orders(genotypes == 0, genotypes == 2, markers, n_candidates // 2, k, threads)
    return np.stack([_first_distinct(order, k) for order in orders])


def haplotype_candidates(first: np.ndarray, second: np.ndarray, markers: np.ndarray,
                         n_candidates: int = HAPLOTYPE_CANDIDATES, *, threads: int = 1) -> np.ndarray:
    """(S, K) panel haplotypes that fit either of each sample's two phased haplotypes best (fewest
    alleles differing; `_fit_orders`), taken from each in turn, K = min(n_candidates, R), increasing.

    Args:
        first, second: (S, M) the haplotypes' alleles at the markers, -1 missing.
        markers: (M, R) panel alleles at the markers.
    """
    k = min(n_candidates, markers.shape[1])
    both = np.stack([first, second], axis=1).reshape(-1, first.shape[1])  # each sample's two haplotypes in turn
    orders = _fit_orders(both == 0, both == 1, markers, n_candidates // 4, k, threads)  # (2 S, L)
    # Each sample's two orders taken in turn: first[0], second[0], first[1], ...
    interleaved = orders.reshape(len(first), 2, -1).transpose(0, 2, 1).reshape(len(first), -1)
    return np.stack([_first_distinct(order, k) for order in interleaved])


def _fit_orders(must_ref: np.ndarray, must_alt: np.ndarray, markers: np.ndarray, chunk_total: int, k: int,
                threads: int) -> np.ndarray:
    """The first entries of each query's order of the panel haplotypes, enough for its first k distinct ones:
    first each chunk of CANDIDATE_CHUNK_MARKERS markers' own best (`chunk_total` over all chunks, when
    there are two or more), then all of them, each by its count of misfitting markers, ties to the
    lower index (a stable sort's order).

    A haplotype misfits a query at a marker where the query's allele must be REF (`must_ref`,
    (Q, M) bool) and the haplotype carries ALT, or the other way round (`must_alt`). The counts are
    taken 64 markers at a time from bit words and ranked by a counting sort as they are made
    (`phasing_kernels.fit_orders`), so that no (Q, R) array of counts is formed.
    """
    n_markers, n_ref = markers.shape
    cuts = pbwt.chunk_cuts(n_markers, CANDIDATE_CHUNK_MARKERS)
    n_chunks = len(cuts) - 1
    share = min(n_ref, max(1, chunk_total // n_chunks)) if n_chunks > 1 else 0
    return phasing_kernels.fit_orders(np.asarray(must_ref, dtype=bool), np.asarray(must_alt, dtype=bool), markers,
                                      cuts, share, min(n_ref, k + share * n_chunks), threads=threads)


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


def _chained_orientation(alt_first: np.ndarray, het: np.ndarray, open_het: np.ndarray,
                         same: np.ndarray) -> np.ndarray:
    """(M,) bool, whether the ALT of each heterozygote is in the first slot: as written where
    the order is known, and at open heterozygotes that of the previous heterozygote, kept
    where `same` >= 0.5 and swapped below; the first of a window keeps the input order.

    Args:
        alt_first: (M,) bool, ALT in the first slot as written.
        het, open_het: (M,) bool, heterozygous markers and those whose order is open.
        same: (M,) P(same orientation as the previous heterozygote), NaN where undefined.
    """
    out = alt_first.copy()
    decided = set(_decided_heterozygotes(het, open_het, same).tolist())
    previous = None
    for m in np.flatnonzero(het):
        if m in decided:
            out[m] = previous if same[m] >= 0.5 else not previous
        previous = out[m]
    return out


def _decided_heterozygotes(het: np.ndarray, open_het: np.ndarray, same: np.ndarray) -> np.ndarray:
    """Markers whose order `_chained_orientation` decides by `same`: open heterozygotes after
    the first heterozygote, with a posterior."""
    hets = np.flatnonzero(het)[1:]
    return hets[open_het[hets] & ~np.isnan(same[hets])]


def _other_order_probability(het: np.ndarray, open_het: np.ndarray, same: np.ndarray) -> np.ndarray:
    """(M,) probability of the order `_chained_orientation` did not take at each open heterozygote
    it decided (relative to the previous heterozygote); 0 elsewhere."""
    out = np.zeros(len(het))
    decided = _decided_heterozygotes(het, open_het, same)
    out[decided] = np.minimum(same[decided], 1.0 - same[decided])
    return out


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
