"""The imputation engine: runs a model over the windows of each contig.

For each window it unpacks the panel's haplotypes, runs the copying model and the SPIN
predictor for the target haplotypes in batches, and hands back the probabilities of the
window's core sites, so windows stream and memory does not grow with contig length.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from spinimpute import hmm
from spinimpute.errors import InputFileError
from spinimpute.model import MASKED, SpinImputer
from spinimpute.modelfile import ModelBundle, ReferenceContig
from spinimpute.vcf import Target, TargetContig
from spinimpute.windows import Window, site_features

log = logging.getLogger(__name__)

# Bytes of forward-backward state per query batch; bounds peak memory per window.
HMM_STATE_BUDGET = 256 * 2**20


def window_logits(
    network: SpinImputer,
    *,
    ref_alleles: torch.Tensor,
    site_cm: torch.Tensor,
    features: torch.Tensor,
    typed_columns: torch.Tensor,
    query_typed: torch.Tensor,
    inducing: torch.Tensor,
    groups: hmm.SiteGroups | None = None,
    columns: slice | None = None,
) -> torch.Tensor:
    """ALT logits at the sites of one window for a batch of query haplotypes.

    Args:
        ref_alleles: (R, W) float 0/1 reference haplotypes.
        site_cm: (W,) genetic positions.
        features: (W, SITE_FEATURES) site features.
        typed_columns: (M,) long, window columns of the typed markers, increasing.
        query_typed: (Q, M) long query alleles at those markers, MISSING where missing.
        inducing: (I, F*E) inducing points of the window.
        groups: the reference sequences between markers of the sites predicted, shared by batches.
        columns: the sites to predict, all W by default; the markers of the whole window
            inform them. Its start must be a multiple of the model's k-mer length, so that
            tokens are those of the whole window.

    Returns:
        (Q, W') logits for the W' sites of `columns`.
    """
    columns = columns or slice(0, ref_alleles.shape[1])
    observed = query_typed >= 0
    hmm_prob = network.copy_probabilities(
        ref_typed=ref_alleles[:, typed_columns],
        query_typed=query_typed.clamp(min=0).to(ref_alleles.dtype),
        observed=observed,
        marker_cm=site_cm[typed_columns],
        ref_sites=ref_alleles[:, columns],
        site_cm=site_cm[columns],
        groups=groups,
    )
    query_alleles = torch.full(hmm_prob.shape, MASKED, dtype=torch.long, device=hmm_prob.device)
    inside = (typed_columns >= columns.start) & (typed_columns < columns.stop)
    query_alleles[:, typed_columns[inside] - columns.start] = torch.where(
        observed[:, inside], query_typed[:, inside], MASKED
    )
    return network.predict(
        inducing=inducing, query_alleles=query_alleles, hmm_prob=hmm_prob, site_features=features[columns]
    )


@dataclass
class ImputedBlock:
    """Results for the core sites [start, stop) of one window.

    Attributes:
        hap_prob: (stop - start, n_target_haplotypes) float32 ALT probabilities; typed,
            observed alleles are exactly 0 or 1.
        typed: (stop - start,) bool, sites present in the target.
        haploid: (stop - start, n_samples) bool ploidy of each call, or None if all diploid.
    """

    contig: str
    start: int
    stop: int
    hap_prob: np.ndarray
    typed: np.ndarray
    haploid: np.ndarray | None = None


def _query_batch_size(n_markers: int, n_ref: int) -> int:
    per_query = max(1, 2 * n_markers * n_ref * 4)
    return max(1, HMM_STATE_BUDGET // per_query)


def windows_for(contig: ReferenceContig, sites: range | None) -> list[int]:
    """Indices of the windows whose cores hold any of the panel site indices `sites` (all if None)."""
    if sites is None:
        return list(range(len(contig.windows)))
    return [i for i, w in enumerate(contig.windows) if w.core_start < sites.stop and w.core_stop > sites.start]


@torch.inference_mode()
def impute_contig(
    network: SpinImputer,
    contig: ReferenceContig,
    target: TargetContig,
    *,
    device: torch.device,
    name: str,
    sites: range | None = None,
) -> Iterator[ImputedBlock]:
    """Impute the sites of a panel contig (all, or the index range `sites`) window by window.

    Windows are fixed by the model, so a site gets the same result whether a run covers
    the whole contig or only a region around it.
    """
    n_target_haps = target.alleles.shape[1]
    typed_sites = np.zeros(len(contig.sites), dtype=bool)
    typed_sites[target.site_index] = True
    for w_index in windows_for(contig, sites):
        block = _impute_window(
            network, contig, target, contig.windows[w_index], w_index, typed_sites, n_target_haps, device, name
        )
        if sites is not None:
            lo, hi = max(block.start, sites.start), min(block.stop, sites.stop)
            block = ImputedBlock(name, lo, hi, block.hap_prob[lo - block.start : hi - block.start],
                                 block.typed[lo - block.start : hi - block.start])
        block.haploid = target.haploid_at(np.arange(block.start, block.stop), contig.sites.positions)
        yield block


def _impute_window(network, contig, target, window: Window, w_index, typed_sites, n_target_haps, device, name):
    ref = torch.from_numpy(contig.haplotypes(window.start, window.stop).T.astype(np.float32)).to(device)
    site_cm = torch.from_numpy(contig.cm[window.start : window.stop].astype(np.float32)).to(device)
    features = torch.from_numpy(
        site_features(contig.alt_freq[window.start : window.stop], contig.cm[window.start : window.stop])
    ).to(device)
    inducing = torch.from_numpy(contig.inducing[w_index]).to(device)
    lo, hi = np.searchsorted(target.site_index, [window.start, window.stop])
    typed_columns = torch.from_numpy(target.site_index[lo:hi] - window.start).to(device)
    target_alleles = torch.from_numpy(target.alleles[lo:hi].T.astype(np.int64)).to(device)  # (H, M)
    # Only the core is written: predict the whole k-mer tokens that cover it.
    k = network.kmer
    core = slice(window.core_start - window.start, window.core_stop - window.start)
    columns = slice(core.start // k * k, min(ref.shape[1], -(-core.stop // k) * k))
    core_in_columns = slice(core.start - columns.start, core.stop - columns.start)
    out = np.empty((window.core_stop - window.core_start, n_target_haps), dtype=np.float32)
    batch = _query_batch_size(len(typed_columns), min(ref.shape[0], network.copying_states))
    groups = None
    if len(typed_columns):
        groups = hmm.group_sites(ref[:, columns], hmm.interval_bounds(site_cm[typed_columns], site_cm[columns]))
    typed_here = (typed_columns >= columns.start) & (typed_columns < columns.stop)
    typed_in_columns = typed_columns[typed_here] - columns.start
    for q0 in range(0, n_target_haps, batch):
        q1 = min(n_target_haps, q0 + batch)
        logits = window_logits(
            network,
            ref_alleles=ref,
            site_cm=site_cm,
            features=features,
            typed_columns=typed_columns,
            query_typed=target_alleles[q0:q1],
            inducing=inducing,
            groups=groups,
            columns=columns,
        )
        prob = torch.sigmoid(logits.float())
        typed_alleles = target_alleles[q0:q1, typed_here]
        prob[:, typed_in_columns] = torch.where(typed_alleles >= 0, typed_alleles.float(), prob[:, typed_in_columns])
        out[:, q0:q1] = prob[:, core_in_columns].T.cpu().numpy()
    return ImputedBlock(name, window.core_start, window.core_stop, out, typed_sites[window.core_start : window.core_stop])


PHASING_ROUNDS = 3


@torch.inference_mode()
def phase_contig(
    network: SpinImputer,
    contig: ReferenceContig,
    target: TargetContig,
    *,
    device: torch.device,
    sites: range | None = None,
):
    """Resolve the phase of unphased heterozygous target genotypes against the panel.

    Window by window, with the copying model on the typed markers: first each haplotype
    is run with its undecided heterozygous sites hidden, and at each such site the ALT
    allele goes to the haplotype that the panel finds likelier to carry it (P1 (1 - P2)
    against P2 (1 - P1)). Then, for a few rounds, each site is re-decided from
    leave-one-out probabilities given the current phase of all the others, alternating
    between even- and odd-numbered sites so that neighbours do not flip together. Sites
    decided by the previous window stay fixed and anchor the phase across windows.

    With `sites`, only the windows imputing those sites and one window either side are
    phased; other unphased genotypes are left as written.

    Returns:
        A TargetContig whose alleles are phased (where `sites` reaches) and whose
        `unphased` mask is all False.
    """
    if not target.unphased.any():
        return target
    alleles = target.alleles.copy()
    unphased = target.unphased
    decided = np.zeros_like(unphased)
    n_ref = contig.n_haplotypes
    rate, error = network.switch_rate(n_ref), network.mismatch()
    needed = windows_for(contig, sites)
    for w_index in range(max(0, needed[0] - 1), min(len(contig.windows), needed[-1] + 2)) if needed else []:
        window = contig.windows[w_index]
        lo, hi = np.searchsorted(target.site_index, [window.start, window.stop])
        open_sites = unphased[lo:hi] & ~decided[lo:hi]
        samples = np.flatnonzero(open_sites.any(axis=0))
        if len(samples) == 0:
            continue
        columns = target.site_index[lo:hi]
        haps = contig.haplotypes(window.start, window.stop)[columns - window.start]
        ref_typed = torch.from_numpy(haps.T.astype(np.float32)).to(device)
        marker_cm = torch.from_numpy(contig.cm[columns].astype(np.float32)).to(device)
        open_s = open_sites[:, samples]  # (M, S)
        block = alleles[lo:hi][:, np.stack([2 * samples, 2 * samples + 1], axis=1).ravel()]  # (M, 2S)
        # Whole samples per batch; leave-one-out holds about three times the state of a plain pass.
        step = max(2, _query_batch_size(len(columns), n_ref) // 6 * 2)
        copying = (ref_typed, marker_cm, rate, error, step, device)
        _assign_phase(block, *_slot_alt_probabilities(block, open_s, *copying, leave_one_out=False), open_s)
        parity = (np.cumsum(open_s, axis=0) % 2).astype(bool)
        for _ in range(PHASING_ROUNDS):
            for half in (parity, ~parity):
                probs = _slot_alt_probabilities(block, np.zeros_like(open_s), *copying, leave_one_out=True)
                _assign_phase(block, *probs, open_s & half)
        in_core = (columns >= window.core_start) & (columns < window.core_stop)
        rows, cols = np.nonzero(open_s & in_core[:, None])
        alleles[lo + rows, 2 * samples[cols]] = block[rows, 2 * cols]
        alleles[lo + rows, 2 * samples[cols] + 1] = block[rows, 2 * cols + 1]
        decided[lo + rows, samples[cols]] = True
    return TargetContig(target.site_index, alleles, np.zeros_like(unphased), target.haploid)


def _slot_alt_probabilities(block, hidden, ref_typed, marker_cm, rate, error, step, device, *, leave_one_out):
    """ALT probabilities of both slots of each sample at its typed markers.

    Args:
        block: (M, 2S) alleles, sample s in columns 2s and 2s+1.
        hidden: (M, S) bool, genotypes to hide from both slots.
        leave_one_out: each marker's probability without its own allele (else hidden
            markers only are left out).

    Returns:
        (M, S) probabilities for the first slots and for the second slots.
    """
    query = block.T.astype(np.int64)
    observed = (query >= 0) & ~np.repeat(hidden.T, 2, axis=0)
    out = []
    for q0 in range(0, query.shape[0], step):
        args = (
            ref_typed,
            torch.from_numpy(np.clip(query[q0 : q0 + step], 0, 1).astype(np.float32)).to(device),
            torch.from_numpy(observed[q0 : q0 + step]).to(device),
            marker_cm,
        )
        if leave_one_out:
            p = hmm.leave_one_out(*args, rate, error)
        else:
            p = hmm.impute_sites(*args, ref_typed, marker_cm, rate, error)
        out.append(p.cpu().numpy())
    p = np.concatenate(out).astype(np.float64)
    return p[0::2].T, p[1::2].T


def _assign_phase(block, p1, p2, where) -> None:
    """At heterozygotes `where`, put the ALT allele in the slot likelier to carry it."""
    first_alt = p1 * (1 - p2) >= p2 * (1 - p1)
    rows, cols = np.nonzero(where)
    block[rows, 2 * cols] = first_alt[rows, cols]
    block[rows, 2 * cols + 1] = ~first_alt[rows, cols]


def contigs_to_impute(bundle: ModelBundle, target: Target, target_path) -> list[str]:
    """Panel contigs that the target covers, in model order; errors when none."""
    names = [c for c in bundle.contigs if c in target.contigs]
    if not names:
        raise InputFileError(
            target_path,
            "no target site overlaps the model's panel sites (contigs in model: "
            + ", ".join(bundle.contigs)
            + ")",
        )
    return names


def select_device(requested: str) -> torch.device:
    """'auto' takes a GPU when there is one; 'cuda' without one falls back with a warning."""
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "cuda":
        log.warning("--device cuda was requested but no CUDA device is available; running on the CPU")
    return torch.device("cpu")


def call_doses(hap_prob: np.ndarray, haploid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """ALT dose and expected squared true dose of each call.

    Args:
        hap_prob: (n_sites, n_haplotypes) ALT probabilities, sample i at 2i, 2i+1.
        haploid: (n_sites, n_samples) bool or None; a haploid call's probability is the
            mean of its two slots.

    Returns:
        dose (n_sites, n_samples): p1 + p2, or p for a haploid call; and E[x^2]:
        p1 + p2 + 2 p1 p2, or p for a haploid call.
    """
    p = hap_prob.reshape(hap_prob.shape[0], -1, 2).astype(np.float64)
    dose = p.sum(axis=2)
    expected_sq = dose + 2 * p[:, :, 0] * p[:, :, 1]
    if haploid is not None:
        single = dose / 2
        dose = np.where(haploid, single, dose)
        expected_sq = np.where(haploid, single, expected_sq)
    return dose, expected_sq


def site_statistics(hap_prob: np.ndarray, haploid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """INFO AF and DR2 of each site.

    Args:
        hap_prob: (n_sites, n_haplotypes) ALT probabilities, sample i at 2i, 2i+1.
        haploid: optional (n_sites, n_samples) bool ploidy of each call.

    Returns:
        AF: estimated ALT frequency, the sum of doses over the sum of ploidies; and
        Beagle's DR2, the estimated squared correlation between estimated and true dose:
        (sum d^2 - (sum d)^2 / n) / (sum E[x^2] - (sum d)^2 / n), clipped to [0, 1].
    """
    dose, expected_sq = call_doses(hap_prob, haploid)
    n = dose.shape[1]
    alleles = 2.0 * n if haploid is None else np.where(haploid, 1.0, 2.0).sum(axis=1)
    total = dose.sum(axis=1)
    mean_term = total * total / n
    num = (dose * dose).sum(axis=1) - mean_term
    den = expected_sq.sum(axis=1) - mean_term
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(den > 1e-12, num / den, 0.0)
    return total / alleles, np.clip(r2, 0.0, 1.0)
