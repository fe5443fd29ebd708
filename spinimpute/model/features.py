"""The per-site features the network reads beside the alleles."""

from __future__ import annotations

import numpy as np

from spinimpute.model.config import SITE_FEATURES


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

