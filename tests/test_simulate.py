"""Each scenario option of make_benchmark does what it says, and nothing else."""

import gzip
import json

import numpy as np
import pytest

from spinimpute.io.genmap import read_genetic_map
from spinimpute.io.reading import read_panel
from spinimpute.tools.simulate import SCENARIOS, hotspot_rate_map, make_benchmark

SMALL = {"n_ref": 40, "n_target": 10, "length": 200_000, "seed": 5}


def _text(path) -> str:
    with gzip.open(path, "rt") as f:
        return f.read()


def _haplotypes(path) -> np.ndarray:
    """(n_sites, n_haplotypes) ALT indicators of a phased VCF with one contig."""
    (contig,) = read_panel(path).contigs.values()
    return contig.haplotypes.astype(np.int64)


def _genotypes(haplotypes: np.ndarray) -> np.ndarray:
    return haplotypes[:, 0::2] + haplotypes[:, 1::2]


def _map_rows(path) -> np.ndarray:
    """(n_rows, 2) bp and cM of a PLINK map."""
    rows = [line.split() for line in path.read_text().splitlines()]
    assert all(len(r) == 4 and r[1] == "." for r in rows)
    return np.array([(float(r[3]), float(r[2])) for r in rows])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The small data set without any scenario option."""
    out = tmp_path_factory.mktemp("base")
    make_benchmark(out, typed_fraction=0.05, **SMALL)
    return out


def test_uniform_map_and_options_recorded(base):
    rows = _map_rows(base / "map.txt")
    assert rows.tolist() == [[1, 0.0], [SMALL["length"] + 1, 0.2]]  # 1 cM/Mb over 200 kb
    summary = json.loads((base / "summary.json").read_text())
    assert summary["n_hotspots"] == 0 and summary["contig"] == "20"
    assert summary["options"] == {**SMALL, "typed_fraction": 0.05, "sites_per_mb": None, "contig": "20",
                                  "demography": "ooa_ceu", "hotspots": False, "panel_switch_rate": 0.0,
                                  "panel_error_rate": 0.0, "target_error_rate": 0.0}


def test_hotspot_map_is_monotone_and_the_one_simulated(tmp_path):
    length = 600_000
    summary = make_benchmark(tmp_path, **{**SMALL, "length": length}, typed_fraction=0.05, hotspots=True)
    rows = _map_rows(tmp_path / "map.txt")
    n = summary["n_hotspots"]
    assert n >= 5 and len(rows) == 2 * n + 2  # one hotspot every 50-100 kb: start, hotspots' edges, end
    assert np.all(np.diff(rows[:, 0]) > 0) and np.all(np.diff(rows[:, 1]) > 0)
    assert rows[-1, 1] == pytest.approx(length * 1e-8 * 100, rel=1e-6)  # mean 1 cM/Mb
    widths, cm = np.diff(rows[:, 0]), np.diff(rows[:, 1])
    hot = np.arange(len(widths)) % 2 == 1
    assert np.all(widths[hot] == 2_000)
    assert cm[hot].sum() / cm.sum() == pytest.approx(0.8)  # hotspots carry 80 % of the map
    assert np.all((np.diff(rows[1:-1:2, 0]) >= 52_000) & (np.diff(rows[1:-1:2, 0]) <= 102_000))
    # the map written is the rate map simulated (msprime coordinate x is VCF position x + 1)
    rate_map = hotspot_rate_map(length=length, seed=SMALL["seed"])
    assert np.allclose(rows[:, 1], 100 * rate_map.get_cumulative_mass(rows[:, 0] - 1), atol=1e-8)
    genetic_map = read_genetic_map(tmp_path / "map.txt")
    assert np.allclose(genetic_map.cm["20"], rows[:, 1])


def test_panel_errors_change_only_the_panel(base, tmp_path):
    switched = tmp_path / "switched"
    summary = make_benchmark(switched, typed_fraction=0.05, **SMALL, panel_switch_rate=0.05)
    for name in ("truth.vcf.gz", "target.vcf.gz"):
        assert _text(switched / name) == _text(base / name)
    true_panel, panel = _haplotypes(base / "ref.vcf.gz"), _haplotypes(switched / "ref.vcf.gz")
    assert np.array_equal(_genotypes(panel), _genotypes(true_panel))  # switches keep genotypes
    n_het = int((_genotypes(true_panel) == 1).sum())
    assert summary["panel_switches"] == pytest.approx(0.05 * n_het, rel=0.25)
    assert not np.array_equal(panel, true_panel)

    wrong = tmp_path / "wrong"
    summary = make_benchmark(wrong, typed_fraction=0.05, **SMALL, panel_error_rate=0.02)
    for name in ("truth.vcf.gz", "target.vcf.gz"):
        assert _text(wrong / name) == _text(base / name)
    changed = _genotypes(_haplotypes(wrong / "ref.vcf.gz")) != _genotypes(true_panel)
    assert changed.sum() == summary["panel_genotype_errors"]
    assert changed.mean() == pytest.approx(0.02, rel=0.25)


def test_target_errors_change_only_typed_target_genotypes(base, tmp_path):
    summary = make_benchmark(tmp_path, typed_fraction=0.05, **SMALL, target_error_rate=0.05)
    for name in ("ref.vcf.gz", "truth.vcf.gz"):
        assert _text(tmp_path / name) == _text(base / name)
    (truth,) = read_panel(tmp_path / "truth.vcf.gz").contigs.values()
    (target,) = read_panel(tmp_path / "target.vcf.gz").contigs.values()
    (clean_target,) = read_panel(base / "target.vcf.gz").contigs.values()
    assert np.array_equal(target.sites.positions, clean_target.sites.positions)
    typed = np.searchsorted(truth.sites.positions, target.sites.positions)
    changed = _genotypes(target.haplotypes.astype(np.int64)) != _genotypes(truth.haplotypes[typed].astype(np.int64))
    assert changed.sum() == summary["target_genotype_errors"] > 0
    assert changed.mean() == pytest.approx(0.05, rel=0.5)


def test_sites_per_mb_sets_array_density(tmp_path):
    summary = make_benchmark(tmp_path, **{**SMALL, "length": 500_000}, sites_per_mb=200)
    (target,) = read_panel(tmp_path / "target.vcf.gz").contigs.values()
    assert len(target.sites.positions) == summary["n_sites_typed"] == 100
    assert summary["typed_sites_per_mb"] == 200
    assert np.median(np.diff(target.sites.positions)) == pytest.approx(5_000, rel=0.3)  # spread evenly
    for density in ({}, {"typed_fraction": 0.05, "sites_per_mb": 200}):
        with pytest.raises(ValueError, match="exactly one"):
            make_benchmark(tmp_path, **SMALL, **density)


def test_chr_prefixed_contig_everywhere(tmp_path):
    make_benchmark(tmp_path, typed_fraction=0.05, **SMALL, contig="chr20")
    for name in ("ref.vcf.gz", "target.vcf.gz", "truth.vcf.gz"):
        text = _text(tmp_path / name)
        assert "##contig=<ID=chr20," in text
        records = [line for line in text.splitlines() if not line.startswith("#")]
        assert records and all(line.startswith("chr20\t") for line in records)
    assert {line.split()[0] for line in (tmp_path / "map.txt").read_text().splitlines()} == {"chr20"}


def test_demographies(tmp_path):
    ceu = make_benchmark(tmp_path / "ceu", typed_fraction=0.05, **SMALL)
    yri = make_benchmark(tmp_path / "yri", typed_fraction=0.05, **SMALL, demography="ooa_yri")
    founder = make_benchmark(tmp_path / "founder", typed_fraction=0.05, **SMALL, demography="bottleneck")
    assert "YRI" in yri["model"] and "bottleneck" in founder["model"]
    assert yri["n_sites_ref"] > ceu["n_sites_ref"]  # Africans are the more diverse
    with pytest.raises(ValueError, match="unknown demography"):
        make_benchmark(tmp_path, typed_fraction=0.05, **SMALL, demography="ooa_xyz")


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenarios_make_data(name, tmp_path):
    options = {**SCENARIOS[name], "n_ref": 20, "n_target": 5, "length": 150_000}
    summary = make_benchmark(tmp_path, seed=2, **options)
    assert summary["options"] == {**summary["options"], **options}
    assert summary["n_sites_typed"] > 0
