"""Compiling every numba kernel ahead of use (the Docker image does it at build time, so that
its numba cache is filled; without it, the first run after installing compiles for a few seconds)."""

from __future__ import annotations

import numpy as np

from spinimpute.engine import cpu, impute, phasing_kernels, statistics
from spinimpute.io import compact_panel, genotype_text, vcf_text
from spinimpute.model import copying_kernels, copying_numpy


def compile_kernels() -> None:
    """Compile (or load from the cache) every kernel with the argument types that imputation uses."""
    rng = np.random.default_rng(0)
    by_site = (rng.random((6, 8)) < 0.5).astype(np.uint8)
    bounds = np.array([0, 2, 4, 6])
    packed = np.packbits(by_site, axis=1)
    groups = copying_kernels.group_intervals(packed, 8, bounds)
    # Intervals of more groups than the labelling records first haplotypes for.
    copying_kernels._first_members(groups[0], groups[1], np.zeros((3, 8), np.int32), np.flatnonzero(groups[1]))
    packed.setflags(write=False)  # as the model file's rows are read
    copying_kernels.group_intervals(packed, 8, bounds)
    compact = compact_panel.encode(np.vstack([packed, np.zeros((1, 1), np.uint8)]), 8)  # as train encodes a panel
    for name in compact_panel.LARGE_TENSORS:  # read-only, as they are read from a model file
        getattr(compact, name).setflags(write=False)
    np.asarray(compact)
    query = np.array([[0, 1]], dtype=np.int8)
    block_bounds = np.array([0, 2])
    for rows in (packed, np.packbits(by_site, axis=1)):  # the model file's rows are read-only, a decoded panel's not
        blocks = (block_bounds, copying_kernels.group_blocks(rows, np.packbits(by_site[[1, 3]], axis=1), 8, bounds,
                                                             block_bounds))
    copying_kernels.copy_posteriors(by_site[[1, 3]], query, np.arange(8, dtype=np.int32)[None], np.array([0.01]),
                                    0.001, bounds, groups, blocks, np.full((4, 6), 0.25))
    genotype_text.record_text(np.zeros((1, 2), np.float32), np.zeros(1, np.uint8), np.ones(1, np.int64))
    two_queries = np.array([[0, -1, 1, 0, 1, 1], [1, 1, 0, 0, -1, 0]], dtype=np.int8)
    for n_candidates in (4, 1):  # all 8 haplotypes ranked (a read-only broadcast pool); a PBWT pool of 2 x 1
        copying_numpy.select_candidates(by_site, two_queries, n_candidates)
    for dtype in (np.float32, np.int64):  # candidate priorities, and those that rank a chunk's own picks first
        copying_kernels.top_rows(np.zeros((1, 2), dtype), 1)
    line = np.frombuffer(b"20\t1\t.\tA\tG\t.\t.\t.\tGT\t0|1\n", dtype=np.uint8)
    vcf_text.parse_lines(line, 1, np.zeros((1, 10), np.int64), np.zeros(1, np.int64), np.zeros((1, 2), np.int8),
                         np.zeros((1, 5), np.int64))
    statistics.site_sums(np.zeros((1, 2), np.float32), None)
    statistics.site_sums(np.zeros((1, 2), np.float32), np.ones((1, 1), bool))
    cpu.gelu(np.zeros((1, 2), np.float32))
    for probabilities in (np.zeros((1, 2), np.float32), np.zeros((2, 4), np.float32)[:, :2]):  # a window of a group
        cpu.clip_tokens(probabilities, 4)
        impute.copy_tiled(probabilities.T, np.zeros((3, 3), np.float32)[:2, :len(probabilities)])  # results' columns
        impute.copy_tiled(probabilities, np.zeros(probabilities.shape, np.float32))  # a spilled batch
    pair_arguments = (np.ones((1, 2), np.int8), np.ones((1, 2), np.int8), np.zeros((1, 2), np.int8),
                      np.zeros((1, 2), bool), by_site[:2, :2][None], np.array([0.01]), 0.001)
    phasing_kernels.fit_orders(np.zeros((1, 6), bool), np.ones((1, 6), bool), by_site, [0, 3, 6], 1, 2)
    phasing_kernels.pair_viterbi(*pair_arguments)
    phasing_kernels.pair_relative_phase(*pair_arguments)
