"""Candidate preselection by the positional Burrows-Wheeler transform (PBWT; Durbin 2014), compiled.

The copying model runs over K of the panel's R haplotypes per query. In a large panel,
ranking all R for every query costs Q x R per marker segment; instead each query's
pool is the haplotypes that share the longest exact matches with it around each stretch
of markers, as IMPUTE5 picks its states and as identity by descent would have it
(`copying_numpy.select_candidates` ranks the pool). The panel's
haplotypes are sorted by their reversed prefixes marker after marker (the PBWT), each
query keeps its insertion point in that order, and the haplotypes next to it there are
the ones whose matches with it reach furthest back. One pass runs left to right and one
right to left, so that at a sampled marker the query sees the panel's longest matches
ending there and starting there. Cost: O(M R) for each pass over the panel (one per direction,
part of the queries and round of asking again), O(M Q) and O(Q S L) for the queries and their
neighbours: nothing of Q x R, which ranking every haplotype for every query is.

Shapes: Q queries, R reference haplotypes, M typed markers, S sampled markers, L
neighbours per query and sample, K candidates per query.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from spinimpute.compiled import compiled, run_parts

# Markers per chunk of preselection: each chunk picks its own best templates first, so that one
# run over a long stretch (a group of windows, up to 64,000 sites) keeps close templates for each
# part of it.
CHUNK_MARKERS = 100
# Every SAMPLE_STEP-th marker of a chunk (and its last) reports the query's longest matches.
SAMPLE_STEP = 16
# Neighbours per query, sample and direction (more for the queries whose matches name fewer
# than K haplotypes): neighbourhoods overlap from sample to sample, so that depth rather than
# more samples names distinct haplotypes (BENCHMARKS.md, preselection).
NEIGHBOURS = 128
# Bytes of the matches (ids and lengths) of a batch of queries.
SELECTION_BYTES = 256 * 2**20


@compiled
def _pass(markers, query, samples, n_neighbours, ids, lengths):  # pragma: no cover - compiled
    """One left-to-right PBWT pass (see `longest_matches`).

    Match starts are marker indices; a start above the current marker k means no match.
    `div[i]` is where the match of order[i - 1] and order[i] starts. For the insertion
    point p of a query (between order[p - 1] and order[p]) with allele x at k, its new
    neighbour above is the last x-carrier before p, whose match with the query starts at
    the latest of the query's start with order[p - 1] and the divergences between them
    (`up_since`, as Durbin's algorithm 2 carries it); its new neighbour below is the first
    x-carrier at or after p (`down_until`, the same from the right).
    """
    n_markers, n_ref = markers.shape
    n_query = query.shape[0]
    order = np.arange(n_ref).astype(np.int32)
    div = np.zeros(n_ref, np.int32)
    next_order = np.empty(n_ref, np.int32)
    next_div = np.empty(n_ref, np.int32)
    ones_order = np.empty(n_ref, np.int32)
    ones_div = np.empty(n_ref, np.int32)
    allele = np.empty(n_ref, np.uint8)
    up_since = np.empty((2, n_ref + 1), np.int32)
    down_until = np.empty((2, n_ref + 1), np.int32)
    before = np.empty((2, n_ref + 1), np.int32)  # x-carriers before each point
    position = np.zeros(n_query, np.int64)
    start_up = np.zeros(n_query, np.int32)  # the query's match start with order[position - 1]
    start_down = np.zeros(n_query, np.int32)  # ... and with order[position]
    sample = 0
    for k in range(n_markers):
        none = k + 1
        for i in range(n_ref):
            allele[i] = markers[k, order[i]]
        p0 = none
        p1 = none
        c0 = 0
        c1 = 0
        for i in range(n_ref):
            up_since[0, i] = p0
            up_since[1, i] = p1
            before[0, i] = c0
            before[1, i] = c1
            p0 = max(p0, div[i])
            p1 = max(p1, div[i])
            if allele[i] == 0:
                next_order[c0] = order[i]
                next_div[c0] = p0
                p0 = 0
                c0 += 1
            else:
                ones_order[c1] = order[i]
                ones_div[c1] = p1
                p1 = 0
                c1 += 1
        up_since[0, n_ref] = p0
        up_since[1, n_ref] = p1
        before[0, n_ref] = c0
        before[1, n_ref] = c1
        down_until[0, n_ref] = none
        down_until[1, n_ref] = none
        for i in range(n_ref - 1, -1, -1):
            for x in range(2):
                if allele[i] == x:
                    down_until[x, i] = 0
                elif i + 1 < n_ref:
                    down_until[x, i] = max(div[i + 1], down_until[x, i + 1])
                else:
                    down_until[x, i] = none
        for q in range(n_query):
            p = position[q]
            x = query[q, k]
            if x < 0:  # missing: follow the neighbour the query matches longer
                if p > 0 and (p == n_ref or start_up[q] <= start_down[q]):
                    x = allele[p - 1]
                elif p < n_ref:
                    x = allele[p]
                else:
                    x = 0
            start_up[q] = max(start_up[q], up_since[x, p])
            start_down[q] = max(start_down[q], down_until[x, p]) if p < n_ref else none
            position[q] = before[x, p] + (c0 if x == 1 else 0)
        next_order[c0:] = ones_order[:c1]
        next_div[c0:] = ones_div[:c1]
        order, next_order = next_order, order
        div, next_div = next_div, div
        if sample < samples.shape[0] and samples[sample] == k:
            for q in range(n_query):
                up = position[q] - 1
                down = position[q]
                s_up = start_up[q]
                s_down = start_down[q] if down < n_ref else none
                for slot in range(n_neighbours):
                    if up < 0:
                        s_up = none
                    if down >= n_ref:
                        s_down = none
                    if s_up > k and s_down > k:
                        ids[q, sample, slot:] = -1
                        lengths[q, sample, slot:] = 0
                        break
                    if s_up <= s_down:
                        ids[q, sample, slot] = order[up]
                        lengths[q, sample, slot] = k + 1 - s_up
                        s_up = max(s_up, div[up])
                        up -= 1
                    else:
                        ids[q, sample, slot] = order[down]
                        lengths[q, sample, slot] = k + 1 - s_down
                        down += 1
                        if down < n_ref:
                            s_down = max(s_down, div[down])
            sample += 1


def longest_matches(markers: np.ndarray, query: np.ndarray, samples: np.ndarray, n_neighbours: int, *,
                    threads: int = 1, reversed_markers: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each query's panel haplotypes with the longest exact matches ending at (left to right) and
    starting at (right to left) each sampled marker; the two directions run at once, each in
    `threads // 2` parts of the queries.

    A missing query allele follows the neighbour that the query matches longer, so it breaks
    no match with that side.

    Args:
        markers: (M, R) uint8 reference alleles at the markers, marker-major.
        query: (Q, M) int8 query alleles, -1 where missing.
        samples: (S,) increasing marker indices.
        n_neighbours: L haplotypes to report per query, sample and direction.
        reversed_markers: markers[::-1] as a contiguous array, where the caller keeps one for many calls.

    Returns:
        ids (2, Q, S, L) int32 haplotypes, longest match first, -1 past the last match; lengths
        (2, Q, S, L) int32 their match lengths in markers (the sampled one included). Direction 0
        is the left-to-right pass; direction 1 lists the samples last to first.
    """
    markers = np.ascontiguousarray(markers, dtype=np.uint8)
    query = np.ascontiguousarray(query, dtype=np.int8)
    samples = np.asarray(samples, dtype=np.int64)
    n_query, n_markers = query.shape
    if len(samples) and not (np.all(np.diff(samples) > 0) and 0 <= samples[0] and samples[-1] < n_markers):
        raise ValueError("samples must be increasing marker indices")
    ids = np.full((2, n_query, len(samples), n_neighbours), -1, np.int32)
    lengths = np.zeros_like(ids)
    if reversed_markers is None:
        reversed_markers = np.ascontiguousarray(markers[::-1])
    directions = [(markers, query, samples),
                  (reversed_markers, np.ascontiguousarray(query[:, ::-1]), (n_markers - 1 - samples)[::-1].copy())]
    # Each direction's queries in threads // 2 parts, each part a pass of its own: the passes over
    # the panel repeat, but the queries' walks and the matches written are the larger share.
    parts = np.linspace(0, n_query, max(1, min(threads // 2, n_query)) + 1).round().astype(int)
    tasks = [(d, int(lo), int(hi)) for d in range(2) for lo, hi in itertools.pairwise(parts) if hi > lo]

    def run(d: int, lo: int, hi: int) -> None:
        panel, queries, marks = directions[d]
        _pass(panel, queries[lo:hi], marks, n_neighbours, ids[d, lo:hi], lengths[d, lo:hi])

    if threads > 1:
        with ThreadPoolExecutor(min(threads, len(tasks))) as pool:
            for future in [pool.submit(run, *task) for task in tasks]:
                future.result()
    else:
        for task in tasks:
            run(*task)
    return ids, lengths


@compiled
def _choose(ids, lengths, sample_chunk, n_chunks, quota, n_candidates, n_ref, fill, out, found, q_lo,
            q_hi):  # pragma: no cover - compiled
    """out[q] = query q's candidates (see `choose_candidates`); found[q] = the distinct haplotypes
    its matches named (out[q] is filled only where found[q] >= n_candidates, or with `fill`)."""
    chunk_score = np.zeros(n_ref, np.int64)
    total_score = np.zeros(n_ref, np.int64)
    picked = np.zeros(n_ref, np.bool_)
    local = np.empty(n_ref, np.int32)
    seen = np.empty(n_ref, np.int32)
    n_samples, n_neighbours = ids.shape[2], ids.shape[3]
    for q in range(q_lo, q_hi):
        n_seen = 0
        sample = 0
        for c in range(n_chunks):
            n_local = 0
            while sample < n_samples and sample_chunk[sample] == c:
                for direction in range(2):
                    listed = sample if direction == 0 else n_samples - 1 - sample
                    for slot in range(n_neighbours):
                        h = ids[direction, q, listed, slot]
                        if h < 0:
                            break
                        length = lengths[direction, q, listed, slot]
                        if chunk_score[h] == 0:
                            local[n_local] = h
                            n_local += 1
                        chunk_score[h] += length
                        if total_score[h] == 0:
                            seen[n_seen] = h
                            n_seen += 1
                        total_score[h] += length
                sample += 1
            if n_local:
                key = np.empty(n_local, np.int64)
                for i in range(n_local):
                    key[i] = -chunk_score[local[i]] * n_ref + local[i]
                ranked = np.argsort(key)
                for i in range(min(quota, n_local)):
                    picked[local[ranked[i]]] = True
                for i in range(n_local):
                    chunk_score[local[i]] = 0
        found[q] = n_seen
        h = 0
        while fill and n_seen < n_candidates:  # haplotypes that match at no sample, lowest index first
            if total_score[h] == 0 and not picked[h]:
                seen[n_seen] = h
                n_seen += 1
                picked[h] = True  # marks it seen; ranked after the named ones all the same
            h += 1
        if n_seen >= n_candidates:
            # The chunks' own picks first, then the rest; each by the total length of its matches.
            key = np.empty(n_seen, np.int64)
            for i in range(n_seen):
                key[i] = -total_score[seen[i]] * n_ref + seen[i]
            ranked = np.argsort(key)
            chosen = np.empty(n_candidates, np.int32)
            n_chosen = 0
            for tier in range(3):  # the chunks' picks, the other named haplotypes, the fill
                for i in range(n_seen):
                    h = seen[ranked[i]]
                    in_tier = (picked[h] and total_score[h] > 0) if tier == 0 else (
                        (not picked[h] and total_score[h] > 0) if tier == 1 else total_score[h] == 0)
                    if in_tier and n_chosen < n_candidates:
                        chosen[n_chosen] = h
                        n_chosen += 1
            out[q] = np.sort(chosen)
        for i in range(n_seen):
            total_score[seen[i]] = 0
            picked[seen[i]] = False


def choose_candidates(ids: np.ndarray, lengths: np.ndarray, sample_chunk: np.ndarray, n_candidates: int,
                      n_ref: int, *, fill: bool = False, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Each query's K candidates from its matches (`longest_matches`).

    A haplotype scores the summed lengths of its matches with the query; each chunk of
    markers (the samples' `sample_chunk`, increasing) first picks its `ceil(K / chunks)`
    best by its own matches, so that every stretch keeps its close templates (what template
    switching needs), then the rest are filled by the scores over all chunks; ties go to
    the lower index. With `fill`, haplotypes that no match named complete a row, lowest
    index first.

    Returns:
        (Q, K) int32 candidates, increasing along each row (rows with too few matches undefined),
        and (Q,) int32 distinct haplotypes the matches named: where below K, the caller asks for
        more neighbours.
    """
    sample_chunk = np.asarray(sample_chunk, dtype=np.int64)
    n_chunks = int(sample_chunk.max()) + 1 if len(sample_chunk) else 0
    n_query = ids.shape[1]
    out = np.zeros((n_query, n_candidates), np.int32)
    found = np.zeros(n_query, np.int32)
    quota = chunk_quota(n_candidates, max(n_chunks, 1))
    run_parts(_choose, n_query, threads, ids, lengths, sample_chunk, n_chunks, quota, n_candidates, n_ref, fill,
              out, found)
    return out, found


def chunk_cuts(n_markers: int, chunk_markers: int = CHUNK_MARKERS) -> list[int]:
    """Bounds of the marker chunks: as equal as can be, each of at least `chunk_markers` markers
    (a single chunk for fewer than twice that)."""
    n_chunks = max(1, n_markers // chunk_markers)
    return np.linspace(0, n_markers, n_chunks + 1).round().astype(np.int64).tolist()


def chunk_quota(n_candidates: int, n_chunks: int) -> int:
    """Candidates each chunk picks by its own score or priority first."""
    return -(-n_candidates // n_chunks)


def sampled_markers(n_markers: int) -> tuple[np.ndarray, np.ndarray]:
    """The sampled markers (every SAMPLE_STEP-th of each chunk and its last) and each one's chunk."""
    samples, chunk_of = [], []
    for c, (lo, hi) in enumerate(itertools.pairwise(chunk_cuts(n_markers))):
        own = sorted(set(range(lo + SAMPLE_STEP - 1, hi, SAMPLE_STEP)) | {hi - 1})
        samples += own
        chunk_of += [c] * len(own)
    return np.asarray(samples, dtype=np.int64), np.asarray(chunk_of, dtype=np.int64)


def select_candidates(markers: np.ndarray, query: np.ndarray, n_candidates: int, *, threads: int = 1) -> np.ndarray:
    """The K reference haplotypes with the longest matches to each query around each stretch of markers.

    Queries go in batches whose matches fit SELECTION_BYTES; each query's candidates depend on
    it alone, not on the batch.

    Args:
        markers: (M, R) uint8 reference alleles at the markers (M >= 1), marker-major.
        query: (Q, M) int8 query alleles, -1 where missing.
        n_candidates: K <= R states to keep per query.

    Returns:
        (Q, K) int32 indices into the reference rows, increasing along each row.
    """
    n_markers, n_ref = markers.shape
    if not 0 < n_candidates <= n_ref:
        raise ValueError(f"cannot keep {n_candidates} of {n_ref} haplotypes")
    if n_markers < 1:
        raise ValueError("preselection needs at least one marker")
    markers = np.ascontiguousarray(markers, dtype=np.uint8)
    reversed_markers = np.ascontiguousarray(markers[::-1])
    samples, sample_chunk = sampled_markers(n_markers)
    out = np.empty((query.shape[0], n_candidates), np.int32)
    pending = np.arange(query.shape[0])
    n_neighbours = min(NEIGHBOURS, n_ref)
    while len(pending):
        # Queries whose matches named fewer than K haplotypes ask again with twice the neighbours;
        # with all R, the haplotypes that match at no sampled marker fill the rest.
        batch = max(1, SELECTION_BYTES // (16 * len(samples) * n_neighbours))
        missing = []
        for lo in range(0, len(pending), batch):
            rows = pending[lo : lo + batch]
            ids, lengths = longest_matches(markers, query[rows], samples, n_neighbours, threads=threads,
                                           reversed_markers=reversed_markers)
            chosen, found = choose_candidates(ids, lengths, sample_chunk, n_candidates, n_ref,
                                              fill=n_neighbours == n_ref, threads=threads)
            done = (found >= n_candidates) | (n_neighbours == n_ref)
            out[rows[done]] = chosen[done]
            missing.append(rows[~done])
        pending = np.concatenate(missing)
        n_neighbours = min(2 * n_neighbours, n_ref)
    return out
