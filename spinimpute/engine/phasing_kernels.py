"""Compiled loops of the diploid copying model that phases unphased targets (numba)."""

from __future__ import annotations

import itertools

import numpy as np

from spinimpute.compiled import compiled, run_parts
from spinimpute.model import copying_kernels


@compiled
def _pair_viterbi(genotypes, first, second, anchored, templates, jump, error, path, lo, hi):  # pragma: no cover
    n_markers, k = templates.shape[1], templates.shape[2]
    v = np.empty((k, k))
    back = np.empty((n_markers, k * k), np.int32)
    # Each row's and column's best state and the best of all, of the previous marker's v.
    row_max, col_max, new_col_max = np.empty(k), np.empty(k), np.empty(k)
    row_arg, col_arg, new_col_arg = np.empty(k, np.int64), np.empty(k, np.int64), np.empty(k, np.int64)
    emit = np.array([1.0, error, error * error])  # by the number of mismatching alleles
    here = np.empty(4)  # emissions by 2 * allele_a + allele_b
    for s in range(lo, hi):
        g, h = genotypes[s], templates[s]
        top, top_arg = 1.0, 0
        for m in range(n_markers):
            _pair_emissions(g[m], anchored[s, m], first[s, m], second[s, m], emit, here)
            p = jump[m - 1] if m > 0 else 0.0
            # v is kept unnormalised: the previous marker's best, `top`, divides this step instead
            # (so a switch of both templates, from the best state, weighs (p / k)² * top / top).
            stay, one, both = (1.0 - p) * (1.0 - p) / top, (1.0 - p) * p / k / top, (p / k) * (p / k)
            new_col_max[:] = -1.0
            new_top, new_top_arg = -1.0, 0
            for a in range(k):
                here_a = 2 * h[m, a]
                row_a, row_source = one * row_max[a], a * k + row_arg[a]
                best_in_row, best_b = -1.0, 0
                for b in range(k):
                    if m == 0:
                        best, source = 1.0, -1
                    else:
                        best, source = stay * v[a, b], a * k + b
                        if row_a > best:
                            best, source = row_a, row_source
                        x = one * col_max[b]
                        if x > best:
                            best, source = x, col_arg[b] * k + b
                        if both > best:
                            best, source = both, top_arg
                    y = here[here_a + h[m, b]] * best
                    v[a, b] = y
                    back[m, a * k + b] = source
                    if y > best_in_row:
                        best_in_row, best_b = y, b
                    if y > new_col_max[b]:
                        new_col_max[b], new_col_arg[b] = y, a
                row_max[a], row_arg[a] = best_in_row, best_b
                if best_in_row > new_top:
                    new_top, new_top_arg = best_in_row, a * k + best_b
            col_max[:] = new_col_max
            col_arg[:] = new_col_arg
            top, top_arg = new_top, new_top_arg
        state = top_arg
        for m in range(n_markers - 1, -1, -1):
            path[s, m] = state
            if m > 0:
                state = back[m, state]


def pair_viterbi(genotypes, first, second, anchored, templates, jump, error: float, *, threads: int = 1) -> np.ndarray:
    """Most likely pair of templates along the markers for each sample, under a diploid
    Li-Stephens model: each of the two haplotypes copies one of its sample's K templates
    and switches to any of them with probability `jump` between neighbouring markers.

    Args:
        genotypes: (S, M) int8 ALT counts, -1 missing.
        first, second: (S, M) int8 ALT of each slot, used where `anchored`.
        anchored: (S, M) bool, genotypes whose phase is fixed: the first template must
            carry `first`, the second `second`; elsewhere the unordered sum must match.
        templates: (S, M, K) uint8 each sample's candidate haplotypes at the markers.
        jump: (M - 1,) float64 switch probability of one haplotype between markers.
        error: probability of each mismatching allele.

    Returns:
        (S, M) int64 state a * K + b: the templates copied by the first (a) and second (b) slot.
    """
    path = np.zeros(np.shape(templates)[:2], dtype=np.int64)
    run_parts(_pair_viterbi, len(path), threads,
              *_pair_model_arrays(genotypes, first, second, anchored, templates, jump, error), path)
    return path


def _pair_model_arrays(genotypes, first, second, anchored, templates, jump, error: float) -> tuple:
    """The pair models' inputs in the types and layout their kernels take."""
    return (np.ascontiguousarray(genotypes, dtype=np.int8), np.ascontiguousarray(first, dtype=np.int8),
            np.ascontiguousarray(second, dtype=np.int8), np.ascontiguousarray(anchored, dtype=np.bool_),
            np.ascontiguousarray(templates, dtype=np.uint8), np.ascontiguousarray(jump, dtype=np.float64),
            float(error))


@compiled
def _pair_emissions(genotype, anchored, first, second, emit, out):  # pragma: no cover - compiled
    """out[2 * allele_a + allele_b]: P(genotype | the first slot copies allele_a, the second allele_b)."""
    for allele_a in range(2):
        for allele_b in range(2):
            if genotype < 0:
                e = 1.0
            elif anchored:  # ordered alleles: the first template copies the first slot
                e = emit[int(allele_a != first) + int(allele_b != second)]
            else:
                e = emit[abs(allele_a + allele_b - genotype)]
            out[2 * allele_a + allele_b] = e


# Orientation of a heterozygote by 2 * allele_a + allele_b: 0 where the first template carries
# its ALT, 1 the second, -1 neither or both.
_HET_ORIENTATION = np.array([-1, 1, 0, -1], dtype=np.int64)


@compiled
def _pair_relative_phase(genotypes, first, second, anchored, templates, jump, error, orientation, same, lo, hi):  # pragma: no cover
    n_markers, k = templates.shape[1], templates.shape[2]
    emit = np.array([1.0, error, error * error])
    # Backward messages of the marker ahead and of this one; only heterozygotes' are kept (float32:
    # rescaled per marker, 7 digits of each are plenty), which bounds memory for dense targets.
    after, current = np.empty((k, k)), np.empty((k, k))
    # Forward probabilities split by the orientation of the last heterozygote (0: ALT on the
    # first template), each with its row sums, column sums and total: a transition from
    # (a, b) keeps both templates, changes one (to any of K) or both, so one step costs K².
    fwd = np.empty((2, k, k))
    rows, cols, total = np.empty((2, k)), np.empty((2, k)), np.empty(2)
    new_rows, new_cols, new_total = np.empty((2, k)), np.empty((2, k)), np.empty(2)
    here, ahead = np.empty(4), np.empty(4)  # emissions by 2 * allele_a + allele_b
    for s in range(lo, hi):
        g, h = genotypes[s], templates[s]
        n_het = 0
        for m in range(n_markers):
            n_het += g[m] == 1
        het_backward = np.empty((n_het, k, k), np.float32)
        het = n_het - 1  # slot of the heterozygote the backward pass is at or after
        # Backward: backward[m] = T (emission[m + 1] * backward[m + 1]), rescaled by the total of that product.
        m = n_markers - 1
        _pair_emissions(g[m], anchored[s, m], first[s, m], second[s, m], emit, here)
        rows[0, :] = 0.0
        cols[0, :] = 0.0
        total[0] = 0.0
        for a in range(k):
            for b in range(k):
                after[a, b] = 1.0
                x = here[2 * h[m, a] + h[m, b]]
                rows[0, a] += x
                cols[0, b] += x
                total[0] += x
        if g[m] == 1:
            het_backward[het] = after
            het -= 1
        for m in range(n_markers - 2, -1, -1):
            ahead[:] = here
            _pair_emissions(g[m], anchored[s, m], first[s, m], second[s, m], emit, here)
            p, scale = jump[m], 1.0 / total[0]
            stay, one, both = (1 - p) * (1 - p) * scale, (1 - p) * p / k * scale, (p / k) * (p / k) * scale
            new_rows[0, :] = 0.0
            new_cols[0, :] = 0.0
            new_total[0] = 0.0
            for a in range(k):
                ahead_a, here_a, row_a = 2 * h[m + 1, a], 2 * h[m, a], one * rows[0, a] + both * total[0]
                row_sum = 0.0
                for b in range(k):
                    y = stay * ahead[ahead_a + h[m + 1, b]] * after[a, b] + row_a + one * cols[0, b]
                    current[a, b] = y
                    x = here[here_a + h[m, b]] * y
                    row_sum += x
                    new_cols[0, b] += x
                new_rows[0, a] = row_sum
                new_total[0] += row_sum
            rows[0, :] = new_rows[0]
            cols[0, :] = new_cols[0]
            total[0] = new_total[0]
            if g[m] == 1:
                het_backward[het] = current
                het -= 1
            after, current = current, after
        # Forward. Before the first heterozygote all mass is in part 0; it never enters a posterior.
        fwd[:] = 0.0
        rows[:] = 0.0
        cols[:] = 0.0
        total[:] = 0.0
        seen_het = False
        het = 0
        for m in range(n_markers):
            is_het = g[m] == 1
            _pair_emissions(g[m], anchored[s, m], first[s, m], second[s, m], emit, here)
            if m == 0:
                stay, one, both = 1.0, 0.0, 0.0
            else:
                p, scale = jump[m - 1], 1.0 / (total[0] + total[1])
                stay, one, both = (1 - p) * (1 - p) * scale, (1 - p) * p / k * scale, (p / k) * (p / k) * scale
            new_rows[:] = 0.0
            new_cols[:] = 0.0
            new_total[:] = 0.0
            p00 = p01 = p10 = p11 = 0.0  # P(orientation at the last het, orientation here), unnormalised
            for a in range(k):
                here_a = 2 * h[m, a]
                row0, row1 = one * rows[0, a] + both * total[0], one * rows[1, a] + both * total[1]
                if m > 0 and not is_het:  # the common case, without branches
                    sum0 = sum1 = 0.0
                    for b in range(k):
                        e = here[here_a + h[m, b]]
                        x0 = e * (stay * fwd[0, a, b] + row0 + one * cols[0, b])
                        x1 = e * (stay * fwd[1, a, b] + row1 + one * cols[1, b])
                        fwd[0, a, b] = x0
                        fwd[1, a, b] = x1
                        sum0 += x0
                        sum1 += x1
                        new_cols[0, b] += x0
                        new_cols[1, b] += x1
                    new_rows[0, a] = sum0
                    new_rows[1, a] = sum1
                    new_total[0] += sum0
                    new_total[1] += sum1
                    continue
                for b in range(k):
                    e = here[here_a + h[m, b]]
                    if m == 0:
                        x0, x1 = e, 0.0
                    else:
                        x0 = e * (stay * fwd[0, a, b] + row0 + one * cols[0, b])
                        x1 = e * (stay * fwd[1, a, b] + row1 + one * cols[1, b])
                    if is_het:
                        o = orientation[here_a + h[m, b]]
                        w = het_backward[het, a, b]
                        if o == 0:
                            p00 += x0 * w
                            p10 += x1 * w
                            x0, x1 = x0 + x1, 0.0
                        elif o == 1:
                            p01 += x0 * w
                            p11 += x1 * w
                            x0, x1 = 0.0, x0 + x1
                        else:  # explained by an error: no orientation
                            x0 = x1 = 0.5 * (x0 + x1)
                    fwd[0, a, b] = x0
                    fwd[1, a, b] = x1
                    new_rows[0, a] += x0
                    new_cols[0, b] += x0
                    new_total[0] += x0
                    new_rows[1, a] += x1
                    new_cols[1, b] += x1
                    new_total[1] += x1
            if is_het:
                if seen_het and p00 + p01 + p10 + p11 > 0:
                    same[s, m] = (p00 + p11) / (p00 + p01 + p10 + p11)
                seen_het = True
                het += 1
            rows[:] = new_rows
            cols[:] = new_cols
            total[:] = new_total


def pair_relative_phase(genotypes, first, second, anchored, templates, jump, error: float, *,
                        threads: int = 1) -> np.ndarray:
    """Posterior probability, under `pair_viterbi`'s diploid model summed over all template
    paths (forward-backward), that each heterozygote's ALT is on the same haplotype as the
    previous heterozygote's ALT.

    Args: as `pair_viterbi`.

    Returns:
        (S, M) float64: at each heterozygous marker after a sample's first, P(same
        orientation as the previous heterozygous marker); NaN elsewhere.
    """
    same = np.full(np.shape(templates)[:2], np.nan)
    run_parts(_pair_relative_phase, len(same), threads,
              *_pair_model_arrays(genotypes, first, second, anchored, templates, jump, error), _HET_ORIENTATION, same)
    return same


@compiled
def _popcount64(x):  # pragma: no cover - compiled
    """Set bits of a uint64."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@compiled
def _put_lowest(values, n, out_row, pos, hist):  # pragma: no cover - compiled
    """Write the indices of the n lowest of `values` (small non-negative integers), by value then
    index, to out_row[pos:pos + n]: a counting sort, which `hist` (max value + 1 entries) serves."""
    hist[:] = 0
    for r in range(len(values)):
        hist[values[r]] += 1
    below, threshold = 0, len(hist) - 1
    for v in range(len(hist)):
        if below + hist[v] >= n:
            threshold = v
            break
        below += hist[v]
    run = pos
    for v in range(threshold + 1):  # each value's first slot
        c = hist[v]
        hist[v] = run
        run += c
    at_threshold = n - below
    for r in range(len(values)):
        v = values[r]
        if v < threshold or (v == threshold and at_threshold > 0):
            out_row[hist[v]] = r
            hist[v] += 1
            at_threshold -= v == threshold
    return pos + n


@compiled
def _fit_orders(ref_words, word_chunk, must_ref_words, must_alt_words, n_chunks, share, n_overall, n_markers,
                out, q_lo, q_hi):  # pragma: no cover - compiled
    """Each query's misfit counts against every panel haplotype, per chunk of markers and overall,
    and the indices of the lowest: each chunk's `share` (two or more chunks), then `n_overall`.
    The words (indexed [word, haplotype or query]) are up to 64 markers of one chunk, bit i the
    word's i-th marker."""
    n_ref = ref_words.shape[1]
    counts = np.empty(n_ref, np.int32)
    overall = np.empty(n_ref, np.int32)
    hist = np.empty(n_markers + 1, np.int64)
    for q in range(q_lo, q_hi):
        overall[:] = 0
        pos, w = 0, 0
        for c in range(n_chunks):
            counts[:] = 0
            while w < len(word_chunk) and word_chunk[w] == c:
                must_ref, must_alt, row = must_ref_words[w, q], must_alt_words[w, q], ref_words[w]
                for r in range(n_ref):
                    counts[r] += _popcount64((must_ref & row[r]) | (must_alt & ~row[r]))
                w += 1
            for r in range(n_ref):
                overall[r] += counts[r]
            if share > 0:
                pos = _put_lowest(counts, share, out[q], pos, hist)
        _put_lowest(overall, n_overall, out[q], pos, hist)


def fit_orders(must_ref: np.ndarray, must_alt: np.ndarray, markers: np.ndarray, cuts, share: int, n_overall: int, *,
               threads: int = 1) -> np.ndarray:
    """(Q, n_chunks x share + n_overall) int32: for each query, the panel haplotypes with the fewest
    misfitting markers (`must_ref` (Q, M) where the haplotype carries ALT, `must_alt` where it carries
    REF) in each chunk of markers `cuts` (`share` each, none for 0), then over all markers
    (`n_overall`), each by count then index. share and n_overall are at most R."""
    n_markers = markers.shape[0]
    words = [(c, a) for c, (lo, hi) in enumerate(itertools.pairwise(cuts)) for a in range(lo, hi, 64)]
    word_cuts = np.array([a for _, a in words] + [n_markers], np.int64)  # no word crosses a chunk's end

    def packed(bits: np.ndarray) -> np.ndarray:
        out = np.zeros((len(words), bits.shape[1]), np.uint64)
        run_parts(copying_kernels.pack_segments, len(words), threads, np.ascontiguousarray(bits, dtype=np.uint8),
                  word_cuts, out)
        return out

    n_chunks = len(cuts) - 1
    out = np.empty((len(must_ref), n_chunks * share + n_overall), np.int32)
    run_parts(_fit_orders, len(must_ref), threads, packed(markers), np.array([c for c, _ in words], np.int64),
              packed(must_ref.T), packed(must_alt.T), n_chunks, share, n_overall, n_markers, out)
    return out
