"""Per-site statistics of imputed probabilities written to INFO: AF and DR2 (Beagle's dosage r²)."""

from __future__ import annotations

import numpy as np

from spinimpute.compiled import compiled, run_parts


def site_statistics(hap_prob: np.ndarray, haploid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """INFO AF and DR2 of each site.

    Args:
        hap_prob: (n_sites, n_haplotypes) ALT probabilities, sample i at 2i, 2i+1.
        haploid: optional (n_sites, n_samples) bool ploidy of each call; a haploid call's
            probability is the mean of its two slots.

    Returns:
        AF: estimated ALT frequency, the sum of doses over the sum of ploidies; and
        Beagle's DR2, the estimated squared correlation between estimated and true dose:
        (sum d^2 - (sum d)^2 / n) / (sum E[x^2] - (sum d)^2 / n), clipped to [0, 1], with
        dose d = p1 + p2 and E[x^2] = p1 + p2 + 2 p1 p2 for a diploid call, d = E[x^2] = p
        for a haploid one.
    """
    # One thread: the writer runs this for several blocks at once.
    total, dose_sq, expected_sq, alleles = site_sums(hap_prob, haploid)
    n = hap_prob.shape[1] // 2
    mean_term = total * total / n
    num = dose_sq - mean_term
    den = expected_sq - mean_term
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(den > 1e-12, num / den, 0.0)
        af = np.where(alleles > 0, total / alleles, 0.0)
    return af, np.clip(r2, 0.0, 1.0)



@compiled
def _site_sums(hap_prob, haploid, sums, lo, hi):  # pragma: no cover - compiled
    n_samples = hap_prob.shape[1] // 2
    has_ploidy = haploid.shape[0] > 0
    for i in range(lo, hi):
        dose_total = 0.0
        dose_sq = 0.0
        expected_sq = 0.0
        alleles = 0.0
        for s in range(n_samples):
            p1, p2 = np.float64(hap_prob[i, 2 * s]), np.float64(hap_prob[i, 2 * s + 1])
            if has_ploidy and haploid[i, s]:
                d = 0.5 * (p1 + p2)
                e = d
                alleles += 1.0
            else:
                d = p1 + p2
                e = d + 2.0 * p1 * p2
                alleles += 2.0
            dose_total += d
            dose_sq += d * d
            expected_sq += e
        sums[0, i] = dose_total
        sums[1, i] = dose_sq
        sums[2, i] = expected_sq
        sums[3, i] = alleles


def site_sums(hap_prob: np.ndarray, haploid: np.ndarray | None, threads: int = 1) -> np.ndarray:
    """Per-site sums over samples of the dose d, d², E[x²] and the ploidy (see `site_statistics`).

    Args:
        hap_prob: (n_sites, n_haplotypes) float32 ALT probabilities, sample i at 2i and 2i+1.
        haploid: (n_sites, n_samples) bool or None; a haploid call's dose is the mean of its slots.

    Returns:
        (4, n_sites) float64.
    """
    hap_prob = np.ascontiguousarray(hap_prob, dtype=np.float32)
    ploidy = np.zeros((0, 0), np.uint8) if haploid is None else np.ascontiguousarray(haploid, dtype=np.uint8)
    sums = np.zeros((4, hap_prob.shape[0]), np.float64)
    run_parts(_site_sums, hap_prob.shape[0], threads, hap_prob, ploidy, sums)
    return sums

