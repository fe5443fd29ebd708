"""Allele matching of target records against the panel (property-based)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from spinimpute.io.matching import AMBIGUOUS_MAX_MAF, match_alleles

BASES = "ACGT"
COMPLEMENT = {"A": "T", "T": "A", "C": "G", "G": "C"}

snp = st.tuples(st.sampled_from(BASES), st.sampled_from(BASES)).filter(lambda p: p[0] != p[1])


def oriented(alleles, flip):
    return 1 - alleles if flip else alleles


@given(snp, st.floats(0.01, 0.99), st.lists(st.integers(0, 1), min_size=4, max_size=40),
       st.booleans(), st.booleans())
def test_any_strand_and_orientation_gives_panel_alleles(pair, panel_freq, haps, swap, strand):
    ref, alt = pair
    panel = [(7, ref, alt, panel_freq)]
    truth = np.asarray(haps)
    t_ref, t_alt, t_haps = ref, alt, truth
    if strand:
        t_ref, t_alt = COMPLEMENT[t_ref], COMPLEMENT[t_alt]
    if swap:
        t_ref, t_alt, t_haps = t_alt, t_ref, 1 - t_haps
    index, flip, case = match_alleles(t_ref, t_alt, panel, float(t_haps.mean()))
    palindromic = COMPLEMENT[ref] == alt
    if not palindromic:
        assert index == 7
        assert np.array_equal(oriented(t_haps, flip), truth)
        assert case == {(False, False): "exact", (True, False): "swapped", (False, True): "strand",
                        (True, True): "strand_swapped"}[(swap, strand)]
    elif min(panel_freq, 1 - panel_freq) > AMBIGUOUS_MAX_MAF:
        # Left to linkage with the neighbouring markers (spinimpute.io.strand), unflipped.
        assert index == 7 and not flip and case == "ambiguous_unresolved"
    else:
        assert case == "ambiguous_resolved" and index == 7
        # Oriented so that the target's frequency is the nearer one to the panel's.
        f = oriented(t_haps, flip).mean()
        assert abs(f - panel_freq) <= abs((1 - f) - panel_freq) + 1e-12


@given(snp, snp)
def test_other_alleles_never_match(target, panel):
    if set(target) == set(panel) or {COMPLEMENT[b] for b in target} == set(panel):
        return
    index, _, case = match_alleles(*target, [(0, *panel, 0.2)], 0.2)
    assert index is None and case == "allele_mismatch"


def test_indels_match_only_exactly_or_swapped():
    assert match_alleles("AT", "A", [(3, "AT", "A", 0.1)], 0.1) == (3, False, "exact")
    assert match_alleles("A", "AT", [(3, "AT", "A", 0.1)], 0.9) == (3, True, "swapped")
    assert match_alleles("TA", "T", [(3, "AT", "A", 0.1)], 0.1)[0] is None


def test_second_candidate_at_same_position():
    panel = [(0, "C", "T", 0.1), (1, "C", "G", 0.1)]
    assert match_alleles("C", "G", panel, 0.1)[0] == 1
