"""VCF round trips (property-based) and awkward but valid target inputs."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spinimpute.io.reading import read_panel, read_target
from spinimpute.target import MISSING
from spinimpute.tools.simulate import write_vcf


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 30), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_panel_vcf_round_trip(tmp_path_factory, n_sites, n_samples, seed):
    rng = np.random.default_rng(seed)
    positions = np.cumsum(rng.integers(1, 1000, size=n_sites))
    refs = list(rng.choice(list("ACGT"), size=n_sites))
    alts = ["ACGT"[("ACGT".index(r) + 1 + int(rng.integers(3))) % 4] for r in refs]
    haps = rng.integers(0, 2, size=(n_sites, 2 * n_samples)).astype(np.uint8)
    path = tmp_path_factory.mktemp("rt") / "p.vcf.gz"
    write_vcf(path, contig="chr7", positions=positions, refs=refs, alts=alts, haplotypes=haps,
              samples=[f"S{i}" for i in range(n_samples)])
    panel = read_panel(path)
    pc = panel.contigs["chr7"]
    assert panel.samples == [f"S{i}" for i in range(n_samples)]
    assert np.array_equal(pc.sites.positions, positions)
    assert pc.sites.refs == refs and pc.sites.alts == alts
    assert np.array_equal(pc.haplotypes, haps)


HEADER = ("##fileformat=VCFv4.2\n##contig=<ID=1>\n##contig=<ID=2>\n"
          '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
          "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tA\tB\n")


def test_several_contigs_multiallelics_and_missing(tmp_path):
    panel_path = tmp_path / "panel.vcf"
    panel_path.write_text(HEADER
                          + "1\t100\t.\tA\tG,T\t.\t.\t.\tGT\t0|1\t2|0\n"
                          + "1\t200\t.\tC\tT\t.\t.\t.\tGT\t0|1\t1|0\n"
                          + "2\t50\t.\tG\tA\t.\t.\t.\tGT\t1|1\t0|0\n")
    panel = read_panel(panel_path)
    assert list(panel.contigs) == ["1", "2"]
    assert panel.contigs["1"].sites.alts == ["G", "T", "T"]
    target_path = tmp_path / "target.vcf"
    target_path.write_text(HEADER
                           + "1\t100\t.\tA\tT,G\t.\t.\t.\tGT\t1|2\t.|0\n"  # multiallelic, ALT order differs
                           + "2\t50\t.\tG\tA\t.\t.\t.\tGT\t./.\t0|1\n")
    sites = {c: pc.sites for c, pc in panel.contigs.items()}
    target = read_target(target_path, sites)
    t1 = target.contigs["1"]
    assert t1.site_index.tolist() == [0, 1]  # 1:100 A>G and 1:100 A>T
    assert t1.alleles.tolist() == [[0, 1, MISSING, 0], [1, 0, MISSING, 0]]
    assert target.contigs["2"].alleles.tolist() == [[MISSING, MISSING, 0, 1]]


def test_missing_genotypes_are_imputed_like_untyped(trained_model, small_benchmark, tmp_path):
    """Blanking a sample's genotypes at typed sites gives the same dosages as not typing them for it."""
    import cyvcf2

    from spinimpute.jobs import impute_job

    src = cyvcf2.VCF(str(small_benchmark / "target.vcf.gz"))
    lines = [src.raw_header.rstrip("\n")]
    for k, rec in enumerate(src):
        gts = ["|".join(str(a) for a in g[:2]) for g in rec.genotypes]
        if k % 2 == 0:
            gts[0] = ".|."
        lines.append("\t".join([rec.CHROM, str(rec.POS), ".", rec.REF, rec.ALT[0], ".", ".", ".", "GT", *gts]))
    path = tmp_path / "missing.vcf"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o.vcf.gz"
    impute_job(target_path=path, model_path=trained_model, out_path=out, device="cpu", progress=False)
    recs = list(cyvcf2.VCF(str(out)))
    ds = np.stack([r.format("DS")[:, 0] for r in recs])
    assert np.isfinite(ds).all() and (ds >= 0).all() and (ds <= 2).all()
    typed = [r for r in recs if r.INFO.get("IMP") is None]  # sites used as typed (matched)
    blanked = {r.POS for k, r in enumerate(cyvcf2.VCF(str(small_benchmark / "target.vcf.gz"))) if k % 2 == 0}
    hit = [r for r in typed if r.POS in blanked]
    kept = [r for r in typed if r.POS not in blanked]
    assert hit and kept
    # The other samples keep their input genotypes everywhere typed; sample 0 keeps them where not blanked,
    # and is imputed (some fractional dosage) where blanked.
    assert set(np.unique(np.stack([r.format("DS")[1:, 0] for r in typed]))) <= {0.0, 1.0, 2.0}
    assert set(np.unique([r.format("DS")[0, 0] for r in kept])) <= {0.0, 1.0, 2.0}
    assert any(r.format("DS")[0, 0] not in (0.0, 1.0, 2.0) for r in hit)
