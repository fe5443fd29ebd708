"""Genotype fields as VCF text: GT:DS:GP for blocks of sites, from fixed-width tables and a compiled loop."""

from __future__ import annotations

import numpy as np

from spinimpute.compiled import compiled


def _decimal_table(n: int) -> np.ndarray:
    """Strings for k/100 with at most two decimals, as Beagle writes them."""
    out = []
    for k in range(n + 1):
        s = f"{k / 100:.2f}".rstrip("0").rstrip(".")
        out.append(s)
    return np.asarray(out, dtype=object)


_DS_TEXT = _decimal_table(200)


_P_TEXT = _decimal_table(100)


_GT_TEXT = np.asarray(["0|0:", "0|1:", "1|0:", "1|1:"], dtype=object)


def _byte_table(strings, width: int) -> np.ndarray:
    """(n, width) uint8 rows holding each string, NUL-padded (NUL never occurs in VCF text)."""
    table = np.zeros((len(strings), width), dtype=np.uint8)
    for i, text in enumerate(strings):
        raw = text.encode()
        table[i, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return table


# A diploid field is GT + ":" + DS (indexed by GT * 201 + DS in hundredths, at most 8
# bytes) and ":" + GP + "\t" (indexed by P(0) * 101 + P(2) in hundredths; P(1) is what
# they leave), each with its length; a compiled loop copies them (`record_text`).
_GT_DS_BYTES = _byte_table([gt + ds for gt in _GT_TEXT for ds in _DS_TEXT], 8)


_GP_BYTES = _byte_table(
    [f":{_P_TEXT[g0]},{_P_TEXT[max(0, 100 - g0 - g2)]},{_P_TEXT[g2]}\t" for g0 in range(101) for g2 in range(101)],
    16,
)


# Without GP the second field is the tab alone, whatever the probabilities.
_NO_GP_BYTES = _byte_table(["\t"] * len(_GP_BYTES), 1)


def _diploid_codes(hap_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Table indices of each call's GT:DS and GP text, (n_sites, n_samples) each."""
    p = hap_prob.reshape(hap_prob.shape[0], -1, 2)
    p1, p2 = p[..., 0], p[..., 1]
    ds = np.rint((p1 + p2) * 100).astype(np.int64)
    gp0 = np.rint((1 - p1) * (1 - p2) * 100).astype(np.int64)
    gp2 = np.rint(p1 * p2 * 100).astype(np.int64)
    gt = (p1 >= 0.5).astype(np.int64) * 2 + (p2 >= 0.5).astype(np.int64)
    return gt * 201 + ds, gp0 * 101 + gp2


def format_genotype_rows(hap_prob: np.ndarray, haploid: np.ndarray | None = None, *, gp: bool = True) -> list[bytes]:
    """Each site's sample columns as bytes, every field preceded by a tab.

    Args:
        hap_prob: (n_sites, n_haplotypes) ALT probabilities, sample i at 2i and 2i+1.
        haploid: optional (n_sites, n_samples) bool; haploid calls are written with one
            allele, DS in [0, 1] and two GP values, from the mean of the two slots.
        gp: write GT:DS:GP; GT:DS if False.
    """
    if haploid is not None and haploid.any():
        return [("\t" + "\t".join(row)).encode() for row in format_genotype_block(hap_prob, haploid, gp=gp)]
    text, ends = record_text(hap_prob, np.zeros(0, np.uint8), np.zeros(len(hap_prob), np.int64), gp=gp)
    starts = [0, *ends[:-1].tolist()]
    return [text[a : b - 1].tobytes() for a, b in zip(starts, ends.tolist())]  # without the newline


def record_text(hap_prob: np.ndarray, prefixes: np.ndarray, prefix_ends: np.ndarray, *,
                gp: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Diploid records as text: row i is its prefix (`prefixes[prefix_ends[i - 1]:prefix_ends[i]]`,
    the fixed columns), its sample fields each after a tab, then a newline.

    Returns:
        (text uint8, ends int64): record i is text[ends[i - 1]:ends[i]] (from 0 for row 0).
    """
    hap_prob = np.ascontiguousarray(hap_prob, dtype=np.float32)
    gp_table, gp_lengths = (_GP_BYTES, _GP_LENGTHS) if gp else (_NO_GP_BYTES, _NO_GP_LENGTHS)
    n_sites = hap_prob.shape[0]
    # Room for the widest fields: each is copied whole (a fixed number of bytes, faster than its
    # length) and the next written over what lies beyond its length.
    width = _GT_DS_BYTES.shape[1] + gp_table.shape[1]
    out = np.empty(len(prefixes) + n_sites * (2 + (hap_prob.shape[1] // 2) * width) + width, np.uint8)
    ends = np.zeros(n_sites, np.int64)
    if n_sites:
        _record_text(hap_prob, prefixes, prefix_ends, _GT_DS_BYTES, _GT_DS_LENGTHS, gp_table, gp_lengths, out, ends)
    return out[: ends[-1] if n_sites else 0], ends


def format_genotype_block(hap_prob: np.ndarray, haploid: np.ndarray | None = None, *, gp: bool = True) -> np.ndarray:
    """Per-sample 'GT:DS:GP' ('GT:DS' if not `gp`) strings for a block of sites.

    Args:
        hap_prob: (n_sites, n_haplotypes) ALT probabilities, sample i at 2i and 2i+1.
        haploid: optional (n_sites, n_samples) bool; haploid calls are written with one
            allele, DS in [0, 1] and two GP values, from the mean of the two slots.

    Returns:
        (n_sites, n_samples) object array of strings.
    """
    gt_ds, gp_code = _diploid_codes(hap_prob)
    fields = _GT_DS_TEXT[gt_ds] + _GP_TEXT[gp_code] if gp else _GT_DS_TEXT[gt_ds]
    if haploid is not None and haploid.any():
        p = hap_prob.reshape(hap_prob.shape[0], -1, 2).mean(axis=2)
        k = np.rint(p * 100).astype(np.int64)
        single = np.where(p >= 0.5, "1:", "0:").astype(object) + _P_TEXT[k]
        if gp:
            single = single + ":" + _P_TEXT[100 - k] + "," + _P_TEXT[k]
        fields = np.where(haploid, single, fields)
    return fields


_GT_DS_LENGTHS, _GP_LENGTHS = (_GT_DS_BYTES != 0).sum(axis=1), (_GP_BYTES != 0).sum(axis=1)


_NO_GP_LENGTHS = (_NO_GP_BYTES != 0).sum(axis=1)


_GT_DS_TEXT = np.asarray([row.tobytes().rstrip(b"\0").decode() for row in _GT_DS_BYTES], dtype=object)


_GP_TEXT = np.asarray([row.tobytes().rstrip(b"\0").decode()[:-1] for row in _GP_BYTES], dtype=object)



@compiled
def _record_text(hap_prob, prefixes, prefix_ends, gt_ds_bytes, gt_ds_length, gp_bytes, gp_length, out,
                 ends):  # pragma: no cover - compiled
    hundred, one, half = np.float32(100.0), np.float32(1.0), np.float32(0.5)
    n_samples = hap_prob.shape[1] // 2
    gt_ds_width, gp_width = gt_ds_bytes.shape[1], gp_bytes.shape[1]
    # The fields of the four certain genotypes, whole ("0|0:0:1,0,0" and its tab): most calls are
    # one of them, copied in a fixed number of bytes without the tables' lengths.
    certain_width = gt_ds_length[0] + gp_length[100 * 101]
    certain = np.empty((4, certain_width), np.uint8)
    certain_codes = np.empty((4, 2), np.int64)
    for gt in range(4):
        ds = (gt >> 1) + (gt & 1)
        certain_codes[gt, 0] = gt * 201 + 100 * ds
        certain_codes[gt, 1] = (100 if ds == 0 else 0) * 101 + (100 if ds == 2 else 0)
        n = gt_ds_length[certain_codes[gt, 0]]
        certain[gt, :n] = gt_ds_bytes[certain_codes[gt, 0], :n]
        certain[gt, n:] = gp_bytes[certain_codes[gt, 1], : certain_width - n]
    pos, prefix_start = 0, 0
    for i in range(hap_prob.shape[0]):
        for b in range(prefix_start, prefix_ends[i]):
            out[pos] = prefixes[b]
            pos += 1
        prefix_start = prefix_ends[i]
        out[pos] = 9  # tab
        pos += 1
        for s in range(n_samples):
            p1, p2 = hap_prob[i, 2 * s], hap_prob[i, 2 * s + 1]
            # float32 arithmetic and round-half-even, as numpy does in _diploid_codes.
            ds = int(np.rint((p1 + p2) * hundred))
            gp0 = int(np.rint((one - p1) * (one - p2) * hundred))
            gp2 = int(np.rint(p1 * p2 * hundred))
            gt = 2 * (p1 >= half) + (p2 >= half)
            code, gp_code = gt * 201 + ds, gp0 * 101 + gp2
            if code == certain_codes[gt, 0] and gp_code == certain_codes[gt, 1]:
                for b in range(certain_width):
                    out[pos + b] = certain[gt, b]
                pos += certain_width
                continue
            for b in range(gt_ds_width):
                out[pos + b] = gt_ds_bytes[code, b]
            pos += gt_ds_length[code]
            for b in range(gp_width):
                out[pos + b] = gp_bytes[gp_code, b]
            pos += gp_length[gp_code]
        out[pos - 1] = 10  # a newline for the tab after the last field
        ends[i] = pos
