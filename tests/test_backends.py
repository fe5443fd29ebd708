"""The CPU backend (`spinimpute.engine.cpu`, no torch) equals the torch module it is read from."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from spinimpute.engine.cpu import CpuImputer
from spinimpute.engine.torch_backend import TorchImputer, network_from_weights
from spinimpute.model import copying, copying_numpy
from spinimpute.model.config import EVIDENCE_FEATURES, MASKED, SITE_FEATURES, ModelConfig
from spinimpute.model.network import SpinImputer


def _network(kmer=4, seed=0):
    torch.manual_seed(seed)
    net = SpinImputer(ModelConfig(embed_dim=8, n_latents=4, n_inducing=4, n_heads=2, kmer=kmer, copying_states=12))
    torch.nn.init.normal_(net.head.weight, std=0.5)  # a trained head, not the zero of a new model
    torch.nn.init.normal_(net.head.bias, std=0.5)
    with torch.no_grad():
        net.log_ne += 0.3
        net.logit_mismatch -= 0.5
    return net.eval()


def _cpu(net: SpinImputer) -> CpuImputer:
    weights = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    return CpuImputer(weights, net.config.replace(refinement_weight=net.refinement_weight))


@pytest.mark.parametrize("kmer,certain,weight,untrained", [
    (4, None, 1.0, False), (3, -1.0, 1.0, False), (1, None, 1.0, False), (4, -1.0, 0.3, False),
    (4, -1.0, 0.0, False), (4, -1.0, 1.0, True),  # corrections of zero: the attention is skipped
])
def test_predictor_equals_the_module(kmer, certain, weight, untrained, monkeypatch):
    net = _network(kmer)
    net.refinement_weight = weight
    if untrained:
        torch.nn.init.zeros_(net.head.weight)
        torch.nn.init.zeros_(net.head.bias)
    g = torch.Generator().manual_seed(1)
    n_query, n_sites = 5, 38
    ref = (torch.rand(30, n_sites, generator=g) < 0.3).long()
    features = torch.randn(n_sites, SITE_FEATURES, generator=g)
    query = torch.full((n_query, n_sites), MASKED)
    query[:, ::5] = ref[:n_query, ::5]
    hmm_prob = torch.rand(n_query, n_sites, generator=g)
    hmm_prob[:, :8] = 1e-5  # certain tokens keep the copying model's logits
    evidence = torch.rand(n_query, n_sites, EVIDENCE_FEATURES, generator=g)
    if certain is not None:  # every token refined
        monkeypatch.setattr("spinimpute.model.network.CERTAIN", certain)
        monkeypatch.setattr("spinimpute.engine.cpu.CERTAIN", certain)
    with torch.no_grad():
        inducing = net.encode(ref, features)
        want = net.predict(inducing=inducing, query_alleles=query, hmm_prob=hmm_prob, hmm_evidence=evidence,
                           site_features=features)
    cpu = _cpu(net)
    assert cpu.corrects == (weight != 0 and not untrained)
    got = cpu.predict(inducing=inducing.numpy(), query_alleles=query.numpy(), hmm_prob=hmm_prob.numpy(),
                      hmm_evidence=evidence.numpy(), site_features=features.numpy())
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, torch.sigmoid(want).numpy(), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("n_ref", [10, 40])  # all rows as states, and 12 candidates of 40
def test_copying_model_equals_the_torch_hmm(n_ref):
    net = _network()
    g = torch.Generator().manual_seed(2)
    n_sites, n_typed = 90, 20
    ref = (torch.rand(n_ref, n_sites, generator=g) < 0.3).float()
    ref[n_ref // 2 :] = ref[: n_ref - n_ref // 2]
    site_cm = torch.sort(torch.rand(n_sites, generator=g) * 0.5).values
    typed = torch.sort(torch.randperm(n_sites, generator=g)[:n_typed]).values
    query = (torch.rand(6, n_typed, generator=g) < 0.3).float()
    observed = torch.rand(6, n_typed, generator=g) < 0.9
    marker_cm = site_cm[typed]
    # The torch HMM itself (differentiable, as training runs it), not its CPU shortcut to `copying_numpy`.
    args = {"ref_typed": ref[:, typed], "query_typed": query, "observed": observed, "marker_cm": marker_cm,
            "ref_sites": ref, "site_cm": site_cm}
    with torch.enable_grad():
        net.log_ne.requires_grad_(True)
        assert not copying.runs_compiled(args["ref_typed"], net.switch_rate(n_ref))
        want, want_evidence = (t.detach() for t in net.copy_probabilities(**args))
    markers = ref[:, typed].T.to(torch.uint8).numpy()
    kernel_query = torch.where(observed, query, -1.0).to(torch.int8).numpy()
    groups = copying_numpy.group_packed_sites(np.packbits(ref.T.to(torch.uint8).numpy(), axis=1), n_ref,
                                              copying_numpy.interval_bounds(marker_cm.numpy(), site_cm.numpy()), markers)
    # The engine chooses the states for the CPU backend (`spinimpute.engine.impute`); the module chooses its own.
    candidates = (copying_numpy.select_candidates(markers, kernel_query, net.copying_states)
                  if n_ref > net.copying_states else None)
    got, evidence = _cpu(net).copy_probabilities(markers=markers, query=kernel_query, candidates=candidates,
                                                 marker_cm=marker_cm.numpy(), site_cm=site_cm.numpy(), groups=groups)
    np.testing.assert_allclose(got, want.numpy(), atol=2e-5)
    np.testing.assert_allclose(evidence, want_evidence.numpy(), atol=2e-5)


def test_engine_gives_the_same_dosages_through_torch_and_without(trained_model, small_benchmark, tmp_path):
    import cyvcf2

    from spinimpute.jobs import impute_job

    dosages = {}
    for device in ("cpu", "torch"):
        out = tmp_path / f"{device}.vcf.gz"
        if device == "torch":  # the torch module on the CPU, as a GPU run uses it
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr("spinimpute.jobs.CpuImputer",
                              lambda weights, config, threads: _torch_imputer(weights, config))
                impute_job(target_path=small_benchmark / "target.vcf.gz", model_path=trained_model, out_path=out,
                           progress=False)
        else:
            impute_job(target_path=small_benchmark / "target.vcf.gz", model_path=trained_model, out_path=out,
                       progress=False)
        dosages[device] = np.stack([r.format("DS")[:, 0] for r in cyvcf2.VCF(str(out))])
    assert np.abs(dosages["cpu"] - dosages["torch"]).max() <= 0.011  # DS has two decimals


def _torch_imputer(weights, config):
    return TorchImputer(network_from_weights(weights, config), "cpu")


@pytest.mark.parametrize("phased", [True, False])
def test_cpu_imputation_does_not_import_torch(trained_model, small_benchmark, unphased_target, tmp_path, phased):
    target = small_benchmark / "target.vcf.gz" if phased else unphased_target  # phasing runs without torch too
    code = (
        "import sys\n"
        "from spinimpute.cli import main\n"
        "try:\n"
        f"    main(['-q', 'impute', '--target', {str(target)!r}, '--model', "
        f"{str(trained_model)!r}, '--out', {str(tmp_path / 'o.vcf.gz')!r}, '--device', 'cpu'])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    assert (tmp_path / "o.vcf.gz").exists()


def test_mixed_precision_predictor_gives_nearly_the_same_dosages(trained_model, small_benchmark, tmp_path):
    import cyvcf2

    from spinimpute.jobs import impute_job

    dosages = {}
    for precision in ("float32", "mixed"):  # mixed: bfloat16 autocast of the predictor, here on the CPU
        out = tmp_path / f"{precision}.vcf.gz"
        impute_job(target_path=small_benchmark / "target.vcf.gz", model_path=trained_model, out_path=out,
                   progress=False, precision=precision)
        dosages[precision] = np.stack([r.format("DS")[:, 0] for r in cyvcf2.VCF(str(out))])
    difference = np.abs(dosages["float32"] - dosages["mixed"])
    assert difference.max() <= 0.05 and difference.mean() <= 1e-3
