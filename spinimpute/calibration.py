"""Fitting the weight of the SPIN predictor's corrections on held-out panel haplotypes.

Training fits the predictor's corrections to the copying model's logits on panel
haplotypes imputed window by window from all other haplotypes; imputation runs the copying
model over groups of windows from each target haplotype's preselected candidates, and the
corrections learned on the former can be too confident on the latter (real benchmark:
ALT probabilities near 0.99 after correction came true 0.976 of the time, against 0.982
for the copying model's own near 0.99). So after training, the panel's validation
individuals (never a training query) are imputed through the engine, as targets are, from
the panel without them, typed at an array-like set of sites; the weight w in [0, 1] that
minimises the cross-entropy of copying_logit + w (corrected_logit - copying_logit) over
their untyped sites is stored in the model (`SpinImputer.refinement_weight`), and
imputation scales the corrections by it.

Fitted on the panel only, never on targets; torch-free, as the CPU engine is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from spinimpute.modelfile import ReferenceContig
from spinimpute.vcf import TargetContig

# Logits of probabilities rounded to 0 or 1 in float32 are clipped to this.
MAX_LOGIT = 16.0
# Sites unpacked at a time when dropping haplotypes from a panel.
SITE_CHUNK = 50_000


@dataclasses.dataclass
class HeldOutLogits:
    """Logits of held-out haplotypes at the untyped sites the rest of the panel varies at.

    Attributes:
        copying: (n, H) float32 the copying model's (corrections at weight 0).
        corrected: (n, H) float32 with the predictor's corrections at weight 1.
        truth: (n, H) uint8 the held-out haplotypes' alleles.
    """

    copying: np.ndarray
    corrected: np.ndarray
    truth: np.ndarray


def without_haplotypes(contig: ReferenceContig, held_out: np.ndarray) -> ReferenceContig:
    """The contig's panel without the haplotypes `held_out`, with no inducing points."""
    keep = np.ones(contig.n_haplotypes, dtype=bool)
    keep[held_out] = False
    packed, alt_freq = [], []
    for start in range(0, len(contig.sites), SITE_CHUNK):
        haps = contig.haplotypes(start, min(len(contig.sites), start + SITE_CHUNK))[:, keep]
        packed.append(np.packbits(haps, axis=1))
        alt_freq.append(haps.mean(axis=1, dtype=np.float64).astype(np.float32))
    return dataclasses.replace(contig, packed_haplotypes=np.concatenate(packed), n_haplotypes=int(keep.sum()),
                               alt_freq=np.concatenate(alt_freq), inducing=None)


def haplotype_columns(contig: ReferenceContig, columns: np.ndarray) -> np.ndarray:
    """(n_sites, len(columns)) uint8 alleles of some of the contig's haplotypes, unpacked a chunk at a time."""
    n = len(contig.sites)
    return np.concatenate([contig.haplotypes(s, min(n, s + SITE_CHUNK))[:, columns] for s in range(0, n, SITE_CHUNK)])


def held_out_logits(model_at: Callable[[float], object], reduced: ReferenceContig, truth: np.ndarray,
                    typed: np.ndarray, *, name: str) -> HeldOutLogits:
    """Impute held-out haplotypes from a panel without them, corrections at weight 0 and 1.

    Args:
        model_at: the CpuImputer (or TorchImputer) whose corrections have a given weight.
        reduced: the panel contig without the held-out haplotypes, its inducing points encoded.
        truth: (n_sites, H) uint8 the held-out haplotypes' alleles, sample pairs in adjacent columns.
        typed: (M,) increasing site indices typed in them.
    """
    from spinimpute.impute import impute_contig  # the engine imports the model modules

    n_samples = truth.shape[1] // 2
    target = TargetContig(
        site_index=np.asarray(typed, dtype=np.int64),
        alleles=truth[typed].astype(np.int8),
        unphased=np.zeros((len(typed), n_samples), dtype=bool),
        haploid=np.zeros((len(typed), n_samples), dtype=bool),
    )
    # Sites the rest of the panel does not vary at are left out: a target's variants that no
    # panel haplotype carries are not panel sites at all.
    untyped = (reduced.alt_freq > 0) & (reduced.alt_freq < 1)
    untyped[typed] = False
    edge = 1 / (1 + np.exp(MAX_LOGIT))
    logits = []
    for weight in (0.0, 1.0):
        blocks = impute_contig(model_at(weight), reduced, target, name=name)
        prob = np.concatenate([block.hap_prob for block in blocks])
        p = np.clip(prob[untyped].astype(np.float64), edge, 1 - edge)
        logits.append(np.log(p / (1 - p)).astype(np.float32))
    return HeldOutLogits(copying=logits[0], corrected=logits[1], truth=truth[untyped])


def cross_entropy(held_out: list[HeldOutLogits], weight: float) -> float:
    """Mean binary cross-entropy of the held-out alleles with the corrections at `weight`."""
    total, count = 0.0, 0
    for h in held_out:
        copying = h.copying.astype(np.float64)
        z = copying + weight * (h.corrected - copying)
        total += float(np.sum(np.logaddexp(0.0, z) - h.truth * z))
        count += z.size
    return total / count if count else float("nan")


def fit_refinement_weight(held_out: list[HeldOutLogits]) -> float:
    """The weight in [0, 1] minimising `cross_entropy` (convex in it: logits are linear in
    the weight); 1 without held-out sites."""
    if sum(h.truth.size for h in held_out) == 0:
        return 1.0
    lo, hi = 0.0, 1.0
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = cross_entropy(held_out, a), cross_entropy(held_out, b)
    for _ in range(30):  # golden-section search, to a width of 1e-6
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = cross_entropy(held_out, a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = cross_entropy(held_out, b)
    # The search never evaluates the ends, where the optimum of a convex loss often lies.
    # Ties go to the weight training left (1).
    return min([1.0, (lo + hi) / 2, 0.0], key=lambda w: cross_entropy(held_out, w))
