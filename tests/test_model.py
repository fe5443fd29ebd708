import pytest
import torch

from spinimpute.model.config import EVIDENCE_FEATURES, MASKED, SITE_FEATURES, ModelConfig
from spinimpute.model.network import MultiheadAttentionBlock, SpinImputer


def _inputs(n_ref=20, n_query=3, n_sites=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    ref = (torch.rand(n_ref, n_sites, generator=g) < 0.3).long()
    feats = torch.randn(n_sites, SITE_FEATURES, generator=g)
    query = torch.full((n_query, n_sites), MASKED)
    query[:, ::5] = ref[:n_query, ::5]
    hmm_prob = torch.rand(n_query, n_sites, generator=g)
    evidence = torch.rand(n_query, n_sites, EVIDENCE_FEATURES, generator=g)
    return ref, feats, query, hmm_prob, evidence


def test_attention_block_shapes_and_broadcast():
    block = MultiheadAttentionBlock(query_dim=8, kv_dim=12, out_dim=16, n_heads=4)
    assert block(torch.randn(5, 7, 8), torch.randn(1, 3, 12)).shape == (5, 7, 16)


@pytest.mark.parametrize("kmer", [1, 3, 4])
def test_encoder_and_predictor_shapes(kmer):
    net = SpinImputer(ModelConfig(embed_dim=8, n_latents=4, n_inducing=5, n_layers=2, n_heads=2, kmer=kmer))
    ref, feats, query, hmm_prob, evidence = _inputs()
    inducing = net.encode(ref, feats)
    assert inducing.shape == (5, 4 * 8)
    logits = net.predict(inducing=inducing, query_alleles=query, hmm_prob=hmm_prob, hmm_evidence=evidence, site_features=feats)
    assert logits.shape == query.shape


def test_untrained_predictor_is_the_copying_model():
    net = SpinImputer(ModelConfig(embed_dim=8, n_latents=4, n_inducing=4, n_heads=2))
    ref, feats, query, hmm_prob, evidence = _inputs()
    logits = net.predict(inducing=net.encode(ref, feats), query_alleles=query, hmm_prob=hmm_prob, hmm_evidence=evidence, site_features=feats)
    torch.testing.assert_close(torch.sigmoid(logits), hmm_prob.clamp(1e-6, 1 - 1e-6), atol=1e-5, rtol=1e-5)


def test_predictor_depends_on_inducing_points_after_training_signal():
    torch.manual_seed(0)
    net = SpinImputer(ModelConfig(embed_dim=8, n_latents=4, n_inducing=4, n_heads=2))
    torch.nn.init.normal_(net.head.weight, std=0.5)
    ref, feats, query, hmm_prob, evidence = _inputs()
    a = net.predict(inducing=net.encode(ref, feats), query_alleles=query, hmm_prob=hmm_prob, hmm_evidence=evidence, site_features=feats)
    b = net.predict(inducing=net.encode(1 - ref, feats), query_alleles=query, hmm_prob=hmm_prob, hmm_evidence=evidence, site_features=feats)
    assert not torch.allclose(a, b)


def test_all_parameters_receive_gradients():
    net = SpinImputer(ModelConfig(embed_dim=8, n_latents=4, n_inducing=4, n_heads=2))
    torch.nn.init.normal_(net.head.weight, std=0.1)
    ref, feats, query, hmm_prob, evidence = _inputs()
    logits = net.predict(inducing=net.encode(ref, feats), query_alleles=query, hmm_prob=hmm_prob, hmm_evidence=evidence, site_features=feats)
    logits.sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None and n not in ("log_ne", "logit_mismatch")]
    assert missing == []


def test_switch_rate_scales_with_panel_size():
    net = SpinImputer()
    assert net.switch_rate(1000).item() == pytest.approx(net.switch_rate(500).item() / 2)


def test_predictor_refines_only_tokens_the_copying_model_is_unsure_of(monkeypatch):
    torch.manual_seed(0)
    net = SpinImputer(ModelConfig(embed_dim=8, n_latents=4, n_inducing=4, n_heads=2, kmer=4))
    torch.nn.init.normal_(net.head.weight, std=0.5)
    ref, feats, query, hmm_prob, evidence = _inputs(n_sites=38)  # 10 tokens, the last one padded
    hmm_prob[:, :8] = 1e-5  # tokens 0 and 1 certain in every row
    hmm_prob[0, 12:16] = 1 - 1e-5  # token 3 certain in row 0
    inducing = net.encode(ref, feats)
    gated = net.predict(inducing=inducing, query_alleles=query, hmm_prob=hmm_prob, hmm_evidence=evidence, site_features=feats)
    monkeypatch.setattr("spinimpute.model.network.CERTAIN", -1.0)  # every token refined
    full = net.predict(inducing=inducing, query_alleles=query, hmm_prob=hmm_prob, hmm_evidence=evidence, site_features=feats)
    hmm_logit = torch.logit(hmm_prob.clamp(1e-6, 1 - 1e-6))
    certain = torch.zeros_like(hmm_prob, dtype=torch.bool)
    certain[:, :8] = True
    certain[0, 12:16] = True
    torch.testing.assert_close(gated[certain], hmm_logit[certain])
    torch.testing.assert_close(gated[~certain], full[~certain])
    assert not torch.allclose(full[certain], hmm_logit[certain])


def test_refinement_weight_scales_the_corrections():
    torch.manual_seed(0)
    net = SpinImputer(ModelConfig(embed_dim=8, n_latents=4, n_inducing=4, n_heads=2))
    torch.nn.init.normal_(net.head.weight, std=0.5)
    torch.nn.init.normal_(net.head.bias, std=0.5)
    ref, feats, query, hmm_prob, evidence = _inputs()
    inducing = net.encode(ref, feats)

    def logits(weight):
        net.refinement_weight = weight
        return net.predict(inducing=inducing, query_alleles=query, hmm_prob=hmm_prob, hmm_evidence=evidence, site_features=feats)

    copying, full, part = logits(0.0), logits(1.0), logits(0.25)
    torch.testing.assert_close(copying, torch.logit(hmm_prob.clamp(1e-6, 1 - 1e-6)))
    assert not torch.allclose(full, copying)
    torch.testing.assert_close(part, copying + 0.25 * (full - copying), atol=1e-5, rtol=1e-5)
