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

from spinimpute import hmm, kernels
from spinimpute.errors import InputFileError
from spinimpute.model import MASKED, SpinImputer
from spinimpute.modelfile import ModelBundle, ReferenceContig
from spinimpute.vcf import Target, TargetContig
from spinimpute.windows import site_features

log = logging.getLogger(__name__)

# Bytes of working memory per batch of query haplotypes; bounds peak memory per window.
QUERY_BATCH_BUDGET = 512 * 2**20
# Typed markers beyond each end of a group of windows that the copying model reads: a
# window's own flank holds few markers where the panel is dense or the array sparse, and
# the HMM needs that context (5 Mb simulation, 23,000 sites/Mb, 280 markers/Mb: r² 0.988
# with the windows' 1,000-site flanks alone, 0.998 with these markers).
CONTEXT_MARKERS = 192
# Sites of consecutive windows' cores imputed in one run of the copying model, so that
# the context markers are paid once per group rather than once per window.
HMM_BLOCK_SITES = 64000
# Query haplotypes per call of the SPIN predictor: its activations then stay in cache
# (2,000-site windows on 2 cores: 0.049 s per 400 queries in batches of 100, 0.066 s in one).
PREDICTOR_BATCH = 128


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
    hmm_prob = network.copy_probabilities(
        ref_typed=ref_alleles[:, typed_columns],
        query_typed=query_typed.clamp(min=0).to(ref_alleles.dtype),
        observed=query_typed >= 0,
        marker_cm=site_cm[typed_columns],
        ref_sites=ref_alleles[:, columns],
        site_cm=site_cm[columns],
        groups=groups,
    )
    inside = (typed_columns >= columns.start) & (typed_columns < columns.stop)
    return _predict(
        network, inducing, hmm_prob, typed_columns[inside] - columns.start, query_typed[:, inside], features[columns]
    )


def _predict(network: SpinImputer, inducing, hmm_prob, typed_columns, query_typed, features) -> torch.Tensor:
    """The SPIN predictor's logits (Q, W') from the copying model's probabilities at W' sites.

    typed_columns: (M,) positions of the typed markers among the W' sites; query_typed:
    (Q, M) their alleles, negative where missing.
    """
    query_alleles = torch.full(hmm_prob.shape, MASKED, dtype=torch.long, device=hmm_prob.device)
    query_alleles[:, typed_columns] = torch.where(query_typed >= 0, query_typed, MASKED)
    return network.predict(inducing=inducing, query_alleles=query_alleles, hmm_prob=hmm_prob, site_features=features)


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


def _query_batch_size(n_markers: int, n_states: int, *, compiled: bool = False, n_ref: int = 0, n_sites: int = 0) -> int:
    if compiled:
        # The compiled copying model keeps its state per thread: what grows with the batch is
        # candidate selection's (Q, R) scores and the float32 probabilities and logits of the sites.
        per_query = 24 * n_ref + 16 * n_sites
    else:
        # The torch copying model: float32 alpha, gamma, emissions and gathered states, int64 group indices.
        per_query = 24 * n_markers * n_states
    return max(1, QUERY_BATCH_BUDGET // max(1, per_query))


def windows_for(contig: ReferenceContig, sites: range | None) -> list[int]:
    """Indices of the windows whose cores hold any of the panel site indices `sites` (all if None)."""
    if sites is None:
        return list(range(len(contig.windows)))
    return [i for i, w in enumerate(contig.windows) if w.core_start < sites.stop and w.core_stop > sites.start]


def window_groups(contig: ReferenceContig, sites: range | None) -> list[list[int]]:
    """Consecutive windows imputed together (fixed by the model, whatever `sites` is)."""
    per_group = max(1, HMM_BLOCK_SITES // max(1, max((w.core_stop - w.core_start for w in contig.windows), default=1)))
    needed = windows_for(contig, sites)
    groups: dict[int, list[int]] = {}
    for w_index in needed:
        first = w_index // per_group * per_group
        groups.setdefault(first, list(range(first, min(len(contig.windows), first + per_group))))
    return list(groups.values())


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
    """Impute the sites of a panel contig (all, or the index range `sites`), one block per window.

    The copying model runs once per group of consecutive windows (`window_groups`), over
    the group's sites and the typed markers from CONTEXT_MARKERS before it to
    CONTEXT_MARKERS after it; the SPIN predictor then runs per window with the window's
    inducing points. Groups are fixed by the model, so a site gets the same result
    whether a run covers the whole contig or only a region around it.
    """
    typed_sites = np.zeros(len(contig.sites), dtype=bool)
    typed_sites[target.site_index] = True
    needed = set(windows_for(contig, sites))
    for group in window_groups(contig, sites):
        for w_index, block in zip(group, _impute_group(network, contig, target, group, typed_sites, device, name)):
            if w_index not in needed:
                continue
            if sites is not None:
                lo, hi = max(block.start, sites.start), min(block.stop, sites.stop)
                block = ImputedBlock(name, lo, hi, block.hap_prob[lo - block.start : hi - block.start],
                                     block.typed[lo - block.start : hi - block.start])
            block.haploid = target.haploid_at(np.arange(block.start, block.stop), contig.sites.positions)
            yield block


def _impute_group(network, contig, target, group: list[int], typed_sites, device, name) -> list[ImputedBlock]:
    windows = [contig.windows[i] for i in group]
    k = network.kmer
    # Sites predicted per window: the whole k-mer tokens (counted from the window's start)
    # that cover its core; the copying model covers all of them.
    spans = []
    for w in windows:
        lo = w.start + (w.core_start - w.start) // k * k
        hi = min(w.stop, w.start + -(-(w.core_stop - w.start) // k) * k)
        spans.append((lo, hi))
    g_lo, g_hi = min(a for a, _ in spans), max(b for _, b in spans)
    n_ref = contig.n_haplotypes
    site_cm = torch.from_numpy(contig.cm[g_lo:g_hi].astype(np.float32)).to(device)
    lo, hi = np.searchsorted(target.site_index, [g_lo, g_hi])
    c_lo, c_hi = max(0, lo - CONTEXT_MARKERS), min(len(target.site_index), hi + CONTEXT_MARKERS)
    marker_sites = target.site_index[c_lo:c_hi]
    marker_ref = np.unpackbits(contig.packed_haplotypes[marker_sites], axis=1, count=contig.n_haplotypes)
    marker_ref = torch.from_numpy(marker_ref.T.astype(np.float32)).to(device)  # (R, M)
    marker_cm = torch.from_numpy(contig.cm[marker_sites].astype(np.float32)).to(device)
    target_alleles = torch.from_numpy(target.alleles[c_lo:c_hi].T.astype(np.int64)).to(device)  # (H, M)
    n_target_haps = target_alleles.shape[0]
    # Grouped straight from the model file's packed rows: the group's sites are never unpacked.
    groups = hmm.group_packed_sites(
        contig.packed_haplotypes[g_lo:g_hi], n_ref, hmm.interval_bounds(marker_cm, site_cm)
    ) if len(marker_sites) else None
    batch = _query_batch_size(len(marker_sites), min(n_ref, network.copying_states),
                              compiled=hmm.runs_compiled(marker_ref), n_ref=n_ref, n_sites=g_hi - g_lo)
    per_window = []
    for w_index, w, (lo_w, hi_w) in zip(group, windows, spans):
        features = site_features(contig.alt_freq[w.start : w.stop], contig.cm[w.start : w.stop])
        w_lo, w_hi = np.searchsorted(marker_sites, [lo_w, hi_w])
        per_window.append({
            "inducing": torch.from_numpy(contig.inducing[w_index]).to(device),
            "features": torch.from_numpy(features[lo_w - w.start : hi_w - w.start]).to(device),
            "markers": slice(int(w_lo), int(w_hi)),
            "typed_columns": torch.from_numpy(marker_sites[w_lo:w_hi] - lo_w).to(device),
            "out": np.empty((w.core_stop - w.core_start, n_target_haps), dtype=np.float32),
        })
    for q0 in range(0, n_target_haps, batch):
        q1 = min(n_target_haps, q0 + batch)
        query = target_alleles[q0:q1]
        if len(marker_sites):
            hmm_prob = network.copy_probabilities(
                ref_typed=marker_ref, query_typed=query.clamp(min=0).float(), observed=query >= 0,
                marker_cm=marker_cm, ref_sites=None, site_cm=site_cm, groups=groups,
            )
        else:
            hmm_prob = torch.from_numpy(contig.alt_freq[g_lo:g_hi]).float().to(device).expand(q1 - q0, -1)
        for w, (lo_w, hi_w), part in zip(windows, spans, per_window):
            core = slice(w.core_start - lo_w, w.core_stop - lo_w)
            for p0 in range(0, q1 - q0, PREDICTOR_BATCH):
                p1 = min(q1 - q0, p0 + PREDICTOR_BATCH)
                typed_alleles = query[p0:p1, part["markers"]]
                logits = _predict(network, part["inducing"], hmm_prob[p0:p1, lo_w - g_lo : hi_w - g_lo],
                                  part["typed_columns"], typed_alleles, part["features"])
                prob = torch.sigmoid(logits.float())
                cols = part["typed_columns"]
                prob[:, cols] = torch.where(typed_alleles >= 0, typed_alleles.float(), prob[:, cols])
                part["out"][:, q0 + p0 : q0 + p1] = prob[:, core].T.cpu().numpy()
    return [
        ImputedBlock(name, w.core_start, w.core_stop, part["out"], typed_sites[w.core_start : w.core_stop])
        for w, part in zip(windows, per_window)
    ]


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
    total, dose_sq, expected_sq, alleles = kernels.site_sums(hap_prob, haploid)
    n = hap_prob.shape[1] // 2
    mean_term = total * total / n
    num = dose_sq - mean_term
    den = expected_sq - mean_term
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(den > 1e-12, num / den, 0.0)
        af = np.where(alleles > 0, total / alleles, 0.0)
    return af, np.clip(r2, 0.0, 1.0)
