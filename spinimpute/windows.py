"""Windowing of a contig's sites into overlapping blocks, and per-site features."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

SITE_FEATURES = 3  # ALT frequency, log10 MAF, genetic position relative to the window's centre
MASKED = 2  # allele code of a masked (untyped) SNP inside a token


@dataclass(frozen=True)
class Window:
    """Sites [start, stop) are the window; [core_start, core_stop) are the sites it writes.

    The cores of a contig's windows partition its sites, so stitching is exact: every
    site is written once, from the window in which it has the most context.
    """

    start: int
    stop: int
    core_start: int
    core_stop: int


def layout_windows(n_sites: int, *, core: int, flank: int) -> list[Window]:
    """Windows with cores of `core` sites and up to `flank` sites of context each side."""
    if core < 1 or flank < 0:
        raise ValueError("core must be positive and flank non-negative")
    windows = []
    n_windows = max(1, -(-n_sites // core))
    # Equal cores rather than a short last one.
    edges = np.linspace(0, n_sites, n_windows + 1).round().astype(int)
    for a, b in itertools.pairwise(edges):
        windows.append(Window(max(0, a - flank), min(n_sites, b + flank), int(a), int(b)))
    return windows


def site_features(alt_freq: np.ndarray, cm: np.ndarray) -> np.ndarray:
    """(W, SITE_FEATURES) float32 features of a window's sites.

    ALT frequency in the panel, log10 minor allele frequency, and genetic position in cM
    relative to the window's centre.
    """
    maf = np.minimum(alt_freq, 1.0 - alt_freq)
    log_maf = np.log10(np.maximum(maf, 1e-4)) / 4.0
    centre = 0.5 * (cm[0] + cm[-1]) if len(cm) else 0.0
    feats = np.stack([alt_freq, log_maf, np.clip(cm - centre, -5.0, 5.0)], axis=1).astype(np.float32)
    assert feats.shape[1] == SITE_FEATURES
    return feats
