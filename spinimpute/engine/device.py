"""Choosing the compute device, once per job: `--device auto|cpu|cuda` becomes "cpu" or "cuda"."""

from __future__ import annotations

import logging
import os
from typing import Literal, get_args

log = logging.getLogger(__name__)

DeviceRequest = Literal["auto", "cpu", "cuda"]
Device = Literal["cpu", "cuda"]


def select_device(requested: DeviceRequest) -> Device:
    """'cpu' or 'cuda': 'auto' takes a GPU when there is one, 'cuda' without one falls back with a warning.

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
        log.warning("--device cuda was requested but no CUDA device is available; running on the CPU")
    return "cpu"


def _gpu_driver_present() -> bool:
    """Whether an NVIDIA (or ROCm) kernel driver is loaded, which any CUDA device needs."""
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd"))

