"""The CPU backend: a trained model's imputation in numpy and compiled loops, no torch, no autograd.

`spinimpute.model.network.SpinImputer` is the model, a torch module that training
differentiates and a GPU runs. Imputing on a CPU needs only its inference: the copying
model (`spinimpute.model.copying_numpy`, compiled loops) and the SPIN predictor's forward pass over
the few tokens the copying model is unsure of. `CpuImputer` does both from the module's
weights, so that a CPU run never imports torch (about a second of every run, more than a
tenth of imputing a 5 Mb region). Tests hold it equal to the torch module.
"""

from __future__ import annotations

import math

import numpy as np

from spinimpute.compiled import compiled, run_parts
from spinimpute.model import copying_numpy
from spinimpute.model.config import CERTAIN, EVIDENCE_FEATURES, FEED_FORWARD, MASKED, SITE_FEATURES, ModelConfig

LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default


def _linear(x: np.ndarray, weights: dict, name: str) -> np.ndarray:
    return x @ weights[name + ".weight"].T + weights[name + ".bias"]


def _layer_norm(x: np.ndarray, weights: dict, name: str) -> np.ndarray:
    """LayerNorm over the last axis; its sums as products with a vector of ones, far faster in numpy
    than reductions over so short an axis."""
    average = np.full(x.shape[-1], 1.0 / x.shape[-1], dtype=x.dtype)
    centred = x - (x @ average)[:, None]
    var = (centred * centred) @ average
    scale = np.float32(1.0) / np.sqrt(var + np.float32(LAYER_NORM_EPS))
    return centred * scale[:, None] * weights[name + ".weight"] + weights[name + ".bias"]


class CpuImputer:
    """The inference of a trained `SpinImputer`, from its weights (the module's state dict as arrays).

    Args:
        weights: state dict of the module, float32 arrays by name.
        config: the module's hyperparameters.
        threads: threads of the compiled kernels.
    """

    compiled = True  # the engine sizes query batches for the compiled copying model
    memory_budget: int | None = None  # the engine's default working memory per batch

    def __init__(self, weights: dict[str, np.ndarray], config: ModelConfig, *, threads: int = 1):
        self.weights = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
        self.kmer = config.kmer
        self.n_heads = config.n_heads
        self.copying_states = config.copying_states
        self.refinement_weight = config.refinement_weight
        self.threads = threads
        # A head of zeros (training kept the untrained predictor) or weight 0 corrects nothing:
        # the copying model's logits are the output, without running the attention.
        self.corrects = bool(self.refinement_weight != 0 and (
            np.any(self.weights["head.weight"]) or np.any(self.weights["head.bias"])))

    # ---------------------------------------------------------------- copying model
    def switch_rate(self, n_reference: int) -> np.ndarray:
        """Template switch rate per cM for a panel of n_reference haplotypes (float32, as the module)."""
        return np.float32(0.04) * np.exp(self.weights["log_ne"]) / np.float32(n_reference)

    def mismatch(self) -> np.ndarray:
        return np.float32(1.0) / (np.float32(1.0) + np.exp(-self.weights["logit_mismatch"]))

    def copy_probabilities(self, *, markers: np.ndarray, query: np.ndarray, candidates: np.ndarray | None,
                           marker_cm: np.ndarray, site_cm: np.ndarray,
                           groups: copying_numpy.SiteGroups) -> tuple[np.ndarray, np.ndarray]:
        """The copying model's ALT probabilities (Q, J) float32 and their evidence: `Imputer.copy_probabilities`,
        as `SpinImputer.copy_probabilities` computes them."""
        n_ref = markers.shape[1]
        return copying_numpy.posteriors(markers, query, candidates, marker_cm, site_cm, groups,
                                        self.switch_rate(n_ref), self.mismatch(), threads=self.threads)

    # ---------------------------------------------------------------- predictor
    def predict(self, *, inducing: np.ndarray, query_alleles: np.ndarray, hmm_prob: np.ndarray,
                hmm_evidence: np.ndarray, site_features: np.ndarray) -> np.ndarray:
        """ALT probabilities (Q, W) float32: `Imputer.predict`, as the sigmoid of `SpinImputer.predict`'s
        logits. A certain token's probabilities are the copying model's, clipped as the module clips
        them (what the sigmoid of their logits gives back), so only the open tokens' take logarithms."""
        k = self.kmer
        w = query_alleles.shape[1]
        prob, is_open = clip_tokens(hmm_prob, k, threads=self.threads)
        if not self.corrects:
            return prob
        rows, cols = np.nonzero(is_open)
        if not len(rows):
            return prob
        # (N, kmer) sites of the open tokens; padding sites (beyond W) count as probability 0, logit 0.
        columns = cols[:, None] * k + np.arange(k)
        inside = columns < w
        columns = np.minimum(columns, w - 1)
        p_open = np.where(inside, prob[rows[:, None], columns], np.float32(0))
        with np.errstate(divide="ignore"):
            logit_open = np.where(inside, np.log(p_open / (np.float32(1) - p_open)), np.float32(0))
        digits = np.where(inside, query_alleles[rows[:, None], columns], MASKED)
        words = (digits * 3 ** np.arange(k)).sum(axis=-1)
        features = np.pad(site_features, ((0, -w % k), (0, 0))).reshape(-1, k * SITE_FEATURES)
        tokens = self.weights["word_embedding.weight"][words] + _linear(features, self.weights, "site_projection")[cols]
        evidence_open = np.where(inside[..., None], hmm_evidence[rows[:, None], columns], np.float32(0))
        hmm_in = np.concatenate([p_open[..., None], logit_open[..., None] / np.float32(10.0), evidence_open],
                                axis=-1).reshape(len(rows), (2 + EVIDENCE_FEATURES) * k)
        tokens = tokens + _linear(hmm_in, self.weights, "hmm_projection")
        head = _linear(self._attend(tokens, inducing), self.weights, "head").reshape(-1, k, 2)
        head *= np.float32(self.refinement_weight)
        logits = (1 + head[..., 0]) * logit_open + head[..., 1]
        with np.errstate(over="ignore"):
            corrected = np.float32(1.0) / (np.float32(1.0) + np.exp(-logits.astype(np.float32)))
        prob[np.broadcast_to(rows[:, None], columns.shape)[inside], columns[inside]] = corrected[inside]
        return prob

    def _attend(self, x: np.ndarray, inducing: np.ndarray) -> np.ndarray:
        """The predictor's attention block (`MultiheadAttentionBlock`): tokens (N, E) to the inducing points.

        As the module does at inference, the few keys and values of all heads are laid out as
        block-diagonal matrices (h*d, h*I) and (h*I, h*d), so that attention is two matrix
        products over the many tokens.
        """
        weights, name = self.weights, "predictor"
        query = _linear(_layer_norm(x, weights, name + ".norm_q"), weights, name + ".to_q")
        keys, values = np.split(_linear(_layer_norm(inducing, weights, name + ".norm_kv"), weights, name + ".to_kv"), 2,
                                axis=-1)
        h, width = self.n_heads, query.shape[-1]
        d, n_kv = width // h, keys.shape[0]
        head_of_key = np.repeat(np.arange(h), n_kv)
        block = (np.arange(width)[:, None] // d) == head_of_key[None, :]  # (h*d, h*I)
        key_block = np.where(block, np.tile(keys.T, (1, h)), 0).astype(np.float32) / np.float32(math.sqrt(d))
        value_block = np.where(block.T, np.tile(values, (h, 1)), 0).astype(np.float32)
        scores = (query @ key_block).reshape(-1, h, n_kv)
        top = scores[..., 0].copy()  # per-head maximum over the few keys, as elementwise steps
        for i in range(1, n_kv):
            np.maximum(top, scores[..., i], out=top)
        attn = np.exp(scores - top[..., None]).reshape(-1, h * n_kv)
        sums = attn @ (head_of_key[:, None] == head_of_key[None, :]).astype(np.float32)  # each head's sum
        attended = (attn / sums) @ value_block
        out = x + _linear(attended, weights, name + ".mix")
        hidden = gelu(_linear(_layer_norm(out, weights, name + ".norm_ff"), weights, name + f".{FEED_FORWARD[0]}"))
        return out + _linear(hidden, weights, name + f".{FEED_FORWARD[1]}")


@compiled
def _clip_tokens(hmm_prob, kmer, certain, prob, is_open, lo, hi):  # pragma: no cover - compiled
    # Rows [lo, hi) of `clip_tokens`; `certain` float32, as numpy compares a float32 array with CERTAIN.
    low, high, one = np.float32(1e-6), np.float32(1 - 1e-6), np.float32(1.0)
    n_sites = hmm_prob.shape[1]
    for q in range(lo, hi):
        for t in range(is_open.shape[1]):
            opened = False
            for j in range(t * kmer, min(n_sites, (t + 1) * kmer)):
                p = min(max(hmm_prob[q, j], low), high)
                prob[q, j] = p
                if min(p, one - p) > certain:
                    opened = True
            is_open[q, t] = opened


def clip_tokens(hmm_prob: np.ndarray, kmer: int, *, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The (Q, W) probabilities clipped as the module clips them before their logits, and (Q, ceil(W / kmer))
    whether each token is open: a site's probability farther than CERTAIN from 0 and 1 (padding sites beyond
    W count as 0)."""
    q, w = hmm_prob.shape
    prob = np.empty((q, w), dtype=np.float32)
    is_open = np.empty((q, -(-w // kmer)), dtype=np.bool_)
    run_parts(_clip_tokens, q, threads, np.asarray(hmm_prob, dtype=np.float32), kmer, np.float32(CERTAIN), prob, is_open)
    return prob, is_open


@compiled
def _gelu(x, out):  # pragma: no cover - compiled
    flat_in, flat_out = x.ravel(), out.ravel()
    for i in range(flat_in.size):
        v = flat_in[i]
        flat_out[i] = 0.5 * v * (1.0 + math.erf(v * 0.7071067811865476))


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU with the exact error function (torch.nn.GELU's default), float32; numpy has no erf."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x)
    _gelu(x, out)
    return out

