import gzip
import os

import cyvcf2
import numpy as np
import pytest

from spinimpute.errors import InputFileError
from spinimpute.io.atomic import atomic_output
from spinimpute.io.genotype_text import format_genotype_block, format_genotype_rows, record_text
from spinimpute.io.reading import read_panel, read_target
from spinimpute.io.writing import ImputedVcfWriter
from spinimpute.target import MISSING

HEADER = """##fileformat=VCFv4.2
##contig=<ID=20>
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tA\tB
"""


def _write(tmp_path, body, name="x.vcf", header=HEADER):
    path = tmp_path / name
    path.write_text(header + body)
    return path


def test_panel_round_trip_with_multiallelic_split(tmp_path):
    path = _write(
        tmp_path,
        "20\t100\trs1\tA\tG\t.\tPASS\t.\tGT\t0|1\t1|1\n"
        "20\t200\trs2\tC\tT,G\t.\tPASS\t.\tGT\t0|2\t1|0\n",
    )
    panel = read_panel(path)
    pc = panel.contigs["20"]
    assert panel.samples == ["A", "B"]
    assert list(pc.sites.positions) == [100, 200, 200]
    assert pc.sites.alts == ["G", "T", "G"]
    assert pc.haplotypes.tolist() == [[0, 1, 1, 1], [0, 0, 1, 0], [0, 1, 0, 0]]
    assert pc.alt_count.tolist() == [3, 1, 1] and pc.packed.shape == (3, 1)  # kept bit-packed as read


@pytest.mark.parametrize(
    "body,problem",
    [
        ("20\t200\t.\tA\tG\t.\t.\t.\tGT\t0|1\t1|1\n20\t100\t.\tA\tG\t.\t.\t.\tGT\t0|1\t1|1\n", "not sorted"),
        ("20\t100\t.\tA\tG\t.\t.\t.\tGT\t0/1\t1|1\n", "unphased"),
        ("20\t100\t.\tA\tG\t.\t.\t.\tGT\t.|1\t1|1\n", "missing"),
        ("20\t100\t.\tA\tG\t.\t.\t.\tGT\t0|1|1\t1|1|0\n", "ploidy"),
    ],
)
def test_panel_errors_name_file_and_problem(tmp_path, body, problem):
    path = _write(tmp_path, body)
    with pytest.raises(InputFileError) as err:
        read_panel(path)
    assert problem in str(err.value) and str(path) in str(err.value)


def test_duplicate_samples_and_missing_file(tmp_path):
    path = _write(tmp_path, "20\t100\t.\tA\tG\t.\t.\t.\tGT\t0|1\t1|1\n", header=HEADER.replace("\tB\n", "\tA\n"))
    with pytest.raises(InputFileError, match="duplicate sample"):
        read_panel(path)
    with pytest.raises(InputFileError, match="not found"):
        read_panel(tmp_path / "absent.vcf.gz")


def test_not_a_vcf(tmp_path):
    path = tmp_path / "junk.vcf.gz"
    with gzip.open(path, "wt") as f:
        f.write("hello\nworld\n")
    with pytest.raises(InputFileError):
        read_panel(path)


def test_target_matching_flips_swapped_alleles_and_renames_contigs(tmp_path):
    panel = read_panel(_write(tmp_path, "20\t100\t.\tA\tG\t.\t.\t.\tGT\t0|1\t1|1\n20\t300\t.\tC\tT\t.\t.\t.\tGT\t0|0\t0|1\n"))
    target_header = HEADER.replace("ID=20", "ID=chr20")
    target = read_target(
        _write(
            tmp_path,
            "chr20\t100\t.\tG\tA\t.\t.\t.\tGT\t0|1\t.|1\n"
            "chr20\t200\t.\tA\tC\t.\t.\t.\tGT\t0|1\t1|1\n"
            "chr20\t300\t.\tC\tT\t.\t.\t.\tGT\t1|0\t0|0\n",
            name="t.vcf",
            header=target_header,
        ),
        {"20": panel.contigs["20"].sites},
    )
    tc = target.contigs["20"]
    assert tc.site_index.tolist() == [0, 1]
    assert tc.alleles.tolist() == [[1, 0, MISSING, 0], [1, 0, 0, 0]]
    assert target.counts["swapped"] == 1 and target.counts["not_in_panel"] == 1
    assert target.counts["renamed_contigs"] == ["chr20->20"]


def test_a_typed_allele_the_panel_lacks_is_missing_not_ref(tmp_path):
    # The panel has A>C at 100 and both ALTs of A>C,G at 300; the target's A>C,G at 100 carries a G
    # that the panel lacks: its calls say nothing of C, so they are missing there, as '.' is.
    panel = read_panel(_write(tmp_path, "20\t100\t.\tA\tC\t.\t.\t.\tGT\t0|1\t1|1\n"
                                        "20\t300\t.\tA\tC,G\t.\t.\t.\tGT\t0|1\t2|1\n"))
    header = HEADER.replace("\tA\tB\n", "\tA\tB\tC\tD\n")
    target = read_target(_write(tmp_path, "20\t100\t.\tA\tC,G\t.\t.\t.\tGT\t0/2\t2|1\t.|1\t1|1\n"
                                          "20\t300\t.\tA\tC,G\t.\t.\t.\tGT\t0/2\t2|1\t.|1\t1|1\n",
                                name="t.vcf", header=header),
                         {"20": panel.contigs["20"].sites})
    alleles = target.contigs["20"].alleles
    assert alleles[0].tolist() == [0, MISSING, MISSING, 1, MISSING, 1, 1, 1]  # '2|1' reads as '.|1'
    assert alleles[1].tolist() == [0, 0, 0, 1, MISSING, 1, 1, 1]  # the panel has G here: 'not C'
    assert alleles[2].tolist() == [0, 1, 1, 0, MISSING, 0, 0, 0]
    assert target.counts["absent_allele_calls"] == 2 and target.counts["allele_mismatch"] == 1
    assert target.counts["unphased_het"] == 1  # only 0/2 at 300, where both alleles are known


def test_genotype_block_formatting():
    probs = np.array([[0.0, 1.0, 0.25, 0.5], [1.0, 1.0, 0.0, 0.0]])
    fields = format_genotype_block(probs)
    assert fields[0, 0] == "0|1:1:0,1,0"
    assert fields[0, 1] == "0|1:0.75:0.38,0.5,0.12" or fields[0, 1].startswith("0|1:0.75:")
    assert fields[1, 0] == "1|1:2:0,0,1"
    no_gp = format_genotype_block(probs, gp=False)
    assert no_gp[0, 0] == "0|1:1" and no_gp[0, 1] == "0|1:0.75" and no_gp[1, 0] == "1|1:2"
    haploid = np.array([[True, False], [False, False]])
    assert format_genotype_block(probs, haploid, gp=False)[0, 0] == "1:0.5"
    assert format_genotype_block(probs, haploid)[0, 0] == "1:0.5:0.5,0.5"
    for gp in (True, False):  # the compiled rows hold the same text
        rows = format_genotype_rows(probs.astype(np.float32), gp=gp)
        assert rows == [("\t" + "\t".join(r)).encode() for r in format_genotype_block(probs, gp=gp)]


@pytest.mark.parametrize("gp", [True, False])
def test_record_text_is_the_prefix_and_the_fields_of_each_site(gp):
    rng = np.random.default_rng(4)
    n_sites, n_samples = 40, 23
    probs = (rng.random((n_sites, 2 * n_samples)) < 0.3).astype(np.float32)
    unsure = rng.random(probs.shape) < 0.3  # the rest certain, written from the four certain fields
    probs[unsure] = rng.random(unsure.sum()).astype(np.float32)
    probs[rng.random(probs.shape) < 0.05] = np.float32(0.995)  # near 1, its DS and GP not those of 1
    probs[0] = 0.0  # a whole row certain, and one of no certain call
    probs[1] = 0.5
    prefixes = [bytes(rng.integers(65, 91, size=rng.integers(0, 12)).astype(np.uint8)) for _ in range(n_sites)]
    text, ends = record_text(probs, np.frombuffer(b"".join(prefixes), np.uint8),
                             np.cumsum([len(p) for p in prefixes]).astype(np.int64), gp=gp)
    fields = format_genotype_block(probs, gp=gp)
    want = b"".join(p + ("\t" + "\t".join(row) + "\n").encode() for p, row in zip(prefixes, fields))
    assert text.tobytes() == want
    assert ends.tolist() == np.cumsum([len(p) + len(("\t" + "\t".join(row) + "\n").encode())
                                       for p, row in zip(prefixes, fields)]).tolist()


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "o.vcf.gz"
    with pytest.raises(RuntimeError), atomic_output(out) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("own_index", [False, True])
def test_imputed_writer_output_is_indexed_and_readable(tmp_path, own_index):
    panel = read_panel(_write(tmp_path, "20\t100\trs1\tA\tG\t.\t.\t.\tGT\t0|1\t1|1\n20\t300\t.\tC\tT\t.\t.\t.\tGT\t0|0\t0|1\n"))
    sites = panel.contigs["20"].sites
    out = tmp_path / "imp.vcf.gz"
    with atomic_output(out) as tmp:
        w = ImputedVcfWriter(tmp, samples=["S1", "S2"], contigs={"20": 64444167}, extra_header=["##spinimpute_command=x"],
                             index_path=f"{tmp}.tbi" if own_index else None)
        w.write_block(sites, 0, np.array([[0.1, 0.9, 1.0, 0.0], [0.0, 0.0, 0.5, 0.5]]), np.array([False, True]),
                      np.array([0.5, 0.25]), np.array([0.8, 1.0]))
        w.close()
    assert (tmp_path / "imp.vcf.gz.tbi").exists()
    vcf = cyvcf2.VCF(str(out))
    recs = list(vcf("20:100-100"))
    assert len(recs) == 1
    assert recs[0].INFO.get("IMP") is True
    assert recs[0].format("DS")[:, 0].tolist() == pytest.approx([1.0, 1.0])
    assert recs[0].format("GP").shape == (2, 3)
    assert vcf.seqlens == [64444167]  # the panel's contig length is kept
    with gzip.open(out, "rt") as handle:
        records = [line.split("\t") for line in handle if not line.startswith("#")]
    assert [r[7] for r in records] == ["DR2=0.80;AF=0.5000;IMP", "DR2=1.00;AF=0.2500"]  # Beagle's order and digits


PANEL_BODY = (
    "20\t100\trs1\tA\tG\t.\tPASS\t.\tGT:DS\t0|1:1\t1|1:2\t0|0:0\n"  # other FORMAT fields after GT
    "20\t150\t.\tAT\tA\t.\t.\t.\tGT\t1|0\t0|0\t0|1\n"
    "20\t200\trs2\tC\tT,G,CA,<DEL>,*,A,AA,AAA,AAAA,AAAAA\t.\t.\t.\tGT\t0|10\t2|3\t4|5\n"  # a two-digit allele
    "20\t300\t.\tG\t.\t.\t.\t.\tGT\t0|0\t0|0\t0|0\n"  # no ALT: no site
    "21\t50\t.\tC\tT\t.\t.\t.\tGT\t1\t0\t1\n"  # haploid (fills both slots)
)


def _panel_files(tmp_path, body):
    """The same panel as plain text, BGZF (htslib), plain gzip and BCF."""
    header = HEADER.replace("\tA\tB\n", "\tA\tB\tC\n").replace(
        "##contig=<ID=20>", '##contig=<ID=20>\n##contig=<ID=21>\n##FORMAT=<ID=DS,Number=1,Type=Float,Description="d">')
    plain = _write(tmp_path, body, name="p.vcf", header=header)
    with gzip.open(tmp_path / "p.gzip.vcf.gz", "wt") as handle:
        handle.write(header + body)
    import pysam

    pysam.tabix_compress(str(plain), str(tmp_path / "p.vcf.gz"))
    source = cyvcf2.VCF(str(plain))
    writer = cyvcf2.Writer(str(tmp_path / "p.bcf"), source, mode="wb")
    for rec in source:
        writer.write_record(rec)
    writer.close()
    return [plain, tmp_path / "p.vcf.gz", tmp_path / "p.gzip.vcf.gz", tmp_path / "p.bcf"]


def test_panel_text_and_bcf_read_alike(tmp_path, monkeypatch):
    from spinimpute.io import vcf_text

    monkeypatch.setattr(vcf_text, "BLOCK_BYTES", 64)  # many blocks, lines cut across their edges
    for path in _panel_files(tmp_path, PANEL_BODY):
        panel = read_panel(path)
        assert list(panel.contigs) == ["20", "21"], path
        c20, c21 = panel.contigs["20"], panel.contigs["21"]
        assert c20.sites.positions.tolist() == [100, 150] + [200] * 9  # '*' is no site
        assert c20.sites.alts[:6] == ["G", "A", "T", "G", "CA", "<DEL>"] and c20.sites.alts[-1] == "AAAAA"
        assert c20.sites.ids[:3] == ["rs1", ".", "rs2"] and c20.sites.refs[:2] == ["A", "AT"]
        haps = c20.haplotypes
        assert haps[0].tolist() == [0, 1, 1, 1, 0, 0] and haps[1].tolist() == [1, 0, 0, 0, 0, 1]
        assert haps[10].tolist() == [0, 1, 0, 0, 0, 0]  # allele 10
        assert haps[3].tolist() == [0, 0, 1, 0, 0, 0] and haps[5].tolist() == [0, 0, 0, 0, 1, 0]  # G, <DEL>
        assert c20.alt_count.tolist() == [3, 2, 0, 1, 1, 1, 0, 0, 0, 0, 1]
        assert c21.haplotypes.tolist() == [[1, 1, 0, 0, 1, 1]]
        assert panel.counts == {"records": 5, "records_without_alt": 1, "multiallelic_records": 1, "snp_sites": 5,
                                "indel_sites": 6, "symbolic_sites": 1, "other_sites": 0, "placeholder_alleles": 1,
                                "duplicate_sites": 0}


@pytest.mark.parametrize(
    "line,problem",
    [
        ("20\t100\t.\tA\tG\t.\t.\t.\tGT\t0|1\n", "number of genotype columns"),
        ("20\t100\t.\tA\tG\t.\t.\t.\tGT\t0|1\t1|1\t0|0\n", "number of genotype columns"),
        ("20\t100\t.\tA\tG\t.\t.\t.\n", "fewer than 10"),
        ("20\tx100\t.\tA\tG\t.\t.\t.\tGT\t0|1\t1|1\n", "POS"),
        ("20\t100\t.\tA\tG\t.\t.\t.\tDS\t1\t2\n", "FORMAT/GT"),
        ("20\t100\t.\tA\tG\t.\t.\t.\tGT\t0|a\t1|1\n", "allele indices"),
        ("20\t100\t.\tA\tG\t.\t.\t.\tGT\t0|2\t1|1\n", "allele index 2"),
    ],
)
def test_malformed_panel_records_are_named(tmp_path, line, problem):
    path = _write(tmp_path, "20\t50\t.\tA\tG\t.\t.\t.\tGT\t0|1\t1|1\n" + line)
    with pytest.raises(InputFileError) as err:
        read_panel(path)
    assert problem in str(err.value) and str(path) in str(err.value) and "20:" in str(err.value)


@pytest.mark.parametrize("kind,damage", [(1, "flip"), (2, "cut")])  # BGZF with a flipped byte, gzip cut short
def test_damaged_panel_is_an_error(tmp_path, kind, damage):
    body = "".join(f"20\t{pos}\t.\tA\tG\t.\t.\t.\tGT\t0|1\t1|1\t0|0\n" for pos in range(1, 20_000))
    path = _panel_files(tmp_path, body)[kind]
    data = path.read_bytes()
    middle = len(data) // 2
    path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :] if damage == "flip"
                     else data[: len(data) - 20])
    with pytest.raises(InputFileError, match="truncated or corrupt"):
        read_panel(path)


def test_a_spilled_panel_reads_the_same_rows_from_disk(tmp_path, monkeypatch):
    from spinimpute.io import vcf_text
    from spinimpute.io.modelfile import FileRows

    monkeypatch.setattr(vcf_text, "BLOCK_BYTES", 64)  # rows written in many pieces
    path = _panel_files(tmp_path, PANEL_BODY)[1]
    spill = tmp_path / "spill"
    spill.mkdir()
    held, spilled = read_panel(path), read_panel(path, spill=spill)
    assert sorted(p.name for p in spill.iterdir()) == ["contig1.bits", "contig2.bits"]
    for name, contig in spilled.contigs.items():
        assert isinstance(contig.packed, FileRows)
        assert np.array_equal(contig.haplotypes, held.contigs[name].haplotypes)
        assert np.array_equal(contig.packed[1:3], held.contigs[name].packed[1:3])
        sites, held_sites = contig.sites, held.contigs[name].sites
        assert np.array_equal(sites.positions, held_sites.positions) and len(sites) >= 1
        assert (sites.ids, sites.refs, sites.alts) == (held_sites.ids, held_sites.refs, held_sites.alts)
        assert np.array_equal(contig.alt_count, held.contigs[name].alt_count)


def test_a_spill_that_cannot_be_written_is_an_output_error(tmp_path):
    from spinimpute.errors import OutputFileError

    path = _panel_files(tmp_path, PANEL_BODY)[1]
    with pytest.raises(OutputFileError, match="could not write the panel's scratch file"):
        read_panel(path, spill=tmp_path / "gone")


def test_a_record_without_alt_gives_no_site_whatever_its_genotypes(tmp_path):
    for path in _panel_files(tmp_path, "20\t100\t.\tA\tG\t.\t.\t.\tGT\t0|1\t1|1\t0|0\n"
                                       "20\t200\t.\tC\t.\t.\t.\t.\tGT\t./.\t0/0\t.|.\n")[:3]:
        panel = read_panel(path)
        assert panel.contigs["20"].sites.positions.tolist() == [100] and panel.counts["records_without_alt"] == 1
