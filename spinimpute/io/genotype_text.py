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
# they leave), each with its length; a compiled loop copies them (`diploid_text`).
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
    gp_table, gp_lengths = (_GP_BYTES, _GP_LENGTHS) if gp else (_NO_GP_BYTES, _NO_GP_LENGTHS)
    buffer, end_array = diploid_text(hap_prob, _GT_DS_BYTES, _GT_DS_LENGTHS, gp_table, gp_lengths)
    ends: list[int] = end_array.tolist()
    text = buffer[: ends[-1] if ends else 0].tobytes()
    return [text[a:b] for a, b in zip([0, *ends[:-1]], ends)]


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
def _diploid_text(hap_prob, gt_ds_bytes, gt_ds_length, gp_bytes, gp_length, out, ends, row_lo, row_hi,
                  pos):  # pragma: no cover - compiled
    hundred, one, half = np.float32(100.0), np.float32(1.0), np.float32(0.5)
    n_samples = hap_prob.shape[1] // 2
    for i in range(row_lo, row_hi):
        out[pos] = 9  # tab
        pos += 1
        for s in range(n_samples):
            p1, p2 = hap_prob[i, 2 * s], hap_prob[i, 2 * s + 1]
            # float32 arithmetic and round-half-even, as numpy does in _diploid_codes.
            ds = int(np.rint((p1 + p2) * hundred))
            gp0 = int(np.rint((one - p1) * (one - p2) * hundred))
            gp2 = int(np.rint(p1 * p2 * hundred))
            gt = 2 * (p1 >= half) + (p2 >= half)
            code = gt * 201 + ds
            for b in range(gt_ds_length[code]):
                out[pos + b] = gt_ds_bytes[code, b]
            pos += gt_ds_length[code]
            code = gp0 * 101 + gp2
            for b in range(gp_length[code]):
                out[pos + b] = gp_bytes[code, b]
            pos += gp_length[code]
        pos -= 1  # the tab after the last field
        ends[i] = pos


def diploid_text(hap_prob: np.ndarray, gt_ds_bytes, gt_ds_length, gp_bytes, gp_length) -> tuple[np.ndarray, np.ndarray]:
    """The sample columns of each site as text, from fixed-width field tables (see `format_genotype_rows`).

    Returns:
        (text uint8, ends int64): row i is text[ends[i - 1]:ends[i]] (from 0 for row 0).
    """
    hap_prob = np.ascontiguousarray(hap_prob, dtype=np.float32)
    n_sites = hap_prob.shape[0]
    out = np.empty(n_sites * (1 + (hap_prob.shape[1] // 2) * (gt_ds_bytes.shape[1] + gp_bytes.shape[1])), np.uint8)
    ends = np.zeros(n_sites, np.int64)
    if n_sites:
        _diploid_text(hap_prob, gt_ds_bytes, gt_ds_length.astype(np.int64), gp_bytes, gp_length.astype(np.int64), out,
                      ends, 0, n_sites, 0)
    return out, ends

