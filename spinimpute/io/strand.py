"""Orienting A/T and C/G SNPs by linkage disequilibrium with their neighbours.

A palindromic SNP's alleles are the same on both strands, so a target record cannot say
which strand it was called on. Allele frequency tells the two apart only away from 50 %;
nearer, the sign of the SNP's correlation with nearby unambiguous markers does: the
target's correlations have the panel's signs in the panel's orientation and the opposite
signs in the other one (as conform-gt and Genotype Harmonizer check strand). Dropping
these SNPs instead throws away markers that Beagle and Minimac4 use: on a simulated array
with random alleles (a third of SNPs palindromic), dropping 3 of 139 markers cost 0.008 of
r² at common sites.

Pure numpy: `spinimpute.io.reading.read_target` calls it with the panel's and the target's alleles.
"""

from __future__ import annotations

import numpy as np

# Unambiguous typed markers on each side whose correlation with the SNP is checked.
FLANK_MARKERS = 10
# A neighbour is informative where the panel correlates it with the SNP at least this strongly.
MIN_PANEL_CORRELATION = 0.3
# Informative neighbours needed for a decision.
MIN_INFORMATIVE = 3
# Weighted sign agreement (from -1 to 1) needed for a decision either way.
MIN_AGREEMENT = 0.6
# Target samples (with both genotypes called) a correlation needs (BENCHMARKS.md, constants).
MIN_SAMPLES = 10

KEEP, FLIP, UNDECIDED = 1, -1, 0


def linkage_orientation(panel_site: np.ndarray, panel_flanks: np.ndarray, target_site: np.ndarray,
                        target_flanks: np.ndarray) -> int:
    """KEEP, FLIP or UNDECIDED for a target SNP whose strand is unknown.

    Correlations are between ALT counts: of panel haplotypes, and of target samples (phase
    is not needed, so unphased targets are oriented before they are phased). Over the
    neighbours that the panel correlates with the SNP (|r| >= MIN_PANEL_CORRELATION) and
    whose target correlation is defined (over at least MIN_SAMPLES samples), the agreement
    sum(r_panel r_target) / sum(|r_panel r_target|) decides: KEEP at >= MIN_AGREEMENT, FLIP
    at <= -MIN_AGREEMENT; fewer than MIN_INFORMATIVE such neighbours decide nothing.

    Args:
        panel_site: (R,) panel ALT indicators at the SNP.
        panel_flanks: (F, R) panel ALT indicators at the neighbouring markers.
        target_site: (H,) target ALT indicators at the SNP as written, sample i at 2i and
            2i + 1 (a haploid call in both), negative where missing.
        target_flanks: (F, H) the same at the neighbouring markers, in panel orientation.
    """
    r_panel = _correlations(panel_site, panel_flanks)
    r_target = _correlations(_sample_dosage(target_site), _sample_dosage(target_flanks), MIN_SAMPLES)
    informative = (np.abs(r_panel) >= MIN_PANEL_CORRELATION) & np.isfinite(r_target)
    if informative.sum() < MIN_INFORMATIVE:
        return UNDECIDED
    product = r_panel[informative] * r_target[informative]
    scale = np.abs(product).sum()
    if scale == 0:
        return UNDECIDED
    agreement = product.sum() / scale
    if agreement >= MIN_AGREEMENT:
        return KEEP
    if agreement <= -MIN_AGREEMENT:
        return FLIP
    return UNDECIDED


def _sample_dosage(haplotypes: np.ndarray) -> np.ndarray:
    """(..., H) alleles, negative where missing -> (..., H / 2) ALT counts, NaN where either allele is missing."""
    haplotypes = np.asarray(haplotypes)
    pairs = haplotypes.reshape(*haplotypes.shape[:-1], haplotypes.shape[-1] // 2, 2).astype(np.float64)
    pairs[pairs < 0] = np.nan
    return pairs.sum(axis=-1)


def _correlations(x: np.ndarray, y: np.ndarray, min_samples: int = 3) -> np.ndarray:
    """(F,) Pearson correlations of x (n,) with each row of y (F, n), each over the entries where
    both are defined; NaN where fewer than `min_samples` are or either is constant there."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1, len(x))
    if not (np.isnan(x).any() or np.isnan(y).any()):  # a panel's: the same sums, without masks
        n = len(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x - x.sum() / n
            yc = y - (y.sum(axis=1) / n)[:, None]
            denom = np.sqrt((xc * xc).sum() * (yc * yc).sum(axis=1))
            r = (yc * xc).sum(axis=1) / denom
        return np.where((n >= max(3, min_samples)) & (denom > 0), r, np.nan)
    both = ~np.isnan(x)[None, :] & ~np.isnan(y)
    count = both.sum(axis=1)
    xb, yb = np.where(both, x[None, :], 0.0), np.where(both, y, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_mean, y_mean = xb.sum(axis=1) / count, yb.sum(axis=1) / count
        xc, yc = np.where(both, xb - x_mean[:, None], 0.0), np.where(both, yb - y_mean[:, None], 0.0)
        denom = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
        r = (xc * yc).sum(axis=1) / denom
    return np.where((count >= max(3, min_samples)) & (denom > 0), r, np.nan)
