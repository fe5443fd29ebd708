import numpy as np
import pytest
import torch

from spinimpute.impute import phase_contig, site_statistics
from spinimpute.modelfile import load_model
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


def test_phasing_keeps_genotypes_and_recovers_most_phase(trained_model, small_benchmark, tmp_path):
    import cyvcf2

    bundle = load_model(trained_model)
    sites = {n: c.sites for n, c in bundle.contigs.items()}
    phased = read_target(small_benchmark / "target.vcf.gz", sites)
    # Unphase the target: write '/' and put the ALT allele second at every heterozygote.
    src = cyvcf2.VCF(str(small_benchmark / "target.vcf.gz"))
    lines = [src.raw_header.rstrip("\n")]
    for rec in src:
        gts = ["/".join(map(str, sorted(g[:2]))) for g in rec.genotypes]
        lines.append("\t".join([rec.CHROM, str(rec.POS), ".", rec.REF, rec.ALT[0], ".", ".", ".", "GT", *gts]))
    path = tmp_path / "unphased.vcf"
    path.write_text("\n".join(lines) + "\n")
    unphased = read_target(path, sites)
    tc = unphased.contigs["20"]
    assert tc.unphased.sum() == unphased.counts["unphased_het"] > 0
    result = phase_contig(bundle.network, bundle.contigs["20"], tc, device=torch.device("cpu"))
    truth = phased.contigs["20"].alleles
    assert not result.unphased.any()
    assert np.array_equal(result.alleles.reshape(len(truth), -1, 2).sum(-1), truth.reshape(len(truth), -1, 2).sum(-1))
    # Fraction of heterozygotes whose phase matches the truth up to one orientation per sample:
    het = tc.unphased
    agree = result.alleles[:, 0::2] == truth[:, 0::2]
    per_sample = [max(agree[het[:, s], s].mean(), 1 - agree[het[:, s], s].mean()) for s in range(het.shape[1])
                  if het[:, s].sum() > 1]
    assert np.mean(per_sample) > 0.8


def test_allele_frequency_counts_ploidy():
    p = np.array([[1.0, 1.0, 0.0, 0.0]])  # sample 0 ALT (haploid), sample 1 REF (diploid)
    af, _ = site_statistics(p, np.array([[True, False]]))
    assert af[0] == pytest.approx(1 / 3)
    af, _ = site_statistics(p)
    assert af[0] == pytest.approx(0.5)
