"""The weight of the predictor's corrections, fitted on held-out panel haplotypes (`spinimpute.training.calibration`)."""

import itertools

import numpy as np
import pytest

from spinimpute.engine.torch_backend import network_from_weights
from spinimpute.io.modelfile import load_model
from spinimpute.training.calibration import (
    MIN_T,
    HeldOutLogits,
    cross_entropy,
    fit_refinement_weight,
    improvement_t,
    split_haplotypes,
)


def _held_out(true_weight: float, n_sites=10_000, n_haplotypes=20, seed=0) -> HeldOutLogits:
    """Held-out alleles drawn from the copying model's logits plus `true_weight` times the corrections."""
    rng = np.random.default_rng(seed)
    copying = rng.normal(0, 2, (n_sites, n_haplotypes))
    correction = rng.normal(0, 2, (n_sites, n_haplotypes))
    truth = rng.random(copying.shape) < 1 / (1 + np.exp(-(copying + true_weight * correction)))
    return HeldOutLogits(copying.astype(np.float32), (copying + correction).astype(np.float32), truth.astype(np.uint8))


@pytest.mark.parametrize("true_weight,want", [(0.4, 0.4), (0.8, 0.8), (1.5, 1.0), (-0.5, 0.0)])
def test_fit_finds_the_weight_the_alleles_were_drawn_with(true_weight, want):
    held = [_held_out(true_weight, seed=1), _held_out(true_weight, seed=2)]  # two contigs, the same haplotypes
    fit = fit_refinement_weight(held)
    assert fit.weight == fit.best == pytest.approx(want, abs=0.05)
    assert cross_entropy(held, fit.weight) <= min(cross_entropy(held, 0.0), cross_entropy(held, 1.0))
    assert want == 1.0 or fit.t <= -MIN_T


def test_fit_keeps_the_trained_weight_without_evidence():
    empty = HeldOutLogits(np.zeros((0, 20), np.float32), np.zeros((0, 20), np.float32), np.zeros((0, 20), np.uint8))
    assert fit_refinement_weight([empty]).weight == 1.0
    same = _held_out(0.4)
    same.corrected = same.copying.copy()  # the predictor changed nothing: every weight ties
    assert fit_refinement_weight([same]).weight == 1.0
    # Few sites: the best weight is below 1 but not by enough standard errors to replace it.
    few = _held_out(0.7, n_sites=20, seed=3)
    fit = fit_refinement_weight([few])
    assert fit.best < 1.0 and fit.t > -MIN_T and fit.weight == 1.0


def test_improvement_t_sign():
    held = [_held_out(0.3, seed=4)]
    assert improvement_t(held, 0.3) < -MIN_T  # the true weight beats 1
    assert improvement_t(held, 1.0) == 0.0


def test_panel_split_into_held_out_and_rest(trained_model):
    contig = load_model(trained_model).contigs["20"]
    held = np.array([0, 1, 10, 11])
    reduced, held_alleles = split_haplotypes(contig, held)
    full = contig.haplotypes(0, len(contig.sites))
    assert np.array_equal(held_alleles, full[:, held])
    keep = np.setdiff1d(np.arange(contig.n_haplotypes), held)
    assert reduced.n_haplotypes == len(keep) and reduced.inducing is None
    assert np.array_equal(reduced.haplotypes(0, len(contig.sites)), full[:, keep])
    np.testing.assert_allclose(reduced.alt_freq, full[:, keep].mean(axis=1), atol=1e-6)


def test_training_stores_the_fitted_weight(trained_model):
    bundle = load_model(trained_model)
    fit = bundle.metadata["training"]["refinement"]
    assert 0.0 <= fit["best_weight"] <= 1.0
    assert fit["weight"] == (fit["best_weight"] if fit["t"] <= -MIN_T else 1.0)
    assert bundle.config.refinement_weight == fit["weight"]
    assert fit["held_out_haplotypes"] == 2 * bundle.metadata["training"]["validation_samples"] > 0
    assert fit["held_out_sites"] > 0
    loss = fit["cross_entropy"]
    assert loss["fitted"] <= loss["weight_1"] + 1e-12
    assert network_from_weights(bundle.weights, bundle.config).refinement_weight == fit["weight"]


def test_training_stores_the_fitted_switch_rate(trained_model):
    bundle = load_model(trained_model)
    fit = bundle.metadata["training"]["refinement"]["switch_rate"]
    assert fit["factor"] == (fit["best_factor"] if fit["t"] <= -MIN_T else 1.0)
    assert set(fit["cross_entropy"]) == {"1", "0.5", "0.7", "1.4", "2"}
    best = min(fit["cross_entropy"], key=fit["cross_entropy"].get)
    assert float(best) == fit["best_factor"]
    assert np.exp(float(bundle.weights["log_ne"])) == pytest.approx(fit["ne"], rel=1e-5)


def test_switch_rate_fit_keeps_the_best_factor_only_beyond_noise(trained_model):
    from spinimpute.engine.cpu import CpuImputer
    from spinimpute.engine.torch_backend import network_from_weights
    from spinimpute.training.calibration import HeldOutSet, fit_switch_rate
    from spinimpute.training.trainer import encode_panel

    bundle = load_model(trained_model)
    contig = bundle.contigs["20"]
    held = np.array([0, 1, 2, 3])
    reduced, alleles = split_haplotypes(contig, held)
    network = network_from_weights(bundle.weights, bundle.config)
    encode_panel(network, {"20": reduced}, device="cpu", rows=256, seed=1, progress=False)
    typed = np.flatnonzero((reduced.alt_freq > 0.05) & (reduced.alt_freq < 0.95))[::10]
    sets = [HeldOutSet.of("20", reduced, alleles, typed)]

    def copying_at(factor):
        weights = {**bundle.weights, "log_ne": np.float32(bundle.weights["log_ne"] + np.log(factor))}
        return CpuImputer(weights, bundle.config.replace(refinement_weight=0.0))

    fit = fit_switch_rate(copying_at, sets)
    assert min(fit.cross_entropy.values()) == fit.cross_entropy[f"{fit.best:g}"]
    assert fit.factor == (fit.best if fit.t <= -MIN_T else 1.0) and np.isfinite(fit.t)
    # A network whose Ne is 4 times too large is pulled back: the fit keeps a factor below 1.
    too_large = fit_switch_rate(lambda factor: copying_at(4.0 * factor), sets)
    assert too_large.best < 1.0


def test_long_panels_are_fitted_on_spans_spread_along_them(trained_model):
    from spinimpute.training.trainer import FIT_SPANS, fit_regions

    contigs = load_model(trained_model).contigs
    contig, n_sites = next(iter(contigs.values())), sum(len(c.sites) for c in contigs.values())
    assert fit_regions(contigs, n_sites) is contigs  # a panel within the bound is fitted whole
    regions = fit_regions(contigs, n_sites // 2)
    assert min(FIT_SPANS, len(contig.windows)) == len(regions)
    spans = [tuple(int(x) for x in key.rsplit(":", 1)[1].split("-")) for key in regions]
    assert all(b > a for a, b in spans) and all(b1 < a2 for (_, b1), (a2, _) in itertools.pairwise(spans))
    assert spans[0][0] == 1 and spans[-1][1] == len(contig.sites)  # from one end to the other
    for key, region in regions.items():
        first, last = spans[list(regions).index(key)]
        assert region.sites.positions.tolist() == contig.sites.positions[first - 1 : last].tolist()
        assert np.array_equal(region.haplotypes(0, len(region.sites)), contig.haplotypes(first - 1, last))
        assert region.windows[-1].core_stop == len(region.sites)  # its windows cover it
