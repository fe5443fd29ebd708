"""The SPIN imputation model: a pure nn.Module, no I/O.

A window of the genome is a table whose rows are haplotypes and whose columns are k-mer
tokens of consecutive SNPs. The dataset encoder (XABA, ABLA, XABD, as in SPIN) reads the
reference rows and summarises the whole panel into a few inducing points, which are
computed once per window and cached. The predictor combines two paths for each query
haplotype:

* the semi-parametric path, a Li-Stephens copying HMM over the reference haplotypes
  (`spinimpute.model.copying`), whose switch rate and mismatch rate are learned; it gives each
  site an ALT probability that already follows template switches along the window;
* the parametric path, SPIN's predictor: each token of the query row where the HMM is
  unsure of some site (its typed alleles, mask bits, the HMM's probabilities and the
  evidence behind them: how the templates copied at the flanking markers and the states
  carry each allele, and whether one template spans the site) cross-attends to the
  cached inducing points, and a head turns the result into a
  per-site scale and shift of the HMM's logit. Tokens the HMM is sure of keep its logits,
  which makes the predictor's cost follow the uncertain part of the panel, a few percent
  of the tokens, rather than every site of every query.

The head starts at zero, so an untrained model is exactly the HMM; training moves it
only where that lowers the loss on held-out panel haplotypes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from spinimpute.model import copying, copying_numpy
from spinimpute.model.config import CERTAIN, EVIDENCE_FEATURES, MASKED, SITE_FEATURES, ModelConfig


class MultiheadAttentionBlock(nn.Module):
    """Pre-norm attention block with a feed-forward layer (the MAB of SPIN).

    Unlike the official SPIN code, attention is scaled by the head width and the
    residual is the identity when query and output widths match.
    """

    def __init__(self, *, query_dim: int, kv_dim: int, out_dim: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if out_dim % n_heads:
            raise ValueError("out_dim must be a multiple of n_heads")
        self.n_heads = n_heads
        self.norm_q = nn.LayerNorm(query_dim)
        self.norm_kv = nn.LayerNorm(kv_dim)
        self.to_q = nn.Linear(query_dim, out_dim)
        self.to_kv = nn.Linear(kv_dim, 2 * out_dim)
        self.mix = nn.Linear(out_dim, out_dim)
        self.residual = nn.Identity() if query_dim == out_dim else nn.Linear(query_dim, out_dim)
        self.norm_ff = nn.LayerNorm(out_dim)
        # Its linear layers' names (config.FEED_FORWARD) are what model files store and the CPU backend reads.
        self.ff = nn.Sequential(
            nn.Linear(out_dim, 2 * out_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * out_dim, out_dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: (B, Nq, query_dim) queries; y: (B, Nkv, kv_dim) keys and values -> (B, Nq, out_dim).

        B broadcasts: y may have batch size 1 against a larger x.
        """
        b, nq, _ = x.shape
        h = self.n_heads
        q = self.to_q(self.norm_q(x))
        k, v = self.to_kv(self.norm_kv(y)).chunk(2, dim=-1)
        d = q.shape[-1] // h
        if y.shape[0] == 1 and y.shape[1] * h <= 64:
            out = self._attend_few(q, k[0], v[0], h)
        else:
            q = q.view(b, nq, h, d).transpose(1, 2)
            k = k.view(k.shape[0], -1, h, d).transpose(1, 2)
            v = v.view(v.shape[0], -1, h, d).transpose(1, 2)
            # torch's fused kernel, faster than the explicit product, softmax and product (BENCHMARKS.md, prepare time).
            out = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout.p if self.training else 0.0)
            out = out.transpose(1, 2).reshape(b, nq, h * d)
        out = self.residual(x) + self.dropout(self.mix(out))
        return out + self.ff(self.norm_ff(out))

    def _attend_few(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, h: int) -> torch.Tensor:
        """Attention of many queries (B, Nq, h*d) to a few shared keys and values (Nkv, h*d).

        The same arithmetic as the general path, laid out as two products with
        block-diagonal key and value matrices (h*d, h*Nkv) and (h*Nkv, h*d), which avoids
        transposing the large query tensor: the predictor's case, every query token
        attending to a window's few inducing points.
        """
        n_kv, width = k.shape
        d = width // h
        heads = torch.arange(width, device=k.device) // d  # head of each feature
        block = heads.unsqueeze(1) == torch.arange(h, device=k.device).repeat_interleave(n_kv).unsqueeze(0)
        keys = torch.where(block, k.T.repeat(1, h), 0.0) / math.sqrt(d)  # (h*d, h*Nkv)
        values = torch.where(block.T, v.repeat(h, 1), 0.0)  # (h*Nkv, h*d)
        scores = (q @ keys).unflatten(-1, (h, n_kv))
        if torch.is_grad_enabled():
            attn = torch.softmax(scores, dim=-1)
        else:  # in place: three times faster than torch.softmax over so short a last dimension
            attn = scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()
            attn = attn.div_(attn.sum(dim=-1, keepdim=True))
        return self.dropout(attn).flatten(-2) @ values


class SpinLayer(nn.Module):
    """One SPIN layer: XABA and ABLA per row, then XABD from inducing points to all rows."""

    def __init__(self, *, embed_dim: int, n_latents: int, n_heads: int, dropout: float):
        super().__init__()
        wide = n_latents * embed_dim
        self.xaba = MultiheadAttentionBlock(
            query_dim=embed_dim, kv_dim=embed_dim, out_dim=embed_dim, n_heads=n_heads, dropout=dropout
        )
        self.abla = MultiheadAttentionBlock(
            query_dim=embed_dim, kv_dim=embed_dim, out_dim=embed_dim, n_heads=n_heads, dropout=dropout
        )
        self.xabd = MultiheadAttentionBlock(query_dim=wide, kv_dim=wide, out_dim=wide, n_heads=n_heads, dropout=dropout)

    def forward(self, tokens, latents, inducing):
        """tokens (N, D, E), latents (N, F, E), inducing (1, I, F*E) -> updated latents, inducing."""
        latents = self.xaba(latents, tokens)
        latents = self.abla(latents, latents)
        inducing = self.xabd(inducing, latents.reshape(1, latents.shape[0], -1))
        return latents, inducing


class SpinImputer(nn.Module):
    """SPIN dataset encoder and predictor fused with a Li-Stephens retrieval path.

    Args:
        config: the hyperparameters (`ModelConfig`, whose defaults are the model's).
    """

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        embed_dim, n_latents, n_heads, kmer, dropout = (config.embed_dim, config.n_latents, config.n_heads, config.kmer,
                                                        config.dropout)
        self.kmer = kmer
        self.copying_states = config.copying_states
        self.refinement_weight = config.refinement_weight
        n_words = 3**kmer  # each SNP of a word is 0, 1 or masked
        self.word_embedding = nn.Embedding(n_words, embed_dim)
        self.site_projection = nn.Linear(kmer * SITE_FEATURES, embed_dim)
        self.latent_init = nn.Parameter(torch.randn(n_latents, embed_dim) * 0.02)
        self.inducing_init = nn.Parameter(nn.init.xavier_uniform_(torch.empty(config.n_inducing, n_latents * embed_dim)))
        self.layers = nn.ModuleList(
            SpinLayer(embed_dim=embed_dim, n_latents=n_latents, n_heads=n_heads, dropout=dropout)
            for _ in range(config.n_layers)
        )
        # Per site of a token: the copying model's probability, its logit and the evidence behind it.
        self.hmm_projection = nn.Linear((2 + EVIDENCE_FEATURES) * kmer, embed_dim)
        self.predictor = MultiheadAttentionBlock(
            query_dim=embed_dim, kv_dim=n_latents * embed_dim, out_dim=embed_dim, n_heads=n_heads, dropout=dropout
        )
        self.head = nn.Linear(embed_dim, 2 * kmer)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.log_ne = nn.Parameter(torch.tensor(math.log(config.ne)))
        self.logit_mismatch = nn.Parameter(torch.tensor(math.log(config.mismatch / (1 - config.mismatch))))

    # ---------------------------------------------------------------- helpers
    def switch_rate(self, n_reference: int) -> torch.Tensor:
        """Template switch rate per cM for a panel of n_reference haplotypes."""
        return 0.04 * torch.exp(self.log_ne) / n_reference

    def mismatch(self) -> torch.Tensor:
        return torch.sigmoid(self.logit_mismatch)

    def _pad(self, x: torch.Tensor, value: float) -> torch.Tensor:
        """Pad the last dimension to a multiple of kmer."""
        extra = (-x.shape[-1]) % self.kmer
        if extra == 0:
            return x
        return nn.functional.pad(x, (0, extra), value=value)

    def _words(self, alleles: torch.Tensor) -> torch.Tensor:
        """(N, W) long alleles 0/1/MASKED -> (N, D) word index of each k-mer token."""
        a = self._pad(alleles, MASKED)
        digits = a.view(a.shape[0], -1, self.kmer)
        return (digits * 3 ** torch.arange(self.kmer, device=a.device)).sum(-1)

    def _token_sites(self, site_features: torch.Tensor) -> torch.Tensor:
        """(W, SITE_FEATURES) -> (D, E) the site part of each token's embedding."""
        feats = self._pad(site_features.T, 0.0).T
        return self.site_projection(feats.reshape(-1, self.kmer * SITE_FEATURES))

    def embed(self, alleles: torch.Tensor, site_features: torch.Tensor) -> torch.Tensor:
        """Token embeddings of rows.

        Args:
            alleles: (N, W) long, 0/1 or MASKED, W sites of the window.
            site_features: (W, SITE_FEATURES) float.

        Returns:
            (N, D, E) with D = ceil(W / kmer).
        """
        return self.word_embedding(self._words(alleles)) + self._token_sites(site_features)

    # ---------------------------------------------------------------- encoder
    def encode(self, ref_alleles: torch.Tensor, site_features: torch.Tensor) -> torch.Tensor:
        """Dataset encoder over the reference rows of a window.

        Args:
            ref_alleles: (R, W) long 0/1 reference haplotypes.
            site_features: (W, SITE_FEATURES).

        Returns:
            inducing points (I, F*E), the window's summary of the panel.
        """
        tokens = self.embed(ref_alleles, site_features)
        latents = self.latent_init.expand(tokens.shape[0], -1, -1)
        inducing = self.inducing_init.unsqueeze(0)
        for layer in self.layers:
            latents, inducing = layer(tokens, latents, inducing)
        return inducing.squeeze(0)

    # ---------------------------------------------------------------- predictor
    def predict(
        self,
        *,
        inducing: torch.Tensor,
        query_alleles: torch.Tensor,
        hmm_prob: torch.Tensor,
        hmm_evidence: torch.Tensor,
        site_features: torch.Tensor,
    ) -> torch.Tensor:
        """ALT logits for query haplotypes.

        Args:
            inducing: (I, F*E) cached inducing points of the window.
            query_alleles: (Q, W) long, typed alleles 0/1, MASKED elsewhere.
            hmm_prob: (Q, W) ALT probabilities from the copying model.
            hmm_evidence: (Q, W, EVIDENCE_FEATURES) the evidence behind them (`copy_probabilities`).
            site_features: (W, SITE_FEATURES).

        Returns:
            (Q, W) logits: the HMM's own logits in tokens where every site's probability
            is within CERTAIN of 0 or 1, refined by the predictor in the others, its
            corrections scaled by `refinement_weight`.
        """
        q, w = query_alleles.shape
        p = hmm_prob.clamp(1e-6, 1 - 1e-6)
        hmm_logit = torch.logit(p)
        # Padding sites count as certain (probability 0), so they never open a token.
        p_tokens = self._pad(p, 0.0).view(q, -1, self.kmer)
        logit_tokens = self._pad(hmm_logit, 0.0).view(q, -1, self.kmer)
        rows, cols = (torch.minimum(p_tokens, 1 - p_tokens) > CERTAIN).any(dim=-1).nonzero(as_tuple=True)
        tokens = self.word_embedding(self._words(query_alleles)[rows, cols]) + self._token_sites(site_features)[cols]
        p_open, logit_open = p_tokens[rows, cols], logit_tokens[rows, cols]  # (N, kmer) each
        evidence = self._pad(hmm_evidence.transpose(1, 2), 0.0).view(q, EVIDENCE_FEATURES, -1, self.kmer)
        evidence_open = evidence[rows, :, cols].transpose(1, 2)  # (N, kmer, EVIDENCE_FEATURES)
        hmm_in = torch.cat([p_open.unsqueeze(-1), logit_open.unsqueeze(-1) / 10.0, evidence_open], dim=-1)
        tokens = tokens + self.hmm_projection(hmm_in.flatten(1))
        attended = self.predictor(tokens.unsqueeze(0), inducing.unsqueeze(0)).squeeze(0)
        # float32 again after a bfloat16 autocast region, to be written into the HMM's logits
        scale, shift = (self.refinement_weight * self.head(attended).float()).view(-1, self.kmer, 2).unbind(-1)
        logits = logit_tokens.index_put((rows, cols), (1.0 + scale) * logit_open + shift)
        return logits.view(q, -1)[:, :w]

    def copy_probabilities(
        self,
        *,
        ref_typed: torch.Tensor,
        query_typed: torch.Tensor,
        observed: torch.Tensor,
        marker_cm: torch.Tensor,
        ref_sites: torch.Tensor | None,
        site_cm: torch.Tensor,
        groups: copying.SiteGroups | None = None,
        candidates: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The semi-parametric path: Li-Stephens posterior ALT probabilities (Q, J) and the evidence
        behind them (Q, J, EVIDENCE_FEATURES), which `predict` reads.

        Shapes as in `spinimpute.model.copying.impute_sites`; `groups` may be shared by batches, and
        with them and at least one typed marker, `ref_sites` is not read (may be None).
        The switch rate follows the whole panel's size, the states are at most
        `copying_states` candidates per query: `candidates` (Q, K) where the caller chose them
        (`copying.select_candidates`), else chosen here.
        """
        if ref_typed.shape[1] == 0:
            if ref_sites is None:
                raise ValueError("without typed markers the copying model needs ref_sites")
            prob, evidence = copying_numpy.frequency_posteriors(ref_sites.float().mean(dim=0).cpu().numpy(),
                                                                query_typed.shape[0], ref_sites.shape[0])
            return (torch.tensor(prob, device=ref_sites.device), torch.tensor(evidence, device=ref_sites.device))
        n_ref = ref_typed.shape[0]
        if candidates is None and n_ref > self.copying_states:
            candidates = copying.select_candidates(ref_typed, query_typed, observed, self.copying_states)
        return copying.impute_sites(
            ref_typed,
            query_typed,
            observed,
            marker_cm,
            ref_sites,
            site_cm,
            self.switch_rate(n_ref),
            self.mismatch(),
            candidates=candidates,
            groups=groups,
        )
