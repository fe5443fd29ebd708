import numpy as np
import pytest

from spinimpute.engine.cpu import CpuImputer
from spinimpute.engine.phasing import phase_contig, sample_keys
from spinimpute.engine.statistics import site_statistics
from spinimpute.io.modelfile import load_model
from spinimpute.io.reading import read_target


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
    model = CpuImputer(bundle.weights, bundle.config)
    result = phase_contig(model, bundle.contigs["20"], tc, sample_keys=sample_keys(unphased.samples), threads=2)
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
    # them: 15; too few to rank the settings of `spinimpute.engine.phasing`, see its constants).
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

    from spinimpute.jobs import impute_job
    from spinimpute.tools.evaluate import evaluate

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
        impute_job(target_path=target, model_path=trained_model, out_path=out, device="cpu",
                   progress=False)
        ev = evaluate(small_benchmark / "truth.vcf.gz", out, ref_path=small_benchmark / "ref.vcf.gz",
                      target_path=target)
        results[name] = ev.overall["aggregate_r2"]
    assert results["sparse"] > 0.85, results
    assert results["sparse"] < results["dense"], results


def test_fewer_candidate_states_stay_close_to_the_whole_panel(trained_model, small_benchmark, tmp_path):
    from spinimpute.io.reading import read_dosages
    from spinimpute.jobs import impute_job

    doses = {}
    for states in (1000, 150):
        out = tmp_path / f"k{states}.vcf.gz"
        impute_job(target_path=small_benchmark / "target.vcf.gz", model_path=trained_model, out_path=out,
                   device="cpu", progress=False, copying_states=states)
        doses[states] = np.stack(list(read_dosages(out)[1].values()))
    difference = np.abs(doses[1000] - doses[150])
    assert difference.mean() < 0.01 and np.quantile(difference, 0.999) < 0.5


def test_open_heterozygotes_take_the_likelier_order_relative_to_the_previous_one():
    from spinimpute.engine.phasing import _chained_orientation

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


def test_drawn_phasings_switch_at_uncertain_heterozygotes_only():
    from spinimpute.engine.phasing import _other_order_probability, phase_switches

    het = np.array([True, True, False, True, True, True])
    open_het = np.array([True, True, False, True, True, False])
    same = np.array([np.nan, 0.9, np.nan, 0.5, 1.0, 0.3])
    # The first heterozygote has no previous one; 5 was decided before (not open).
    np.testing.assert_allclose(_other_order_probability(het, open_het, same), [0, 0.1, 0, 0.5, 0, 0])
    other = np.zeros((6, 2))
    other[1, 0], other[3, 1] = 0.1, 0.5
    positions, samples, keys = np.arange(100, 700, 100), np.array([4, 7]), sample_keys(["S4", "S7"])
    switches = phase_switches(other, 10, positions, samples, keys, 400, seed=1)
    assert set(map(tuple, switches[:, :2])) <= {(11, 4), (13, 7)}
    counts = {key: np.sum((switches[:, 0] == key[0]) & (switches[:, 1] == key[1])) for key in ((11, 4), (13, 7))}
    assert 20 <= counts[(11, 4)] <= 65 and 160 <= counts[(13, 7)] <= 240  # 40 and 200 expected
    # The draws depend on the seed, the sites' positions and the samples' keys only, not on where a
    # window starts or where a sample stands in the file.
    again = phase_switches(other[1:], 11, positions[1:], samples, keys, 400, seed=1)
    np.testing.assert_array_equal(again, switches)
    moved = phase_switches(other, 10, positions, samples + 3, keys, 400, seed=1)
    np.testing.assert_array_equal(moved[:, [0, 2]], switches[:, [0, 2]])
    assert not np.array_equal(phase_switches(other, 10, positions, samples, keys, 400, seed=2), switches)
    assert len(phase_switches(other, 10, positions, samples, keys, 4, seed=-7)) <= 8  # any --seed will do


def test_draw_flips_hold_the_slot_order_from_each_switch_on():
    from spinimpute.target import TargetContig

    n_sites, n_samples = 6, 2
    switches = np.array([[1, 0, 0], [2, 1, 1], [4, 0, 0]])  # (site, sample, draw), sorted by site
    tc = TargetContig(np.arange(n_sites), np.zeros((n_sites, 2 * n_samples), np.int8),
                      np.zeros((n_sites, n_samples), bool), np.zeros((n_sites, n_samples), bool),
                      n_draws=2, draw_switches=switches)
    flips = tc.draw_flips(0, n_sites)
    np.testing.assert_array_equal(flips[0, :, 0], [0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(flips[1, :, 1], [0, 0, 1, 1, 1, 1])
    assert not flips[0, :, 1].any() and not flips[1, :, 0].any()
    np.testing.assert_array_equal(tc.draw_flips(3, 5), flips[:, 3:5])  # switches before the range count


def test_averaged_phasings_keep_the_mean_dose_and_genotype_probabilities():
    from spinimpute.engine.impute import _mixture_slots

    rng = np.random.default_rng(3)
    phasings = rng.random((5, 7, 8)).astype(np.float32)  # (phasing, site, haplotype)
    phasings[:, 0, :2] = [[1, 0], [1, 0], [1, 0], [1, 0], [1, 0]]  # a typed heterozygote stays one
    phasings[:, 1, :2] = [[0.9, 0.1]] * 3 + [[0.1, 0.9]] * 2  # two phasings swap this sample's haplotypes
    both = (phasings[..., 0::2] * phasings[..., 1::2]).sum(0)
    out = _mixture_slots(phasings.sum(0), both, 5)
    dose = out[:, 0::2] + out[:, 1::2]
    np.testing.assert_allclose(dose, (phasings[..., 0::2] + phasings[..., 1::2]).mean(0), atol=1e-5)
    np.testing.assert_array_equal(out[0, :2], [1, 0])
    np.testing.assert_allclose(out[1, :2], [0.9, 0.1], atol=1e-5)  # het either way: P(both ALT) stays 0.09
    representable = dose**2 >= 4 * both / 5
    np.testing.assert_allclose((out[:, 0::2] * out[:, 1::2])[representable], (both / 5)[representable], atol=1e-5)


def test_unphased_targets_are_imputed_over_drawn_phasings(trained_model, small_benchmark, unphased_target, tmp_path):
    from spinimpute.io.reading import read_dosages
    from spinimpute.jobs import impute_job
    from spinimpute.tools.evaluate import evaluate

    results, doses = {}, {}
    for draws in (0, 4):
        out = tmp_path / f"d{draws}.vcf.gz"
        summary = impute_job(target_path=unphased_target, model_path=trained_model, out_path=out, device="cpu",
                             progress=False, phase_draws=draws, threads=2)
        assert summary.phase_draws == draws
        results[draws] = evaluate(small_benchmark / "truth.vcf.gz", out, ref_path=small_benchmark / "ref.vcf.gz",
                                  target_path=small_benchmark / "target.vcf.gz")
        doses[draws] = read_dosages(out)[1]
    # The most likely phase is written either way (same switch errors); the doses differ.
    assert results[0].switch_error_rate == results[4].switch_error_rate
    assert any(not np.allclose(doses[0][k], doses[4][k]) for k in doses[0])
    assert results[4].overall["aggregate_r2"] > results[0].overall["aggregate_r2"] - 0.002
    assert results[4].overall["aggregate_r2"] > 0.9


@pytest.mark.parametrize("phased", [True, False])
def test_a_large_cohort_gets_the_same_records_through_a_temporary_file(trained_model, small_benchmark,
                                                                       unphased_target, tmp_path, monkeypatch, phased):
    """Groups of windows do not depend on the cohort: results beyond GROUP_RESULT_BYTES go to a temporary
    file a batch at a time and come back in pieces, and every record is the one an in-memory run writes."""
    import gzip
    import tempfile

    from spinimpute.engine import impute
    from spinimpute.jobs import impute_job

    contig = load_model(trained_model).contigs["20"]
    assert len(contig.windows) > 1
    assert impute.window_groups(contig, None) == [list(range(len(contig.windows)))]
    target = small_benchmark / "target.vcf.gz" if phased else unphased_target
    opened, temporary = [], tempfile.TemporaryFile

    def temporary_file(*args, **kwargs):
        if kwargs.get("prefix") == "spinimpute-":  # the engine's (numba's compiler opens some of its own)
            opened.append(kwargs.get("dir"))
        return temporary(*args, **kwargs)

    monkeypatch.setattr(impute.tempfile, "TemporaryFile", temporary_file)
    records = {}
    for name, result_bytes, piece_bytes in (("memory", impute.GROUP_RESULT_BYTES, impute.SPILL_PIECE_BYTES),
                                            ("file", 4 * 40 * 150, 4 * 40 * 7)):  # 40 haplotypes: 7-site pieces
        monkeypatch.setattr(impute, "GROUP_RESULT_BYTES", result_bytes)
        monkeypatch.setattr(impute, "SPILL_PIECE_BYTES", piece_bytes)
        monkeypatch.setattr(impute, "query_batch_size", lambda *args, **kwargs: 6)  # three samples a batch
        out = tmp_path / f"{name}.vcf.gz"
        impute_job(target_path=target, model_path=trained_model, out_path=out, device="cpu", progress=False,
                   threads=2)
        with gzip.open(out, "rt") as lines:
            records[name] = [line for line in lines if not line.startswith("#")]
        assert len(opened) == (0 if name == "memory" else 1)
    assert len(records["file"]) > 300 and records["file"] == records["memory"]


@pytest.mark.parametrize("phased", [True, False])
def test_states_chosen_a_span_at_a_time_give_the_same_records(trained_model, small_benchmark, unphased_target,
                                                              tmp_path, monkeypatch, phased):
    """The engine chooses copying states for spans of target haplotypes; where the spans fall changes nothing."""
    import gzip

    from spinimpute.engine import impute
    from spinimpute.jobs import impute_job

    target = small_benchmark / "target.vcf.gz" if phased else unphased_target
    monkeypatch.setattr(impute, "query_batch_size", lambda *args, **kwargs: 6)  # three samples a batch
    records = {}
    whole = impute.SELECTION_HAPLOTYPES
    for span in (whole, 12):  # all 40 target haplotypes at once; spans of 12
        monkeypatch.setattr(impute, "SELECTION_HAPLOTYPES", span)
        out = tmp_path / f"span{span}.vcf.gz"
        # 40 states of the panel's 300 haplotypes: each target haplotype's PBWT pool of 80 is ranked.
        impute_job(target_path=target, model_path=trained_model, out_path=out, device="cpu", progress=False,
                   threads=2, copying_states=40)
        with gzip.open(out, "rt") as lines:
            records[span] = [line for line in lines if not line.startswith("#")]
    assert len(records[12]) > 300 and records[12] == records[whole]
