"""chrX: haploid males outside the pseudo-autosomal region, diploid inside it, in panel and target."""

import cyvcf2
import numpy as np

from spinimpute.tools.simulate import simulate_haplotypes


def _write_x(path, positions, refs, alts, haps, samples, male, par_end, keep=None):
    lines = ["##fileformat=VCFv4.2", "##contig=<ID=X>",
             '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
             "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples])]
    for i in keep if keep is not None else range(len(positions)):
        gts = []
        for s in range(len(samples)):
            a, b = haps[i, 2 * s], haps[i, 2 * s + 1]
            gts.append(f"{a}" if male[s] and positions[i] > par_end else f"{a}|{b}")
        lines.append("\t".join(["X", str(positions[i]), ".", refs[i], alts[i], ".", ".", ".", "GT", *gts]))
    path.write_text("\n".join(lines) + "\n")


def test_haploid_males_are_imputed_and_written_haploid(tmp_path):
    from spinimpute.jobs import impute_job, train_job
    from spinimpute.tools.evaluate import evaluate
    from spinimpute.training.trainer import TrainingOptions

    sim = simulate_haplotypes(n_individuals=110, length=200_000, seed=11)
    n_ref = 90
    ref_h = sim.haplotypes[:, : 2 * n_ref]
    poly = np.flatnonzero((ref_h.min(1) == 0) & (ref_h.max(1) == 1))
    pos = sim.positions[poly]
    refs, alts = [sim.refs[i] for i in poly], [sim.alts[i] for i in poly]
    haps = sim.haplotypes[poly]
    par_end = int(pos[len(pos) // 4])
    male = np.arange(110) % 2 == 0
    samples = [f"s{i}" for i in range(110)]
    _write_x(tmp_path / "ref.vcf", pos, refs, alts, haps[:, : 2 * n_ref], samples[:n_ref], male[:n_ref], par_end)
    maf = np.minimum(ref_h[poly].mean(1), 1 - ref_h[poly].mean(1))
    typed = np.flatnonzero(maf > 0.05)[::4]
    _write_x(tmp_path / "target.vcf", pos, refs, alts, haps[:, 2 * n_ref :], samples[n_ref:], male[n_ref:], par_end,
             keep=typed)
    _write_x(tmp_path / "truth.vcf", pos, refs, alts, haps[:, 2 * n_ref :], samples[n_ref:], male[n_ref:], par_end)
    model, out = tmp_path / "x.spin", tmp_path / "x.vcf.gz"
    train_job(ref_path=tmp_path / "ref.vcf", out_path=model, options=TrainingOptions(),
              window_sites=400, flank_sites=200, device="cpu", progress=False)
    impute_job(target_path=tmp_path / "target.vcf", model_path=model, out_path=out, device="cpu",
               progress=False)
    target_male = male[n_ref:]
    # Ploidy between typed sites follows the nearest typed site, so test beyond the last typed site of
    # the PAR and the first typed site outside it.
    typed_pos = pos[typed]
    first_outside = typed_pos[typed_pos > par_end][0]
    last_inside = typed_pos[typed_pos <= par_end][-1]
    n_haploid_records = 0
    for rec in cyvcf2.VCF(str(out)):
        gt = rec.genotype.array()
        ds = rec.format("DS")[:, 0]
        if rec.POS >= first_outside:  # outside the PAR: males haploid
            assert (gt[target_male, 1] == -2).all() and (ds[target_male] <= 1.0).all()
            assert (gt[~target_male, 1] >= 0).all()
            n_haploid_records += 1
        elif rec.POS <= last_inside:
            assert (gt[:, 1] >= 0).all()
    assert n_haploid_records > 100
    ev = evaluate(tmp_path / "truth.vcf", out, ref_path=tmp_path / "ref.vcf", target_path=tmp_path / "target.vcf")
    assert ev.overall["aggregate_r2"] > 0.8
