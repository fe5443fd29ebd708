"""Compute resources: the device, chosen once per job (`--device auto|cpu|cuda` becomes "cpu" or
"cuda"), the CPUs the process may use, and how glibc's heap keeps and returns freed memory."""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from typing import Literal, get_args

from spinimpute.errors import DeviceError

DeviceRequest = Literal["auto", "cpu", "cuda"]
Device = Literal["cpu", "cuda"]


def select_device(requested: DeviceRequest) -> Device:
    """'cpu' or 'cuda': 'auto' takes a GPU when there is one; 'cuda' without one is a DeviceError.

    Jobs call this once, at their start, and pass the answer on: a device is one of these
    strings everywhere (a torch.device, say, is a TypeError here rather than a silent other path).
    Without a GPU driver on the machine there is no GPU, and torch is not imported to
    find that out (a CPU run does without it).
    """
    if not isinstance(requested, str) or requested not in get_args(DeviceRequest):
        raise TypeError(f"device must be one of {', '.join(map(repr, get_args(DeviceRequest)))}, not {requested!r}")
    if requested == "cpu" or not _gpu_driver_present():
        available = False
    else:
        import torch

        available = torch.cuda.is_available()
    if available:
        return "cuda"
    if requested == "cuda":
        raise DeviceError("--device cuda: no CUDA device is available (--device auto falls back to the CPU)")
    return "cpu"


def _gpu_driver_present() -> bool:
    """Whether an NVIDIA (or ROCm) kernel driver is loaded, which any CUDA device needs."""
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd"))


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask (a cluster job's allocation, taskset), capped by a
    cgroup v2 CPU quota (a container's or a batch system's limit), as `--threads` defaults to."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def _glibc():
    """The C library, where it is glibc (whose malloc the functions below tune); else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> None:
    """Make glibc reuse freed heap memory instead of mapping fresh pages for every large tensor.

    The engine allocates and frees tensors of tens to hundreds of MB per window; with
    glibc's defaults each is a new mmap whose pages the kernel must zero, which measured
    as more system time than compute (BENCHMARKS.md, constants). numpy's arrays also stay in
    small pages (numpy asks for huge pages for arrays of 4 MB and more, each zeroed whole at
    its first touch, which cost more system time than the fewer page faults saved). The CLI
    sets this for its jobs.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(-4, 0)  # M_MMAP_MAX: serve large blocks from the heap
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: do not hand the heap top back after each free
    switch = numpy_hugepage_switch()
    if switch is not None:
        switch(False)


def numpy_hugepage_switch():
    """numpy's private switch of huge pages for its arrays (it returns the previous setting; the
    environment's NUMPY_MADVISE_HUGEPAGE=0 at numpy's import does the same), or None where absent."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage  # type: ignore[attr-defined]
    except ImportError:  # numpy 1.x
        try:
            from numpy.core.multiarray import _set_madvise_hugepage  # type: ignore[attr-defined,no-redef]
        except ImportError:
            return None
    return _set_madvise_hugepage


def return_free_memory() -> None:
    """Hand the free pages of glibc's heap back to the system (malloc_trim; elsewhere nothing).

    With freed memory kept for reuse (`keep_freed_memory`), allocations of many sizes one after
    another (a panel's blocks of records, the encoder's activations window by window) leave free
    holes that only grow the heap, by an amount that varied from run to run (BENCHMARKS.md,
    chromosome-length panel). `train` calls this after reading the panel and every few windows encoded.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
