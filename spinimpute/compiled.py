"""Compiling numba kernels and running them on several threads: what every kernel module shares."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

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


# Parts per thread: taken in turn, so that a costly part (the rows of a group's common sites, say)
# does not leave the other threads idle while one finishes it (BENCHMARKS.md, constants).
PARTS_PER_THREAD = 8
# Threads that run kernels' parts, kept from call to call: starting threads for every call cost
# more than the small kernels that run hundreds of times per group of windows. They only run
# kernels, which never wait on the pool, so callers on several threads share it without deadlock.
_workers: ThreadPoolExecutor | None = None
_workers_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _workers
    with _workers_lock:
        if _workers is None:
            _workers = ThreadPoolExecutor(max_workers=max(32, 4 * (os.cpu_count() or 1)),
                                          thread_name_prefix="spinimpute-kernel")
        return _workers


def run_parts(kernel: Callable[..., object], n: int, threads: int, *args) -> None:
    """kernel(*args, lo, hi) over [0, n) cut into parts that `threads` threads take in turn, the
    calling one and the pool's (the kernel must release the GIL, as the compiled ones here do)."""
    threads = max(1, min(threads, n))
    parts = iter(_split(n, threads * PARTS_PER_THREAD if threads > 1 else 1))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                part = next(parts, None)
            if part is None:
                return
            kernel(*args, *part)

    futures = [_pool().submit(work) for _ in range(threads - 1)]
    try:
        work()
    finally:
        wait(futures)
    for future in futures:
        future.result()
