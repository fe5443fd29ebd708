"""Compiling numba kernels and running them on several threads: what every kernel module shares."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np


def compiled(function):
    """Compile without the GIL; the machine code is cached beside the module, or in
    NUMBA_CACHE_DIR, so that only the first run pays for compiling (a few seconds). Where
    no cache can be written (a read-only install, no writable home) it compiles every run."""
    try:
        return numba.njit(nogil=True, cache=True)(function)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(function)


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    cuts = np.linspace(0, n, max(1, min(parts, n)) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(cuts) if b > a]


def run_parts(kernel: Callable[..., object], n: int, threads: int, *args) -> None:
    """kernel(*args, lo, hi) over [0, n) cut into `threads` parts, in parallel (threads: the
    kernel must release the GIL, as the compiled ones here do)."""
    parts = _split(n, threads)
    if len(parts) <= 1:
        for lo, hi in parts:
            kernel(*args, lo, hi)
        return
    with ThreadPoolExecutor(len(parts)) as pool:
        for future in [pool.submit(kernel, *args, lo, hi) for lo, hi in parts]:
            future.result()
