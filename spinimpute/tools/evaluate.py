"""Accuracy of imputed dosages against true genotypes.

Aggregate dosage r² is the squared Pearson correlation of DS with the true ALT count,
pooled over every (site, sample) pair of a frequency bin; mean per-site r² averages the
per-site values where both variances are non-zero. Pooled r² flatters rare bins, so
both are reported.

Where the imputed file has them, two calibration measures: the expected calibration
error of FORMAT/GP, and how well the per-site INFO/DR2 (Beagle, spinimpute) or R2
(Minimac4) estimate tracks the true per-site r².
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinimpute.errors import InputFileError
from spinimpute.io.atomic import atomic_output
from spinimpute.io.reading import declared_fields, open_vcf, read_dosages, read_panel, read_site_keys, records

MAF_BINS = [(0.0, 0.005), (0.005, 0.01), (0.01, 0.05), (0.05, 0.2), (0.2, 0.5)]
# Finer bins for the r²-against-MAF curve of `plot_r2`.
CURVE_EDGES = [0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5]


def bin_label(lo: float, hi: float) -> str:
    return f"({lo * 100:g},{hi * 100:g}%]"


def _normalise(key):
    chrom, pos, ref, alt = key
    return (chrom.removeprefix("chr"), pos, ref, alt)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN with fewer than two values or a constant input."""
    if len(x) < 2:
        return float("nan")
    x = x - x.mean()
    y = y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else float("nan")


def _pearson_r2(x: np.ndarray, y: np.ndarray) -> float:
    return _pearson(x, y) ** 2


def _per_site_r2(ds: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(n_sites,) r² of each row; NaN where either row is constant."""
    x = ds - ds.mean(axis=1, keepdims=True)
    y = truth - truth.mean(axis=1, keepdims=True)
    den = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, ((x * y).sum(axis=1) / den) ** 2, np.nan)


def expected_calibration_error(gp: np.ndarray, truth: np.ndarray, *, n_bins: int = 10) -> float:
    """Expected calibration error (ECE) of genotype probabilities.

    A call's confidence is the probability of its most likely genotype, and the call is
    correct when that genotype is the true one. Calls fall into `n_bins` equal-width
    confidence bins on [0, 1]; ECE = sum over bins of (n_b / N) |accuracy_b - confidence_b|,
    0 for perfectly calibrated probabilities.

    Args:
        gp: (..., 3) probabilities of 0, 1 and 2 ALT alleles.
        truth: (...) true ALT counts.

    Returns:
        the ECE over calls with complete GP and truth; NaN when there are none.
    """
    gp = np.asarray(gp, dtype=np.float64).reshape(-1, 3)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    complete = ~np.isnan(gp).any(axis=1) & ~np.isnan(truth)
    if not complete.any():
        return float("nan")
    gp, truth = gp[complete], truth[complete]
    confidence = gp.max(axis=1)
    correct = gp.argmax(axis=1) == truth
    bins = np.clip((confidence * n_bins).astype(np.int64), 0, n_bins - 1)
    # n_b |acc_b - conf_b| is |sum over the bin of (correct - confidence)|
    gap = np.bincount(bins, weights=correct - confidence, minlength=n_bins)
    return float(np.abs(gap).sum() / len(confidence))


def _read_calibration_fields(path, keys: list, sample_idx: np.ndarray, threads: int):
    """FORMAT/GP and the INFO r² estimate of some records of an imputed file.

    Args:
        keys: (contig, pos, ref, alt) of the records wanted, as written in the file.
        sample_idx: (n_samples,) columns of the file to keep, in order.

    Returns:
        gp: (len(keys), n_samples, 3) float32 in `keys` order (NaN where absent), or None
            when the header has no FORMAT/GP;
        r2: (len(keys),) float64, or None when the header has neither INFO/DR2 nor INFO/R2;
        the name of the INFO field read, or None.
    """
    vcf = open_vcf(path, threads)
    declared = declared_fields(vcf)
    has_gp = ("FORMAT", "GP") in declared
    r2_field = next((f for f in ("DR2", "R2") if ("INFO", f) in declared), None)
    gp = np.full((len(keys), len(sample_idx), 3), np.nan, dtype=np.float32) if has_gp else None
    r2 = np.full(len(keys), np.nan) if r2_field else None
    if has_gp or r2_field:
        row_of = {k: i for i, k in enumerate(keys)}
        for rec in records(path, vcf):
            if len(rec.ALT) != 1:
                continue
            i = row_of.get((rec.CHROM, rec.POS, rec.REF, rec.ALT[0]))
            if i is None:
                continue
            if gp is not None:
                values = rec.format("GP")
                if values is not None and values.shape[1] == 3:
                    gp[i] = values[sample_idx]
            if r2 is not None and r2_field:
                value = rec.INFO.get(r2_field)
                if value is not None:
                    r2[i] = float(np.atleast_1d(value)[0])
    vcf.close()
    return gp, r2, r2_field


@dataclass
class Evaluation:
    bins: list[dict]
    overall: dict
    n_untyped_sites: int
    n_typed_sites: int
    n_sites_missing: int
    n_samples: int
    maf_source: str
    switch_error_rate: float | None = None
    curve: list[dict] | None = None
    # GP expected calibration error over untyped sites of MAF (0, 5%]; None without GP.
    ece_rare: float | None = None
    # Correlation of the INFO r² estimate with the true per-site r²; None without one.
    dr2_correlation: float | None = None
    dr2_field: str | None = None

    def as_dict(self) -> dict:
        return {
            "bins": self.bins,
            "overall": self.overall,
            "n_untyped_sites": self.n_untyped_sites,
            "n_typed_sites": self.n_typed_sites,
            "n_sites_missing": self.n_sites_missing,
            "n_samples": self.n_samples,
            "maf_source": self.maf_source,
            "switch_error_rate": self.switch_error_rate,
            "curve": self.curve,
            "ece_rare": self.ece_rare,
            "dr2_correlation": self.dr2_correlation,
            "dr2_field": self.dr2_field,
        }

    def table(self) -> str:
        lines = ["bin\tn_sites\taggregate_r2\tmean_site_r2\tconcordance\tgp_ece"]
        for b in [*self.bins, self.overall]:
            ece = "NA" if b["ece"] is None else f"{b['ece']:.4f}"
            lines.append(
                f"{b['bin']}\t{b['n_sites']}\t{b['aggregate_r2']:.4f}\t{b['mean_site_r2']:.4f}\t{b['concordance']:.4f}"
                f"\t{ece}"
            )
        lines.append(
            f"# untyped sites {self.n_untyped_sites}, typed sites {self.n_typed_sites}, "
            f"truth sites missing from the imputed file {self.n_sites_missing}, samples {self.n_samples}, "
            f"MAF from {self.maf_source}"
        )
        if self.switch_error_rate is not None:
            lines.append(f"# switch error rate at typed heterozygous sites: {self.switch_error_rate:.4f}")
        if self.ece_rare is not None:
            lines.append(f"# GP expected calibration error at MAF (0,5%]: {self.ece_rare:.4f}")
        if self.dr2_correlation is not None:
            lines.append(f"# correlation of INFO/{self.dr2_field} with the true per-site r²: {self.dr2_correlation:.4f}")
        return "\n".join(lines)


def dosage_stats(label: str, ds: np.ndarray, truth: np.ndarray, gp: np.ndarray | None) -> dict:
    """Accuracy of (n_sites, n_samples) dosages against true ALT counts; `gp` (n_sites, n_samples, 3) or None."""
    site_r2 = _per_site_r2(ds, truth) if len(ds) else np.zeros(0)
    defined = site_r2[~np.isnan(site_r2)]
    return {
        "bin": label,
        "n_sites": len(ds),
        "aggregate_r2": _pearson_r2(ds.ravel(), truth.ravel()) if len(ds) else float("nan"),
        "mean_site_r2": float(defined.mean()) if len(defined) else float("nan"),
        "n_sites_r2_defined": len(defined),
        "concordance": float((np.rint(ds) == truth).mean()) if len(ds) else float("nan"),
        "ece": None if gp is None else expected_calibration_error(gp, truth),
    }


def _phased_haplotypes(path, keys, samples, threads) -> dict:
    """(n_samples, 2) alleles per key, NaN-free only where the record is a phased biallelic call."""
    vcf = open_vcf(path, threads)
    out: dict = {}
    if ("FORMAT", "GT") not in declared_fields(vcf):
        return out  # a dosage-only file carries no phase
    order = [list(vcf.samples).index(s) for s in samples]
    for rec in records(path, vcf):
        if len(rec.ALT) != 1:
            continue
        key = _normalise((rec.CHROM, rec.POS, rec.REF, rec.ALT[0]))
        if key in keys:
            gt = rec.genotype.array()[order]
            out[key] = np.where(gt[:, 2:3].astype(bool), gt[:, :2], -1)
    vcf.close()
    return out


def switch_error_rate(truth_path, imputed_path, typed_keys: set, samples: list[str], threads: int = 1) -> float:
    """Switch errors per pair of consecutive heterozygous sites (typed sites, both files phased)."""
    truth = _phased_haplotypes(truth_path, typed_keys, samples, threads)
    imputed = _phased_haplotypes(imputed_path, typed_keys, samples, threads)
    keys = sorted(set(truth) & set(imputed))
    if not keys:
        return float("nan")
    t = np.stack([truth[k] for k in keys])  # (n_sites, n_samples, 2)
    i = np.stack([imputed[k] for k in keys])
    het = (t[..., 0] != t[..., 1]) & (t >= 0).all(-1) & (i[..., 0] != i[..., 1]) & (i >= 0).all(-1)
    switches = pairs = 0
    for s in range(t.shape[1]):
        rows = np.flatnonzero(het[:, s])
        if len(rows) < 2:
            continue
        same = t[rows, s, 0] == i[rows, s, 0]
        switches += int((same[1:] != same[:-1]).sum())
        pairs += len(rows) - 1
    return switches / pairs if pairs else float("nan")


@dataclass
class ScoredSites:
    """The untyped sites that `evaluate` scores, as arrays, rows in the truth file's order.

    Attributes:
        ds: (n_sites, n_samples) imputed DS.
        truth: (n_sites, n_samples) true ALT counts.
        maf: (n_sites,) minor allele frequency (panel or truth, `maf_source`).
        gp: (n_sites, n_samples, 3) FORMAT/GP, or None without it.
        r2_estimate: (n_sites,) INFO/DR2 or INFO/R2 (`r2_field`), or None without either.
        samples: the samples in common, in the truth file's order.
        typed_keys: normalised keys of the target's sites when a target was given, else None.
        n_typed, n_missing: truth sites skipped as typed, and absent from the imputed file.
        maf_source: "reference panel" or "truth".
    """

    ds: np.ndarray
    truth: np.ndarray
    maf: np.ndarray
    gp: np.ndarray | None
    r2_estimate: np.ndarray | None
    r2_field: str | None
    samples: list[str]
    typed_keys: set | None
    n_typed: int
    n_missing: int
    maf_source: str


def scored_sites(truth_path, imputed_path, *, ref_path=None, target_path=None, threads: int = 1) -> ScoredSites:
    """The untyped sites of an imputed file with their true genotypes (see `evaluate`)."""
    truth_samples, truth, _ = read_dosages(truth_path, field="GT", threads=threads)
    imp_samples, imputed, flags = read_dosages(imputed_path, field="DS", threads=threads)
    common = [s for s in truth_samples if s in set(imp_samples)]
    if not common:
        raise InputFileError(imputed_path, "no sample in common with the truth file")
    t_idx = np.array([truth_samples.index(s) for s in common])
    i_pos = {s: i for i, s in enumerate(imp_samples)}
    i_idx = np.array([i_pos[s] for s in common])

    imputed_norm = {_normalise(k): k for k in imputed}
    typed_keys = None
    if target_path is not None:
        typed_keys = {_normalise(k) for k in read_site_keys(target_path, threads=threads)}
    maf_lookup = None
    if ref_path is not None:
        panel = read_panel(ref_path, threads=threads)
        maf_lookup = {}
        for pc in panel.contigs.values():
            freq = pc.alt_freq
            for i in range(len(pc.sites)):
                key = _normalise((pc.sites.contig, int(pc.sites.positions[i]), pc.sites.refs[i], pc.sites.alts[i]))
                maf_lookup[key] = min(freq[i], 1 - freq[i])

    ds_rows, truth_rows, mafs, row_keys = [], [], [], []
    n_missing = n_typed = 0
    for key, tvals in truth.items():
        nk = _normalise(key)
        ikey = imputed_norm.get(nk)
        if ikey is None:
            n_missing += 1
            continue
        if typed_keys is not None:
            is_typed = nk in typed_keys
        else:
            f = flags[ikey]
            is_typed = not ("IMP" in f or ("IMPUTED" in f and "TYPED" not in f))
        if is_typed:
            n_typed += 1
            continue
        t = tvals[t_idx]
        if maf_lookup is not None:
            if nk not in maf_lookup:
                continue
            maf = maf_lookup[nk]
        else:
            af = np.nanmean(t) / 2
            maf = min(af, 1 - af)
        ds_rows.append(imputed[ikey][i_idx])
        truth_rows.append(t)
        mafs.append(maf)
        row_keys.append(ikey)
    ds = np.asarray(ds_rows, dtype=np.float64).reshape(-1, len(common))
    tr = np.asarray(truth_rows, dtype=np.float64).reshape(-1, len(common))
    maf_array = np.asarray(mafs)
    keep = np.asarray(~np.isnan(tr).any(axis=1) & ~np.isnan(ds).any(axis=1))
    row_keys = [k for k, kept in zip(row_keys, keep.tolist()) if kept]
    gp, r2_estimate, r2_field = _read_calibration_fields(imputed_path, row_keys, i_idx, threads)
    return ScoredSites(ds=ds[keep], truth=tr[keep], maf=maf_array[keep], gp=gp, r2_estimate=r2_estimate,
                       r2_field=r2_field, samples=common, typed_keys=typed_keys, n_typed=n_typed,
                       n_missing=n_missing, maf_source="reference panel" if ref_path is not None else "truth")


def evaluate(truth_path, imputed_path, *, ref_path=None, target_path=None, threads: int = 1) -> Evaluation:
    """Compare imputed DS (and GP, INFO DR2 or R2 where present) with true genotypes over the untyped sites.

    Typed sites are the target file's sites when `target_path` is given, otherwise those
    the imputed file does not flag as imputed (INFO IMP, or Minimac4's IMPUTED without
    TYPED). Minor allele frequencies come from the reference panel when `ref_path` is
    given, otherwise from the truth.
    """
    sites = scored_sites(truth_path, imputed_path, ref_path=ref_path, target_path=target_path, threads=threads)
    ds, tr, mafs, gp, dr2 = sites.ds, sites.truth, sites.maf, sites.gp, sites.r2_estimate

    def stats(label, m):
        return dosage_stats(label, ds[m], tr[m], None if gp is None else gp[m])

    poly = mafs > 0
    if not poly.any():
        raise InputFileError(imputed_path, f"no untyped polymorphic site in common with the truth file {truth_path}")
    bins = [stats(bin_label(lo, hi), (mafs > lo) & (mafs <= hi)) for lo, hi in MAF_BINS]
    overall = stats("overall", poly)
    curve = []
    for lo, hi in itertools.pairwise(CURVE_EDGES):
        m = (mafs > lo) & (mafs <= hi)
        if m.any():
            curve.append({"maf_low": lo, "maf_high": hi, "mean_maf": float(mafs[m].mean()),
                          **stats(bin_label(lo, hi), m)})
    rare = poly & (mafs <= 0.05)
    ece_rare = None if gp is None else expected_calibration_error(gp[rare], tr[rare])
    dr2_correlation = None
    if dr2 is not None:
        site_r2 = _per_site_r2(ds[poly], tr[poly])
        defined = ~np.isnan(site_r2) & ~np.isnan(dr2[poly])
        dr2_correlation = _pearson(dr2[poly][defined], site_r2[defined])
    ser = None
    if sites.typed_keys is not None:
        ser = switch_error_rate(truth_path, imputed_path, sites.typed_keys, sites.samples, threads)
    return Evaluation(
        ece_rare=ece_rare,
        dr2_correlation=dr2_correlation,
        dr2_field=sites.r2_field,
        curve=curve,
        switch_error_rate=ser,
        bins=bins,
        overall=overall,
        n_untyped_sites=int(poly.sum()),
        n_typed_sites=sites.n_typed,
        n_sites_missing=sites.n_missing,
        n_samples=len(sites.samples),
        maf_source=sites.maf_source,
    )


def file_label(path) -> str:
    """A file's name without its VCF suffix, as plots and JSON name it by default."""
    name = Path(path).name
    for suffix in (".vcf.gz", ".vcf.bgz", ".vcf", ".bcf"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def plot_r2(results: dict[str, Evaluation], path) -> None:
    """The table's r² by MAF bin, one line per imputed file: aggregate and mean per-site r², and, for
    several files, each one's aggregate r² minus the first's (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)
    first = results[labels[0]]
    x = np.arange(len(first.bins))
    ticks = [f"{b['bin']}\n{b['n_sites']:,} sites" for b in first.bins]
    panels = [("aggregate_r2", "aggregate dosage r²"), ("mean_site_r2", "mean per-site dosage r²")]
    fig, axes = plt.subplots(1, 3 if len(labels) > 1 else 2, figsize=(14 if len(labels) > 1 else 9.5, 4), dpi=120)
    for ax, (key, title) in zip(axes, panels):
        for i, label in enumerate(labels):
            ax.plot(x, [b[key] for b in results[label].bins], marker="o", color=f"C{i}", label=label)
        ax.set_title(title, fontsize=10)
    if len(labels) > 1:
        ax = axes[2]
        for i, label in enumerate(labels[1:], start=1):
            difference = [b["aggregate_r2"] - f["aggregate_r2"] for b, f in zip(results[label].bins, first.bins)]
            ax.plot(x, difference, marker="o", color=f"C{i}", label=label)
        ax.axhline(0.0, color="C0", linewidth=1)
        ax.set_title(f"aggregate r² minus {labels[0]}'s", fontsize=10)
    for ax in axes:
        ax.set_xticks(x, ticks, fontsize=7)
        ax.set_xlabel("minor allele frequency bin")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{first.n_untyped_sites:,} untyped sites (typed sites are not scored), {first.n_samples} samples; "
                 f"MAF from the {first.maf_source}", fontsize=9)
    fig.tight_layout()
    with atomic_output(path, index=False) as tmp:  # the temporary name has no suffix to tell the format
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".").lower())
    plt.close(fig)
