"""The torch backend: the network itself (`spinimpute.model.network.SpinImputer`) on a torch device,
a GPU or, with `--precision mixed`, the CPU."""

from __future__ import annotations

import numpy as np
import torch

from spinimpute.model.config import ModelConfig
from spinimpute.model.network import SpinImputer


def configure_torch(threads: int, seed: int | None = None) -> None:
    """torch's intra-op threads, denormals flushed, and the seed of torch's and numpy's generators."""
    torch.set_num_threads(max(1, threads))
    # Probabilities far below float32's normal range only slow the torch HMM down; they round to zero anyway.
    torch.set_flush_denormal(True)
    if seed is not None:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)


def network_from_weights(weights: dict[str, np.ndarray], config: ModelConfig) -> SpinImputer:
    """The network of a model file's weights and hyperparameters, as a torch module in evaluation mode."""
    network = SpinImputer(config)
    network.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    return network.eval()


class TorchImputer:
    """A `SpinImputer` on a torch device behind the engine's `Imputer` protocol, as
    `spinimpute.engine.cpu.CpuImputer`: numpy arrays in and out, the work on the device."""

    compiled = False  # the engine sizes query batches for the torch copying model

    def __init__(self, network: SpinImputer, device, *, mixed_precision: bool = False):
        self.device = torch.device(device)
        # The SPIN predictor under bfloat16 autocast; the copying model stays float32, its
        # probabilities spanning more orders of magnitude than bfloat16's 8 bits of mantissa keep apart.
        self.mixed_precision = mixed_precision
        self.network = network.to(self.device).eval()
        self.kmer = network.kmer
        self.copying_states = network.copying_states
        self.threads = torch.get_num_threads()
        # On a GPU, batches of target haplotypes fill half the memory free now (all targets at
        # once where they fit); elsewhere the engine's default budget.
        self.memory_budget = torch.cuda.mem_get_info(self.device)[0] // 2 if self.device.type == "cuda" else None

    def _tensor(self, array: np.ndarray, dtype=None) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, dtype)

    @torch.inference_mode()
    def copy_probabilities(self, *, markers, query, candidates, marker_cm, site_cm, groups) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
        """(Q, J) and (Q, J, EVIDENCE_FEATURES) float32; arguments as `CpuImputer.copy_probabilities`."""
        query_t = self._tensor(query, torch.int64)
        hmm_prob, evidence = self.network.copy_probabilities(
            ref_typed=self._tensor(markers.T, torch.float32), query_typed=query_t.clamp(min=0).float(),
            observed=query_t >= 0, marker_cm=self._tensor(marker_cm), ref_sites=None, site_cm=self._tensor(site_cm),
            groups=groups, candidates=None if candidates is None else self._tensor(candidates, torch.int64),
        )
        return hmm_prob.float().cpu().numpy(), evidence.float().cpu().numpy()

    @torch.inference_mode()
    def predict(self, *, inducing, query_alleles, hmm_prob, hmm_evidence, site_features) -> np.ndarray:
        """(Q, W) float32 probabilities; arguments as `CpuImputer.predict`."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.mixed_precision):
            logits = self.network.predict(
                inducing=self._tensor(inducing), query_alleles=self._tensor(query_alleles, torch.int64),
                hmm_prob=self._tensor(hmm_prob), hmm_evidence=self._tensor(hmm_evidence),
                site_features=self._tensor(site_features),
            )
        return torch.sigmoid(logits.float()).cpu().numpy()
