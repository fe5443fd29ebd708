"""Phasing of unphased target genotypes against the panel, with the torch copying model.

Imputation runs on phased haplotypes; a target with unphased heterozygous genotypes is
phased here first, window by window (see `phase_contig`). This runs the torch code of
`spinimpute.hmm` (leave-one-out posteriors at the typed markers), on the CPU or a GPU.
"""

from __future__ import annotations

import numpy as np
import torch

from spinimpute import hmm
from spinimpute.impute import query_batch_size, windows_for
from spinimpute.model import SpinImputer
from spinimpute.modelfile import ReferenceContig
from spinimpute.vcf import TargetContig

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
        step = max(2, query_batch_size(len(columns), n_ref) // 6 * 2)
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
