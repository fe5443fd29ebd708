"""Matching target records to panel sites: contig names, REF/ALT swaps, strand flips, A/T and C/G SNPs."""

from __future__ import annotations


def match_contig(name: str, known: list[str]) -> str | None:
    """The contig of `known` that `name` refers to, reconciling 'chr20' and '20'."""
    if name in known:
        return name
    alt = name[3:] if name.startswith("chr") else "chr" + name
    return alt if alt in known else None


_COMPLEMENT = {"A": "T", "T": "A", "C": "G", "G": "C"}


AMBIGUOUS_MAX_MAF = 0.4  # palindromic SNPs nearer 50 % than this cannot be oriented by frequency


def match_alleles(
    ref: str, alt: str, candidates: list[tuple[int, str, str, float]], target_alt_freq: float
) -> tuple[int | None, bool, str]:
    """Match a target biallelic record to one of the panel sites at its position.

    Args:
        ref, alt: the target's alleles.
        candidates: (panel index, REF, ALT, panel ALT frequency) of the panel sites at
            the same position.
        target_alt_freq: ALT frequency among the target's non-missing alleles.

    Returns:
        (panel index or None, whether to flip the target's 0/1 alleles, case), with case
        one of "exact", "swapped", "strand", "strand_swapped", "ambiguous_resolved" (an
        A/T or C/G SNP oriented by frequency), "ambiguous_unresolved" (one too near 50 %
        for that: its index is returned unflipped) and "allele_mismatch".
    """
    snp = len(ref) == 1 and len(alt) == 1 and ref in _COMPLEMENT and alt in _COMPLEMENT
    palindromic = snp and _COMPLEMENT[ref] == alt
    for index, p_ref, p_alt, p_freq in candidates:
        if palindromic and {p_ref, p_alt} == {ref, alt}:
            # A/T or C/G: the strand is unknown, so orient by allele frequency.
            if min(p_freq, 1 - p_freq) > AMBIGUOUS_MAX_MAF:
                return index, False, "ambiguous_unresolved"
            flip = abs((1 - target_alt_freq) - p_freq) < abs(target_alt_freq - p_freq)
            return index, flip, "ambiguous_resolved"
        if (ref, alt) == (p_ref, p_alt):
            return index, False, "exact"
        if (ref, alt) == (p_alt, p_ref):
            return index, True, "swapped"
    if snp and not palindromic:
        c_ref, c_alt = _COMPLEMENT[ref], _COMPLEMENT[alt]
        for index, p_ref, p_alt, _ in candidates:
            if (c_ref, c_alt) == (p_ref, p_alt):
                return index, False, "strand"
            if (c_ref, c_alt) == (p_alt, p_ref):
                return index, True, "strand_swapped"
    return None, False, "allele_mismatch"


# Counted outcomes of matching a record: match_alleles' cases, but that an A/T or C/G SNP
# too near 50 % to orient by frequency ends "ambiguous_linkage" (oriented by its neighbours)
# or "ambiguous_dropped".
MATCH_CASES = ("exact", "swapped", "strand", "strand_swapped", "ambiguous_resolved", "ambiguous_linkage",
               "ambiguous_dropped", "allele_mismatch")

