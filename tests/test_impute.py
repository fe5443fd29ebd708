import numpy as np
import pytest
import torch

from spinimpute.impute import site_statistics
from spinimpute.inference import CpuImputer
from spinimpute.modelfile import load_model
from spinimpute.phasing import phase_contig
from spinimpute.vcf import read_target


def dosage_r2(p, haploid=None):
    return site_statistics(p, haploid)[1]


def test_dosage_r2_matches_beagle_formula():
    p = np.array([[0.0, 1.0, 1.0, 1.0, 0.0, 0.0]])  # certain calls: r2 = 1
    assert dosage_r2(p)[0] == pytest.approx(1.0)
    flat = np.full((1, 6), 0.3)  # every sample the same dose: nothing explained
    assert dosage_r2(flat)[0] == pytest.approx(0.0)
    p = np.array([[0.9, 0.1, 0.2, 0.0, 0.8, 0.7]])
    dose = p.reshape(-1, 2).sum(1)
    expected_sq = (p.reshape(-1, 2).sum(1) + 2 * p.reshape(-1, 2).prod(1)).sum()
    mean_term = dose.sum() ** 2 / 3
    assert dosage_r2(p)[0] == pytest.approx(((dose**2).sum() - mean_term) / (expected_sq - mean_term))


def test_phasing_keeps_genotypes_and_recovers_most_phase(trained_model, small_benchmark, unphased_target):
    bundle = load_model(trained_model)
    sites = {n: c.sites for n, c in bundle.contigs.items()}
    phased = read_target(small_benchmark / "target.vcf.gz", sites)
    unphased = read_target(unphased_target, sites)
    tc = unphased.contigs["20"]
    assert tc.unphased.sum() == unphased.counts["unphased_het"] > 0
    model = CpuImputer.from_hyperparameters(bundle.weights, bundle.hyperparameters)
    result = phase_contig(model, bundle.contigs["20"], tc, threads=2)
    truth = phased.contigs["20"].alleles
    assert not result.unphased.any()
    assert np.array_equal(result.alleles.reshape(len(truth), -1, 2).sum(-1), truth.reshape(len(truth), -1, 2).sum(-1))
    # Fraction of heterozygotes whose phase matches the truth up to one orientation per sample:
    het = tc.unphased
    agree = result.alleles[:, 0::2] == truth[:, 0::2]
    per_sample = [max(agree[het[:, s], s].mean(), 1 - agree[het[:, s], s].mean()) for s in range(het.shape[1])
                  if het[:, s].sum() > 1]
    assert np.mean(per_sample) > 0.8
    # Switch errors between neighbouring heterozygotes (6 of 214 here; with 48 candidates in
    # the second pass: 8; the most likely paths alone: 10; the per-haplotype model before
    # them: 15; too few to rank the settings of `spinimpute.phasing`, see its constants).
    switches = sum(np.count_nonzero(np.diff(agree[het[:, s], s].astype(int))) for s in range(het.shape[1]))
    pairs = sum(max(0, int(het[:, s].sum()) - 1) for s in range(het.shape[1]))
    assert switches / pairs < 0.04


def test_allele_frequency_counts_ploidy():
    p = np.array([[1.0, 1.0, 0.0, 0.0]])  # sample 0 ALT (haploid), sample 1 REF (diploid)
    af, _ = site_statistics(p, np.array([[True, False]]))
    assert af[0] == pytest.approx(1 / 3)
    af, _ = site_statistics(p)
    assert af[0] == pytest.approx(0.5)


def test_model_imputes_targets_typed_at_another_density(trained_model, small_benchmark, tmp_path):
    """Training never sees the target's array: a target typed at half the sites still imputes well."""
    import cyvcf2

    from spinimpute.evaluate import evaluate
    from spinimpute.workflows import impute_job

    src = cyvcf2.VCF(str(small_benchmark / "target.vcf.gz"))
    lines = [src.raw_header.rstrip("\n")]
    for i, rec in enumerate(src):
        if i % 2 == 0:
            lines.append(str(rec).rstrip("\n"))
    sparse = tmp_path / "sparse.vcf"
    sparse.write_text("\n".join(lines) + "\n")
    results = {}
    for name, target in (("dense", small_benchmark / "target.vcf.gz"), ("sparse", sparse)):
        out = tmp_path / f"{name}.vcf.gz"
        impute_job(target_path=target, model_path=trained_model, out_path=out, device=torch.device("cpu"),
                   progress=False)
        ev = evaluate(small_benchmark / "truth.vcf.gz", out, ref_path=small_benchmark / "ref.vcf.gz",
                      target_path=target)
        results[name] = ev.overall["aggregate_r2"]
    assert results["sparse"] > 0.85, results
    assert results["sparse"] < results["dense"], results


def test_fewer_candidate_states_stay_close_to_the_whole_panel(trained_model, small_benchmark, tmp_path):
    from spinimpute.vcf import read_dosages
    from spinimpute.workflows import impute_job

    doses = {}
    for states in (1000, 150):
        out = tmp_path / f"k{states}.vcf.gz"
        impute_job(target_path=small_benchmark / "target.vcf.gz", model_path=trained_model, out_path=out,
                   device=torch.device("cpu"), progress=False, copying_states=states)
        doses[states] = np.stack(list(read_dosages(out)[1].values()))
    difference = np.abs(doses[1000] - doses[150])
    assert difference.mean() < 0.01 and np.quantile(difference, 0.999) < 0.5


def test_open_heterozygotes_take_the_likelier_order_relative_to_the_previous_one():
    from spinimpute.phasing import _chained_orientation

    # Heterozygotes at markers 0, 1, 2, 4 and 5 (3 is homozygous); 0 is phased, the rest open.
    alt_first = np.array([True, False, True, True, False, True])  # as written
    het = np.array([True, True, True, False, True, True])
    open_het = np.array([False, True, True, False, True, True])
    same = np.array([np.nan, 0.9, 0.2, np.nan, 0.6, np.nan])
    np.testing.assert_array_equal(_chained_orientation(alt_first, het, open_het, same),
                                  [True, True, False, True, False, True])  # 3 is not a het; 5 has no posterior
    # Without a phased heterozygote before it, the first open one keeps the written order.
    np.testing.assert_array_equal(_chained_orientation(alt_first, het, het, same), [True, True, False, True, False, True])
    np.testing.assert_array_equal(_chained_orientation(~alt_first, het, het, same), [False, False, True, False, True, False])
