"""Training a SpinImputer on a reference panel.

Each step takes one window and a few panel individuals as pseudo-targets. Their
haplotypes are removed from the reference rows, typed at a random array-like subset of
sites (1-10 % of sites, favouring common variants, as genotyping arrays do), and the
model learns to predict the rest from the remaining panel. A fixed set of held-out
individuals measures, before and after training, what training gained; the better of
the two states is kept. Imputing those individuals through the engine then sets the
weight of the predictor's corrections (`fit_refinement`, `spinimpute.training.calibration`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from spinimpute.engine.cpu import CpuImputer
from spinimpute.engine.device import Device, return_free_memory
from spinimpute.io.genmap import GeneticMap, constant_rate_cm
from spinimpute.model.config import MASKED
from spinimpute.model.features import site_features
from spinimpute.model.network import SpinImputer
from spinimpute.panel import Panel, ReferenceContig, Sites, layout_windows
from spinimpute.training.calibration import (
    HeldOutSet,
    cross_entropy,
    fit_refinement_weight,
    fit_switch_rate,
    held_out_logits,
    split_haplotypes,
)

log = logging.getLogger(__name__)

# Spans of consecutive windows a long panel's held-out fits are made on (`fit_regions`).
FIT_SPANS = 5
# Windows encoded between returns of the heap's free pages to the system (`return_free_memory`).
TRIM_WINDOWS = 32


@dataclass
class TrainingOptions:
    """Training settings.

    Attributes:
        steps: optimiser steps (one window each); none by default, as preparing a panel takes none.
        learning_rate: peak AdamW learning rate (linear warm-up, cosine decay).
        query_samples: panel individuals held out as pseudo-targets per step.
        min_typed, max_typed: range of the fraction of sites typed in training masks.
        validation_samples: panel individuals kept out of training to measure it.
        validation_windows: windows of each panel on which they measure it.
        validation_typed: typed fraction of the validation masks.
        fit_sites: most panel sites on which the held-out individuals are imputed for the
            switch-rate and corrections fits: a larger panel is fitted on `FIT_SPANS` spans of
            consecutive windows spread along it, so that the fits take the same time whatever
            the panel's length.
        encoder_rows: reference rows the dataset encoder sees, per training step and
            when the panel is encoded for imputation (a random subset: the inducing
            points are attention-weighted summaries, so a subset makes them at a
            fraction of the cost, and encoding costs the same whatever the panel size).
        seed: random seed of the held-out split, the validation windows and masks, and the
            held-out fits.
        draws_seed: random seed of the training steps' draws (windows, pseudo-targets, masks) and
            of torch; `seed` where None. Training a network further on the same panels draws
            anew but holds out the same individuals.
    """

    steps: int = 0
    learning_rate: float = 2e-3
    query_samples: int = 8
    min_typed: float = 0.01
    max_typed: float = 0.10
    validation_samples: int = 10
    validation_windows: int = 6
    validation_typed: float = 0.04
    fit_sites: int = 24_000
    encoder_rows: int = 256
    seed: int = 1
    draws_seed: int | None = None


def build_reference(panel: Panel, genetic_map: GeneticMap | None, *, core: int, flank: int) -> dict[str, ReferenceContig]:
    """Pack the panel, place its sites on the genetic map and lay out windows."""
    contigs = {}
    for name, pc in panel.contigs.items():
        positions = pc.sites.positions
        cm = genetic_map.interpolate(name, positions) if genetic_map is not None else constant_rate_cm(positions)
        # Sites at one position (split multiallelics) share a cM; keep the map non-decreasing.
        cm = np.maximum.accumulate(cm)
        contigs[name] = ReferenceContig(
            sites=pc.sites,
            cm=cm,
            packed_haplotypes=pc.packed,
            n_haplotypes=pc.n_haplotypes,
            alt_freq=pc.alt_freq.astype(np.float32),
            windows=layout_windows(len(positions), core=core, flank=flank),
        )
    return contigs


def choose_typed(alt_freq: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Window columns of an array-like typed set: weighted by minor allele frequency."""
    maf = np.minimum(alt_freq, 1.0 - alt_freq)
    candidates = np.flatnonzero(maf > 0)
    if len(candidates) == 0:
        return np.zeros(0, dtype=np.int64)
    n = min(len(candidates), max(1, round(fraction * len(alt_freq))))
    weights = maf[candidates] / maf[candidates].sum()
    return np.sort(rng.choice(candidates, size=n, replace=False, p=weights))


def _window_batch(
    contig: ReferenceContig, w_index: int, query_haps: np.ndarray, typed_fraction, rng, device, encoder_rows: int
):
    """Reference rows, features, typed columns and truth for one training window."""
    window = contig.windows[w_index]
    haps = contig.haplotypes(window.start, window.stop)  # (W, R)
    is_query = np.zeros(haps.shape[1], dtype=bool)
    is_query[query_haps] = True
    ref = haps[:, ~is_query].T
    truth = haps[:, query_haps].T
    alt_freq = ref.mean(axis=0)
    cm = contig.cm[window.start : window.stop]
    typed = choose_typed(alt_freq, typed_fraction, rng)
    encoder_subset = np.sort(rng.choice(ref.shape[0], size=min(encoder_rows, ref.shape[0]), replace=False))
    return {
        "encoder_rows": torch.from_numpy(encoder_subset).to(device),
        "ref": torch.from_numpy(ref.astype(np.float32)).to(device),
        "site_cm": torch.from_numpy(cm.astype(np.float32)).to(device),
        "features": torch.from_numpy(site_features(alt_freq, cm)).to(device),
        "typed": torch.from_numpy(typed).to(device),
        "truth": torch.from_numpy(truth.astype(np.float32)).to(device),
    }


def window_logits(
    network: SpinImputer,
    *,
    ref_alleles: torch.Tensor,
    site_cm: torch.Tensor,
    features: torch.Tensor,
    typed_columns: torch.Tensor,
    query_typed: torch.Tensor,
    inducing: torch.Tensor,
) -> torch.Tensor:
    """ALT logits (Q, W) at the sites of one window for query haplotypes, differentiable.

    Args:
        ref_alleles: (R, W) float 0/1 reference haplotypes.
        site_cm: (W,) genetic positions.
        features: (W, SITE_FEATURES) site features.
        typed_columns: (M,) long, window columns of the typed markers, increasing.
        query_typed: (Q, M) long query alleles at those markers, negative where missing.
        inducing: (I, F*E) inducing points of the window.
    """
    hmm_prob, hmm_evidence = network.copy_probabilities(
        ref_typed=ref_alleles[:, typed_columns],
        query_typed=query_typed.clamp(min=0).to(ref_alleles.dtype),
        observed=query_typed >= 0,
        marker_cm=site_cm[typed_columns],
        ref_sites=ref_alleles,
        site_cm=site_cm,
    )
    query_alleles = torch.full(hmm_prob.shape, MASKED, dtype=torch.long, device=hmm_prob.device)
    query_alleles[:, typed_columns] = torch.where(query_typed >= 0, query_typed, MASKED)
    return network.predict(inducing=inducing, query_alleles=query_alleles, hmm_prob=hmm_prob,
                           hmm_evidence=hmm_evidence, site_features=features)


def _loss(network: SpinImputer, batch) -> tuple[torch.Tensor, torch.Tensor]:
    inducing = network.encode(batch["ref"][batch["encoder_rows"]].long(), batch["features"])
    truth = batch["truth"]
    logits = window_logits(
        network,
        ref_alleles=batch["ref"],
        site_cm=batch["site_cm"],
        features=batch["features"],
        typed_columns=batch["typed"],
        query_typed=truth[:, batch["typed"]].long(),
        inducing=inducing,
    )
    untyped = torch.ones(truth.shape[1], dtype=torch.bool, device=truth.device)
    untyped[batch["typed"]] = False
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, untyped], truth[:, untyped])
    return loss, torch.sigmoid(logits[:, untyped]).detach()


def _haplotypes_of(samples: np.ndarray) -> np.ndarray:
    return np.sort(np.concatenate([2 * samples, 2 * samples + 1]))


@torch.no_grad()
def _validate(network: SpinImputer, batches) -> dict:
    """Aggregate dosage r² and loss over the validation windows' untyped sites."""
    network.eval()
    losses, preds, truths = [], [], []
    for batch in batches:
        loss, prob = _loss(network, batch)
        losses.append(loss.item())
        untyped = torch.ones(batch["truth"].shape[1], dtype=torch.bool)
        untyped[batch["typed"].cpu()] = False
        truth = batch["truth"][:, untyped.to(batch["truth"].device)]
        # Diploid dosages: pair haplotypes 2i, 2i+1.
        preds.append((prob[0::2] + prob[1::2]).flatten().cpu())
        truths.append((truth[0::2] + truth[1::2]).flatten().cpu())
    p, t = torch.cat(preds).double(), torch.cat(truths).double()
    r2 = float(torch.corrcoef(torch.stack([p, t]))[0, 1] ** 2) if t.std() > 0 and p.std() > 0 else float("nan")
    network.train()
    return {"loss": float(np.mean(losses)), "r2": r2}


def held_out_samples(n_samples: int, options: TrainingOptions, *, panel: int = 0) -> np.ndarray:
    """The panel individuals kept out of training for the held-out checks (the training checks and
    the corrections' weight): `options.validation_samples`, or a fifth of a small panel; seeded."""
    n_val = min(options.validation_samples, max(0, n_samples // 5))
    return np.sort(np.random.default_rng([options.seed, panel]).permutation(n_samples)[:n_val])


@dataclass
class _PanelSplit:
    """One training panel: its windows (drawn by core size), held-out and training individuals."""

    contigs: dict[str, ReferenceContig]
    windows: list[tuple[str, int]]
    window_p: np.ndarray
    held_out: np.ndarray
    train: np.ndarray
    n_query: int

    @classmethod
    def of(cls, contigs: dict[str, ReferenceContig], options: TrainingOptions, panel: int) -> _PanelSplit:
        n_samples = next(iter(contigs.values())).n_haplotypes // 2
        windows = [(name, i) for name, c in contigs.items() for i in range(len(c.windows))]
        sizes = np.array([contigs[n].windows[i].core_stop - contigs[n].windows[i].core_start for n, i in windows],
                         float)
        held_out = held_out_samples(n_samples, options, panel=panel)
        train_samples = np.setdiff1d(np.arange(n_samples), held_out)
        n_query = max(1, min(options.query_samples, len(train_samples) // 4))
        if len(train_samples) - n_query < 1:
            raise ValueError("the panel needs at least two samples to train")
        return cls(contigs, windows, sizes / sizes.sum(), held_out, train_samples, n_query)


def train(
    network: SpinImputer,
    panels: list[dict[str, ReferenceContig]],
    options: TrainingOptions,
    *,
    device: Device,
    progress: bool = True,
) -> dict:
    """Train `network` in place on one panel (fine-tuning) or several (pretraining); return a summary.

    Each step draws a panel (in proportion to its sites), a window of it (in proportion to its
    core) and `query_samples` of its training individuals. The held-out individuals of each
    panel (`held_out_samples`) measure the network before and after on a few windows; if
    training did not lower their loss, the starting weights are kept.
    """
    draws_seed = options.seed if options.draws_seed is None else options.draws_seed
    rng = np.random.default_rng(draws_seed)
    torch.manual_seed(draws_seed)
    network.to(device).train()
    splits = [_PanelSplit.of(contigs, options, k) for k, contigs in enumerate(panels)]
    panel_sites = np.array([sum(len(c.sites) for c in split.contigs.values()) for split in splits], float)
    panel_p = panel_sites / panel_sites.sum()

    val_batches = []
    val_rng = np.random.default_rng(options.seed + 1)
    for split in splits:
        if len(split.held_out):
            picks = val_rng.choice(len(split.windows), size=min(len(split.windows), options.validation_windows),
                                   replace=False)
            for k in picks:
                name, i = split.windows[k]
                val_batches.append(_window_batch(split.contigs[name], i, _haplotypes_of(split.held_out),
                                                 options.validation_typed, val_rng, device, options.encoder_rows))
    summary: dict[str, Any] = {"options": asdict(options), "panels": len(panels),
                               "validation_samples": int(sum(len(split.held_out) for split in splits))}
    if val_batches:
        summary["validation_before"] = _validate(network, val_batches)
    initial_state = {k: v.detach().clone() for k, v in network.state_dict().items()}

    optimiser = torch.optim.AdamW(network.parameters(), lr=options.learning_rate, weight_decay=0.01)
    warmup = max(1, options.steps // 20)

    def lr_at(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, options.steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_at)
    losses = []
    bar = tqdm(range(options.steps), desc="training", unit="step", disable=not progress, leave=False)
    for _ in bar:
        split = splits[rng.choice(len(splits), p=panel_p)] if len(splits) > 1 else splits[0]
        name, i = split.windows[rng.choice(len(split.windows), p=split.window_p)]
        query = _haplotypes_of(rng.choice(split.train, size=split.n_query, replace=False))
        fraction = rng.uniform(options.min_typed, options.max_typed)
        batch = _window_batch(split.contigs[name], i, query, fraction, rng, device, options.encoder_rows)
        loss, _ = _loss(network, batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimiser.step()
        scheduler.step()
        losses.append(loss.item())
        if len(losses) % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}")
    summary["final_training_loss"] = float(np.mean(losses[-20:])) if losses else None
    if val_batches:
        after = _validate(network, val_batches)
        summary["validation_after"] = after
        if after["loss"] > summary["validation_before"]["loss"]:
            log.warning("training did not lower the held-out loss; keeping the weights it started from")
            network.load_state_dict(initial_state)
            summary["kept"] = "initial"
        else:
            summary["kept"] = "trained"
    network.eval()
    summary["ne"] = torch.exp(network.log_ne).item()
    summary["mismatch"] = network.mismatch().item()
    return summary


@torch.no_grad()
def encode_panel(
    network: SpinImputer,
    contigs: dict[str, ReferenceContig],
    *,
    device: Device,
    rows: int,
    seed: int,
    progress: bool = True,
) -> None:
    """Encode the panel once per window and cache the inducing points in `contigs`.

    The encoder reads the same seeded subset of at most `rows` haplotypes in every
    window, as it read subsets of that size in training. Moves `network` to `device`.
    """
    network.to(device).eval()
    total = sum(len(c.windows) for c in contigs.values())
    bar = tqdm(total=total, desc="encoding panel", unit="window", disable=not progress, leave=False)
    rng = np.random.default_rng(seed)
    for contig in contigs.values():
        n = contig.n_haplotypes
        subset = np.sort(rng.choice(n, size=min(rows, n), replace=False))
        cached = []
        for w in contig.windows:
            haps = contig.haplotypes(w.start, w.stop)[:, subset]
            ref = torch.from_numpy(haps.T.astype(np.int64)).to(device)
            feats = site_features(contig.alt_freq[w.start : w.stop], contig.cm[w.start : w.stop])
            cached.append(network.encode(ref, torch.from_numpy(feats).to(device)).cpu().numpy())
            bar.update()
            if len(cached) % TRIM_WINDOWS == 0:
                return_free_memory()  # the activations of windows of many sizes
        contig.inducing = np.stack(cached).astype(np.float32)
    bar.close()


def fit_regions(contigs: dict[str, ReferenceContig], max_sites: int) -> dict[str, ReferenceContig]:
    """The panel, or where it has more than `max_sites` sites, up to `FIT_SPANS` runs of consecutive
    windows' cores spread evenly along it, about `max_sites` in all, each laid out in windows as its
    contig is (named 'contig:first-last', 1-based site indices)."""
    if sum(len(c.sites) for c in contigs.values()) <= max_sites:
        return contigs
    cores = [(name, w.core_start, w.core_stop) for name, c in contigs.items() for w in c.windows]
    span = max(1, min(len(cores) // FIT_SPANS, round(max_sites / FIT_SPANS / np.mean([b - a for _, a, b in cores]))))
    firsts = sorted({k * (len(cores) - span) // (FIT_SPANS - 1) for k in range(FIT_SPANS)})  # never overlapping
    regions = {}
    for first in firsts:
        name = cores[first][0]
        run = [core for core in cores[first : first + span] if core[0] == name]  # a span stays on its contig
        contig, start, stop = contigs[name], run[0][1], run[-1][2]
        core = max(w.core_stop - w.core_start for w in contig.windows)
        flank = max(max(w.core_start - w.start, w.stop - w.core_stop) for w in contig.windows)
        s = contig.sites
        sites = Sites(s.contig, s.positions[start:stop], s.ids[start:stop], s.refs[start:stop], s.alts[start:stop])
        regions[f"{name}:{start + 1}-{stop}"] = ReferenceContig(
            sites=sites, cm=contig.cm[start:stop], packed_haplotypes=contig.packed_haplotypes[start:stop],
            n_haplotypes=contig.n_haplotypes, alt_freq=contig.alt_freq[start:stop],
            windows=layout_windows(stop - start, core=core, flank=flank))
    return regions


def fit_refinement(
    network: SpinImputer,
    contigs: dict[str, ReferenceContig],
    held_out: np.ndarray,
    options: TrainingOptions,
    *,
    device: Device,
    threads: int = 1,
    progress: bool = True,
) -> dict:
    """Fit the panel's copying switch rate and the weight of the predictor's corrections on panel
    individuals held out of training (see `spinimpute.training.calibration`); set them in `network`
    and return what the fits measured.

    They are imputed through the CPU engine from the panel without them, its inducing points
    encoded anew, typed at a MAF-weighted `options.validation_typed` of the sites, on at most
    `options.fit_sites` of them (`fit_regions`). First the
    copying model alone at the network's Ne times each of `NE_FACTORS` (a factor replaces 1 only
    if it beats it by two standard errors), then the corrections at weight 0 and 1 at that Ne.
    """
    held = _haplotypes_of(np.asarray(held_out, dtype=np.int64))
    regions = fit_regions(contigs, options.fit_sites)
    split = {name: split_haplotypes(c, held) for name, c in regions.items()}
    reduced = {name: rest for name, (rest, _) in split.items()}
    encode_panel(network, reduced, device=device, rows=options.encoder_rows, seed=options.seed, progress=progress)
    weights = {k: v.detach().cpu().numpy() for k, v in network.state_dict().items()}

    def model_at(weight: float, ne_factor: float = 1.0) -> CpuImputer:
        config = network.config.replace(copying_states=network.copying_states, refinement_weight=weight)
        log_ne = np.asarray(weights["log_ne"] + np.log(ne_factor), dtype=np.float32)
        return CpuImputer({**weights, "log_ne": log_ne}, config, threads=threads)

    rng = np.random.default_rng(options.seed + 2)
    held_out_sets = []
    for name, c in reduced.items():
        typed = choose_typed(c.alt_freq, options.validation_typed, rng)
        if len(typed):  # a contig the rest of the panel does not vary at has nothing to impute
            held_out_sets.append(HeldOutSet.of(name, c, split[name][1], typed))
    switch = fit_switch_rate(lambda factor: model_at(0.0, factor), held_out_sets)
    with torch.no_grad():
        network.log_ne.add_(float(np.log(switch.factor)))
    weights["log_ne"] = network.log_ne.detach().cpu().numpy()
    logits = [held_out_logits(model_at, h) for h in held_out_sets]
    fit = fit_refinement_weight(logits)
    network.refinement_weight = fit.weight
    return {
        "weight": fit.weight,
        "best_weight": fit.best,
        "t": fit.t,
        "held_out_haplotypes": len(held),
        "held_out_sites": int(sum(h.truth.shape[0] for h in logits)),
        "fit_regions": list(regions),
        "cross_entropy": {
            "copying_model": cross_entropy(logits, 0.0),
            "weight_1": cross_entropy(logits, 1.0),
            "fitted": cross_entropy(logits, fit.weight),
        },
        "switch_rate": {"ne": torch.exp(network.log_ne).item(), "factor": switch.factor, "best_factor": switch.best,
                        "t": switch.t, "cross_entropy": switch.cross_entropy},
    }
