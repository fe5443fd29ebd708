"""Compute resources: the device, chosen once per job (`--device auto|cpu|cuda` becomes "cpu" or
"cuda"), the CPUs the process may use, and the C library's memory arenas."""

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



def return_free_memory() -> None:
    """Hand the pages that freed allocations left in the C library's heap back to the system
    (glibc's malloc_trim; elsewhere nothing).

    Allocations of many sizes, one after another (a panel's blocks of records, the encoder's
    activations window by window), leave free holes in the heap that glibc keeps: a 60 Mb panel's
    preparation peaked between 0.72 and 1.03 GB from run to run with the same work (BENCHMARKS.md,
    chromosome-length panel). Jobs call this between their phases and every so many windows.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # no malloc_trim: not glibc
        pass
