import shutil

import numpy as np
import pysam
import pytest

from spinimpute.io.bgzf import BGZF_BLOCK_INPUT, BgzfFormatError, BgzfTextWriter, is_bgzf, read_bgzf, write_bgzf
from spinimpute.io.tabix import TabixIndexBuilder, region_bin


def test_region_bin_follows_the_specification():
    assert region_bin(0, 1) == 4681  # first 16 kb bin
    assert region_bin(16383, 16385) == 585  # crosses a 16 kb boundary: the 128 kb bin
    assert region_bin(0, 1 << 29) == 0


def _write_indexed(path, records, *, threads=1):
    """records: (contig, pos, ref) in file order; returns the text offsets."""
    index = TabixIndexBuilder()
    header = b"##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    with BgzfTextWriter(path, threads=threads) as out:
        out.write(header)
        offset = len(header)
        for contig in dict.fromkeys(c for c, _, _ in records):
            rows = [(pos, ref) for c, pos, ref in records if c == contig]
            lines = [f"{contig}\t{pos}\t.\t{ref}\tA\t.\tPASS\t{'X' * (pos % 97)}\n".encode() for pos, ref in rows]
            lengths = np.array([len(line) for line in lines])
            beg = np.array([pos - 1 for pos, _ in rows])
            ends = offset + np.cumsum(lengths)
            index.add(contig, beg, beg + np.array([len(r) for _, r in rows]), ends - lengths, ends)
            out.write(b"".join(lines))
            offset = int(ends[-1])
    write_bgzf(f"{path}.tbi", index.index_bytes(out.block_offsets, BGZF_BLOCK_INPUT))


@pytest.mark.parametrize("threads", [1, 3])
def test_index_answers_queries_as_tabix_does(tmp_path, threads):
    rng = np.random.default_rng(0)
    records = []
    for contig, n in (("chr20", 30000), ("chrX", 5000), ("7", 1)):
        positions = np.sort(rng.choice(3_000_000, n, replace=False)) + 1
        for pos in positions.tolist():  # some long REF alleles, spanning 16 kb windows and bins
            ref = "C" * (1 if rng.random() < 0.99 else int(rng.integers(2, 40000)))
            records.append((contig, pos, ref))
    ours = tmp_path / "ours.vcf.gz"
    _write_indexed(ours, records, threads=threads)
    theirs = tmp_path / "theirs.vcf.gz"
    shutil.copy(ours, theirs)
    pysam.tabix_index(str(theirs), preset="vcf", force=True, keep_original=True)
    a, b = pysam.TabixFile(str(ours), index=f"{ours}.tbi"), pysam.TabixFile(str(theirs))
    assert list(a.contigs) == list(b.contigs) == ["chr20", "chrX", "7"]
    for contig in ("chr20", "chrX", "7"):
        starts = rng.integers(0, 3_100_000, 200)
        for start, width in zip(starts.tolist(), rng.integers(1, 200_000, 200).tolist()):
            assert list(a.fetch(contig, start, start + width)) == list(b.fetch(contig, start, start + width))
        assert list(a.fetch(contig)) == list(b.fetch(contig))


def test_bgzf_reads_back_and_refuses_damage(tmp_path):
    data = np.random.default_rng(1).integers(0, 4, 300_000).astype(np.uint8).tobytes()
    path = tmp_path / "x.gz"
    write_bgzf(path, data)
    assert is_bgzf(path) and b"".join(b"".join(blocks) for blocks in read_bgzf(path, piece_bytes=1000)) == data
    raw = path.read_bytes()
    path.write_bytes(raw[:1000] + bytes([raw[1000] ^ 0xFF]) + raw[1001:])  # a flipped byte inside the first block
    with pytest.raises(BgzfFormatError):
        list(read_bgzf(path))
    path.write_bytes(raw[:-40])  # cut inside the last data block
    with pytest.raises(BgzfFormatError, match="ends inside"):
        list(read_bgzf(path))


@pytest.mark.parametrize("threads", [1, 2])
def test_bgzf_blocks_hold_the_text_however_it_is_written(tmp_path, threads):
    rng = np.random.default_rng(2)
    data = rng.integers(0, 4, 5 * BGZF_BLOCK_INPUT + 123).astype(np.uint8)
    cuts = np.sort(rng.choice(len(data), 12, replace=False))
    cuts[3] = cuts[2] + 2 * BGZF_BLOCK_INPUT  # a piece of whole blocks, compressed where it lies
    pieces = np.split(data, np.unique(np.minimum(cuts, len(data))))
    path = tmp_path / "x.gz"
    with BgzfTextWriter(path, threads=threads) as out:
        for i, piece in enumerate(pieces):  # arrays, bytes and str, as records, tests and the header come
            out.write(piece if i % 3 == 0 else piece.tobytes() if i % 3 == 1 else piece.tobytes().decode("ascii"))
    blocks = [b for group in read_bgzf(path) for b in group]
    assert b"".join(blocks) == data.tobytes()
    assert [len(b) for b in blocks] == [BGZF_BLOCK_INPUT] * 5 + [123, 0]  # block k holds text [k, k + 1) x 0xFF00
    assert len(out.block_offsets) == len(blocks)  # each data block's offset, then the end-of-file marker's
