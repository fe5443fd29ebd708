"""Fitting the weight of the SPIN predictor's corrections on held-out panel haplotypes.

Training fits the predictor's corrections to the copying model's logits on panel
haplotypes imputed window by window from all other haplotypes; imputation runs the copying
model over groups of windows from each target haplotype's preselected candidates, and the
corrections learned on the former can be too confident on the latter (BENCHMARKS.md,
constants). So after training, the panel's validation
individuals (never a training query) are imputed through the engine, as targets are, from
the panel without them, typed at an array-like set of sites; the weight w in [0, 1] that
minimises the cross-entropy of copying_logit + w (corrected_logit - copying_logit) over
their untyped sites is stored in the model (`SpinImputer.refinement_weight`), and
imputation scales the corrections by it. Ten individuals are few, so the weight stays at
the 1 training left unless they show the fitted one better beyond noise (a paired t over
haplotypes), since a fit that rests on a few haplotypes can make the targets' GP worse.

Fitted on the panel only, never on targets; torch-free, as the CPU engine is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from spinimpute.engine.impute import impute_contig
from spinimpute.engine.protocol import Imputer
from spinimpute.panel import ReferenceContig
from spinimpute.target import TargetContig

# Logits of probabilities rounded to 0 or 1 in float32 are clipped to this.
MAX_LOGIT = 16.0
# Sites unpacked at a time when dropping haplotypes from a panel.
SITE_CHUNK = 50_000
# Factors on the network's effective population size tried on each panel's held-out individuals.
NE_FACTORS = (0.5, 0.7, 1.4, 2.0)
# A fitted weight (or Ne factor) replaces 1 only if its cross-entropy is lower by at least this many
# standard errors of the mean over held-out haplotypes (one-sided p < 0.03 for 20).
MIN_T = 2.0


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


def split_haplotypes(contig: ReferenceContig, held_out: np.ndarray) -> tuple[ReferenceContig, np.ndarray]:
    """The contig's panel without the haplotypes `held_out` (with no inducing points), and
    their (n_sites, len(held_out)) uint8 alleles, from one pass over the packed panel."""
    keep = np.setdiff1d(np.arange(contig.n_haplotypes), held_out)
    packed, alt_freq, held = [], [], []
    for start in range(0, len(contig.sites), SITE_CHUNK):
        stop = min(len(contig.sites), start + SITE_CHUNK)
        haps = contig.haplotypes(start, stop)
        packed.append(np.packbits(haps.take(keep, axis=1), axis=1))
        held.append(haps.take(held_out, axis=1))
        # The panel's ALT counts (exact in float32 below 2**24 haplotypes) less the held-out ones'.
        count = np.rint(contig.alt_freq[start:stop].astype(np.float64) * contig.n_haplotypes)
        alt_freq.append(((count - held[-1].sum(axis=1)) / len(keep)).astype(np.float32))
    reduced = dataclasses.replace(contig, packed_haplotypes=np.concatenate(packed), n_haplotypes=len(keep),
                                  alt_freq=np.concatenate(alt_freq), inducing=None)
    return reduced, np.concatenate(held)


@dataclasses.dataclass
class HeldOutSet:
    """Held-out haplotypes of one contig, typed at an array-like set of sites, to impute from the panel without them.

    Attributes:
        reduced: the panel contig without them, its inducing points encoded.
        target: them at the typed sites, as a target.
        untyped: (n_sites,) bool the sites scored: untyped, and varying in the rest of the panel
            (a target's variant that no panel haplotype carries is not a panel site at all).
        truth: (n_untyped, H) uint8 their alleles there.
    """

    name: str
    reduced: ReferenceContig
    target: TargetContig
    untyped: np.ndarray
    truth: np.ndarray

    @classmethod
    def of(cls, name: str, reduced: ReferenceContig, truth: np.ndarray, typed: np.ndarray) -> HeldOutSet:
        """From (n_sites, H) uint8 held-out alleles, sample pairs in adjacent columns, and (M,) typed site indices."""
        n_samples = truth.shape[1] // 2
        target = TargetContig(
            site_index=np.asarray(typed, dtype=np.int64),
            alleles=truth[typed].astype(np.int8),
            unphased=np.zeros((len(typed), n_samples), dtype=bool),
            haploid=np.zeros((len(typed), n_samples), dtype=bool),
        )
        untyped = (reduced.alt_freq > 0) & (reduced.alt_freq < 1)
        untyped[typed] = False
        return cls(name, reduced, target, untyped, truth[untyped])

    def logits(self, model: Imputer) -> np.ndarray:
        """(n_untyped, H) float32 the ALT logits `model` imputes at the scored sites, clipped to MAX_LOGIT."""
        blocks = impute_contig(model, self.reduced, self.target, name=self.name)
        prob = np.concatenate([block.hap_prob for block in blocks])
        edge = 1 / (1 + np.exp(MAX_LOGIT))
        p = np.clip(prob[self.untyped].astype(np.float64), edge, 1 - edge)
        return np.log(p / (1 - p)).astype(np.float32)


def held_out_logits(model_at: Callable[[float], Imputer], held_out: HeldOutSet) -> HeldOutLogits:
    """The held-out haplotypes imputed with the corrections at weight 0 and 1 (`model_at(weight)`)."""
    return HeldOutLogits(copying=held_out.logits(model_at(0.0)), corrected=held_out.logits(model_at(1.0)),
                         truth=held_out.truth)


def haplotype_losses(logits: list[np.ndarray], held_out: list[HeldOutSet]) -> np.ndarray:
    """(H,) summed binary cross-entropy of each held-out haplotype's alleles under per-contig logits."""
    return np.sum([np.sum(np.logaddexp(0.0, z.astype(np.float64)) - h.truth * z, axis=0)
                   for z, h in zip(logits, held_out)], axis=0)


def paired_t(losses: np.ndarray, baseline: np.ndarray) -> float:
    """Paired t statistic over held-out haplotypes of `losses` minus `baseline` (negative: lower
    losses); 0 where it cannot be told."""
    diff = np.asarray(losses, dtype=np.float64) - baseline
    if diff.size < 2 or not np.any(diff):
        return 0.0
    sd = diff.std(ddof=1)
    return float(diff.mean() / (sd / np.sqrt(diff.size))) if sd > 0 else float(np.copysign(np.inf, diff.mean()))


@dataclasses.dataclass
class SwitchRateFit:
    """The factor on the network's effective population size (its switch rate) that the panel keeps.

    Attributes:
        factor: `best` if it beats 1 by `MIN_T` standard errors, otherwise 1.
        best: the factor of NE_FACTORS (or 1) whose copying model predicts the held-out alleles best.
        t: `paired_t` of `best` against 1.
        cross_entropy: mean cross-entropy per factor.
    """

    factor: float
    best: float
    t: float
    cross_entropy: dict[str, float]


def fit_switch_rate(copying_at: Callable[[float], Imputer], held_out: list[HeldOutSet], *,
                    min_t: float = MIN_T) -> SwitchRateFit:
    """The switch rate of the copying model alone (`copying_at(factor)`: the network's Ne times factor,
    corrections at weight 0) that predicts the held-out alleles best, kept if it beats 1 by `min_t`
    standard errors (the two-standard-error rule)."""
    count = sum(h.truth.size for h in held_out)
    losses = {f: haplotype_losses([h.logits(copying_at(f)) for h in held_out], held_out)
              for f in (1.0, *NE_FACTORS)}
    best = min(losses, key=lambda f: (losses[f].sum(), f != 1.0))
    t = paired_t(losses[best], losses[1.0])
    return SwitchRateFit(factor=best if t <= -min_t else 1.0, best=best, t=t,
                         cross_entropy={f"{f:g}": float(loss.sum() / max(1, count)) for f, loss in losses.items()})


def _per_haplotype_loss(held_out: list[HeldOutLogits], weight: float) -> np.ndarray:
    """(H,) summed binary cross-entropy of each held-out haplotype's alleles with the corrections at `weight`."""
    total = 0.0
    for h in held_out:
        copying = h.copying.astype(np.float64)
        z = copying + weight * (h.corrected - copying)
        total = total + np.sum(np.logaddexp(0.0, z) - h.truth * z, axis=0)
    return np.asarray(total, dtype=np.float64)


def cross_entropy(held_out: list[HeldOutLogits], weight: float) -> float:
    """Mean binary cross-entropy of the held-out alleles with the corrections at `weight`."""
    count = sum(h.truth.size for h in held_out)
    return float(_per_haplotype_loss(held_out, weight).sum() / count) if count else float("nan")


def improvement_t(held_out: list[HeldOutLogits], weight: float) -> float:
    """Paired t statistic over held-out haplotypes of the cross-entropy at `weight` minus at 1
    (negative: `weight` predicts their alleles better); 0 where it cannot be told."""
    return paired_t(_per_haplotype_loss(held_out, weight), _per_haplotype_loss(held_out, 1.0))


def best_weight(held_out: list[HeldOutLogits]) -> float:
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
    # The search never evaluates the ends, where the optimum of a convex loss often lies; ties go to 1.
    return min([1.0, (lo + hi) / 2, 0.0], key=lambda w: cross_entropy(held_out, w))


@dataclasses.dataclass
class RefinementFit:
    """The weight the model keeps, and what decided it.

    Attributes:
        weight: `best` if it beats 1 by `MIN_T` standard errors, otherwise 1.
        best: `best_weight` of the held-out haplotypes.
        t: `improvement_t` of `best`.
    """

    weight: float
    best: float
    t: float


def fit_refinement_weight(held_out: list[HeldOutLogits]) -> RefinementFit:
    """The weight of the predictor's corrections from held-out haplotypes (see the module's docstring)."""
    best = best_weight(held_out)
    t = improvement_t(held_out, best)
    return RefinementFit(weight=best if t <= -MIN_T else 1.0, best=best, t=t)
