import numpy as np
import pytest
import torch

from spinimpute.model import copying


def _brute_force(ref_all, query_all, observed_all, cm, rate, error):
    """Posterior ALT probability at every site by a forward-backward over all sites,
    with untyped sites as markers whose allele is unobserved."""
    alpha, gamma = copying.forward_backward(ref_all, query_all, observed_all, cm, rate, error)
    n_ref = ref_all.shape[0]
    p = copying.switch_probability(cm[1:] - cm[:-1], rate)
    # Backward without the emission at m: shift gamma one step and apply the transition.
    post = torch.empty_like(alpha)
    for m in range(cm.shape[0]):
        if m == cm.shape[0] - 1:
            beta = torch.ones_like(alpha[:, m])
        else:
            beta = (1 - p[m]) * gamma[:, m + 1] + p[m] / n_ref
        w = alpha[:, m] * beta
        post[:, m] = w / w.sum(dim=1, keepdim=True)
    return torch.einsum("qmr,rm->qm", post, ref_all)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_sites_match_full_forward_backward(seed):
    g = torch.Generator().manual_seed(seed)
    n_ref, n_query, n_sites = 12, 3, 40
    ref = (torch.rand(n_ref, n_sites, generator=g) < 0.3).double()
    query = (torch.rand(n_query, n_sites, generator=g) < 0.3).double()
    cm = torch.sort(torch.rand(n_sites, generator=g, dtype=torch.float64) * 0.5).values
    typed = torch.zeros(n_sites, dtype=torch.bool)
    typed[torch.tensor([3, 9, 10, 20, 31])] = True
    rate, error = torch.tensor(20.0, dtype=torch.float64), torch.tensor(0.01, dtype=torch.float64)
    observed_all = typed.expand(n_query, -1).clone()
    expected = _brute_force(ref, query, observed_all, cm, rate, error)
    got, _ = copying.impute_sites(
        ref[:, typed], query[:, typed], torch.ones(n_query, int(typed.sum()), dtype=torch.bool), cm[typed], ref, cm, rate, error
    )
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=1e-7)


def test_evidence_is_the_flanking_messages_shares():
    """The evidence the predictor reads beside each site's posterior, from its definition: the ALT
    carriers' shares of the forward message at the marker before the site and of the backward message
    at the marker after it, and of the states, and log10 of the sum of the two messages' product."""
    ref, query, observed, cm, typed = _random_problem(2, n_ref=16, n_query=3, n_sites=50, n_typed=6)
    rate, error = torch.tensor(8.0, dtype=torch.float64), torch.tensor(0.01, dtype=torch.float64)
    _, evidence = copying.impute_sites(ref[:, typed], query, observed, cm[typed], ref, cm, rate, error)
    alpha, gamma = copying.forward_backward(ref[:, typed], query, observed, cm[typed], rate, error)
    n_markers = len(typed)
    for j in range(ref.shape[1]):
        k = int((typed < j).sum())  # the site's interval: between markers k - 1 and k
        if k < n_markers and typed[k] == j:
            continue  # a marker is not imputed
        a = alpha[:, k - 1] if k > 0 else gamma[:, 0]
        g = gamma[:, k] if k < n_markers else alpha[:, -1]
        want = torch.stack([a @ ref[:, j], g @ ref[:, j], ref[:, j].mean().expand(len(query)),
                            torch.log10((a * g).sum(dim=1))], dim=-1)
        torch.testing.assert_close(evidence[:, j], want, atol=1e-9, rtol=1e-7)


def test_missing_allele_is_uninformative():
    ref = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    query = torch.tensor([[1.0, 1.0]])
    cm = torch.tensor([0.0, 0.1])
    a1, _ = copying.impute_sites(ref, query, torch.tensor([[True, False]]), cm, ref, cm, torch.tensor(1.0), torch.tensor(0.01))
    a2, _ = copying.impute_sites(ref[:, :1], query[:, :1], torch.tensor([[True]]), cm[:1], ref, cm, torch.tensor(1.0), torch.tensor(0.01))
    torch.testing.assert_close(a1, a2)


def test_copies_the_matching_template():
    ref = torch.tensor([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 1, 0]], dtype=torch.float32)
    typed = torch.tensor([0, 2, 4])
    query = ref[1:2, typed]
    cm = torch.linspace(0, 0.01, 5)
    p, _ = copying.impute_sites(ref[:, typed], query, torch.ones(1, 3, dtype=torch.bool), cm[typed], ref, cm,
                         torch.tensor(1.0), torch.tensor(1e-3))
    assert p[0, 1] > 0.99 and p[0, 3] > 0.99


def test_gradients_reach_parameters():
    ref = (torch.rand(8, 30) < 0.4).float()
    typed = torch.arange(0, 30, 5)
    rate = torch.tensor(5.0, requires_grad=True)
    error = torch.tensor(0.01, requires_grad=True)
    p, _ = copying.impute_sites(ref[:, typed], ref[:2, typed], torch.ones(2, len(typed), dtype=torch.bool),
                         torch.linspace(0, 1, 30)[typed], ref, torch.linspace(0, 1, 30), rate, error)
    p.sum().backward()
    assert rate.grad is not None and torch.isfinite(rate.grad)
    assert error.grad is not None and torch.isfinite(error.grad)
    assert np.isfinite(p.detach().numpy()).all()


def _random_problem(seed, n_ref=30, n_query=4, n_sites=60, n_typed=8):
    g = torch.Generator().manual_seed(seed)
    ref = (torch.rand(n_ref, n_sites, generator=g) < 0.3).double()
    ref[n_ref // 2 :] = ref[: n_ref - n_ref // 2]  # repeated sequences, so groups are not all singletons
    query = (torch.rand(n_query, n_sites, generator=g) < 0.3).double()
    cm = torch.sort(torch.rand(n_sites, generator=g, dtype=torch.float64) * 0.5).values
    typed = torch.sort(torch.randperm(n_sites, generator=g)[:n_typed]).values
    observed = torch.rand(n_query, n_typed, generator=g) < 0.9
    return ref, query[:, typed], observed, cm, typed


@pytest.mark.parametrize("seed", [0, 1])
def test_candidates_equal_a_panel_of_those_rows(seed):
    ref, query, observed, cm, typed = _random_problem(seed)
    rate, error = torch.tensor(5.0, dtype=torch.float64), torch.tensor(0.01, dtype=torch.float64)
    candidates = copying.select_candidates(ref[:, typed], query, observed, 9)
    assert candidates.shape == (query.shape[0], 9)
    assert (candidates[:, 1:] > candidates[:, :-1]).all()
    got, got_evidence = copying.impute_sites(ref[:, typed], query, observed, cm[typed], ref, cm, rate, error,
                                             candidates=candidates)
    for q in range(query.shape[0]):
        rows = candidates[q]
        alone, evidence = copying.impute_sites(ref[rows][:, typed], query[q : q + 1], observed[q : q + 1], cm[typed],
                                               ref[rows], cm, rate, error)
        torch.testing.assert_close(got[q : q + 1], alone, atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(got_evidence[q : q + 1], evidence, atol=1e-10, rtol=1e-8)


def test_all_rows_as_candidates_is_the_full_panel():
    ref, query, observed, cm, typed = _random_problem(3)
    rate, error = torch.tensor(5.0, dtype=torch.float64), torch.tensor(0.01, dtype=torch.float64)
    every = torch.arange(ref.shape[0]).expand(query.shape[0], -1)
    full, _ = copying.impute_sites(ref[:, typed], query, observed, cm[typed], ref, cm, rate, error)
    torch.testing.assert_close(
        copying.impute_sites(ref[:, typed], query, observed, cm[typed], ref, cm, rate, error, candidates=every)[0], full
    )


def test_candidates_include_an_identical_template():
    g = torch.Generator().manual_seed(5)
    ref = (torch.rand(200, 64, generator=g) < 0.4).float()
    query = ref[[17, 123]]
    candidates = copying.select_candidates(ref, query, torch.ones_like(query, dtype=torch.bool), 10)
    assert 17 in candidates[0].tolist() and 123 in candidates[1].tolist()


def test_groups_are_exact():
    g = np.random.default_rng(0)
    block = (g.random((500, 150)) < 0.05).astype(np.uint8)
    block[250:] = block[:250]
    ref = torch.from_numpy(block.astype(np.float32))
    groups = copying.group_sites(ref, ref[:, [39, 41]], [0, 40, 40, 150])
    sequences = copying.GroupSequences(groups)
    for k, (lo, hi) in enumerate([(0, 40), (40, 40), (40, 150)]):
        if lo == hi:
            continue
        seqs = sequences[k].numpy()
        np.testing.assert_array_equal(seqs[groups.group_of[k]], block[:, lo:hi])
        assert len(seqs) == len(np.unique(block[:, lo:hi], axis=0)) == groups.n_groups[k]


@pytest.mark.parametrize("with_candidates", [False, True])
def test_compiled_kernel_equals_torch_code(with_candidates):
    """Inference on a CPU runs the compiled kernel; training (with gradients) the torch code."""
    ref, query, observed, cm, typed = _random_problem(4)
    ref, query, cm = ref.float(), query.float(), cm.float()
    error = torch.tensor(0.01)
    candidates = copying.select_candidates(ref[:, typed], query, observed, 9) if with_candidates else None
    args = (ref[:, typed], query, observed, cm[typed], ref, cm)
    compiled, compiled_evidence = copying.impute_sites(*args, torch.tensor(5.0), error, candidates=candidates)
    rate = torch.tensor(5.0, requires_grad=True)
    differentiable, evidence = copying.impute_sites(*args, rate, error, candidates=candidates)
    assert differentiable.requires_grad and not compiled.requires_grad
    torch.testing.assert_close(compiled, differentiable.detach(), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(compiled_evidence, evidence.detach(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("block_sites,block_markers", [(0, 1), (6, 3), (10**9, 10**9)])
@pytest.mark.parametrize("with_candidates", [False, True])
def test_compiled_posteriors_do_not_depend_on_the_blocks(monkeypatch, block_sites, block_markers, with_candidates):
    """The compiled forward-backward runs over the classes of states that share their alleles over a
    block of markers; every marker alone, a few together or all in one block give the torch code's
    posteriors, which runs over each state."""
    from spinimpute.model import copying_numpy

    ref, query, observed, cm, typed = _random_problem(7, n_ref=60, n_query=5, n_sites=300, n_typed=40)
    ref[40:] = ref[:20]  # three copies of each of 20 sequences ...
    ref[40:, ::7] = 1 - ref[40:, ::7]  # ... the third differing at a seventh of the sites
    error, rate = torch.tensor(0.01, dtype=torch.float64), torch.tensor(5.0, dtype=torch.float64)
    candidates = copying.select_candidates(ref[:, typed], query, observed, 25) if with_candidates else None
    args = (ref[:, typed], query, observed, cm[typed], ref, cm)
    with torch.enable_grad():
        want, want_evidence = (t.detach() for t in copying.impute_sites(
            *args, rate.clone().requires_grad_(True), error, candidates=candidates))
    monkeypatch.setattr(copying_numpy, "BLOCK_SITES", block_sites)
    monkeypatch.setattr(copying_numpy, "BLOCK_MARKERS", block_markers)
    groups = copying.group_sites(ref, ref[:, typed], copying.interval_bounds(cm[typed], cm))
    n_blocks = len(groups.block_bounds) - 1
    assert n_blocks == {1: 40, 3: None, 10**9: 1}[block_markers] or block_markers == 3 and 13 < n_blocks < 40
    got, evidence = copying.impute_sites(*args, rate, error, candidates=candidates, groups=groups)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)  # the compiled kernel returns float32
    torch.testing.assert_close(evidence, want_evidence, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("block_markers", [1, 16])
def test_sites_reached_from_the_few_groups_holding_states_are_the_torch_posteriors(monkeypatch, block_markers):
    """Where a query's states occupy few of an interval's groups (a large panel), the compiled kernel
    reaches the sites from those groups' ALT sites; elsewhere each site sums its ALT groups. Both
    give the torch code's posteriors; the problem has intervals of each kind."""
    from spinimpute.model import copying_numpy

    ref, query, observed, cm, typed = _random_problem(11, n_ref=240, n_query=6, n_sites=400, n_typed=30)
    ref[120:] = (torch.rand(120, 400, generator=torch.Generator().manual_seed(5)) < 0.3).double()  # many groups
    error, rate = torch.tensor(0.01, dtype=torch.float64), torch.tensor(5.0, dtype=torch.float64)
    candidates = copying.select_candidates(ref[:, typed], query, observed, 12)
    args = (ref[:, typed], query, observed, cm[typed], ref, cm)
    with torch.enable_grad():
        want, want_evidence = (t.detach() for t in copying.impute_sites(
            *args, rate.clone().requires_grad_(True), error, candidates=candidates))
    monkeypatch.setattr(copying_numpy, "BLOCK_MARKERS", block_markers)
    groups = copying.group_sites(ref, ref[:, typed], copying.interval_bounds(cm[typed], cm))
    occupied = [(len(np.unique(groups.group_of[k][candidates[q].numpy()])), groups.n_groups[k])
                for q in range(len(query)) for k in range(len(groups.n_groups))
                if groups.bounds[k] < groups.bounds[k + 1]]
    assert any(4 * n_occ < n for n_occ, n in occupied) and any(4 * n_occ >= n for n_occ, n in occupied)
    got, evidence = copying.impute_sites(*args, rate, error, candidates=candidates, groups=groups)
    assert (got == 0).any()  # sites where no group holding states carries ALT
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(evidence, want_evidence, atol=1e-6, rtol=1e-6)


def test_torch_candidates_are_the_compiled_selection():
    """Training (torch tensors) and imputation (numpy) choose the same states."""
    from spinimpute.model import copying_numpy

    g = torch.Generator().manual_seed(2)
    ref = (torch.rand(400, 330, generator=g) < 0.3).float()
    query = ref[torch.randint(0, 400, (5,), generator=g)].clone()
    flip = torch.rand(5, 330, generator=g) < 0.05
    query[flip] = 1 - query[flip]
    observed = torch.rand(5, 330, generator=g) < 0.9
    chosen = copying.select_candidates(ref, query, observed, 80)
    assert chosen.dtype == torch.int64
    kernel_query = np.where(observed.numpy(), query.numpy(), -1).astype(np.int8)
    np.testing.assert_array_equal(chosen.numpy(),
                                  copying_numpy.select_candidates(ref.T.numpy().astype(np.uint8), kernel_query, 80))


def test_a_large_panel_ranks_each_querys_pool_of_longest_matches(monkeypatch):
    from spinimpute.model import copying_numpy, pbwt

    rng = np.random.default_rng(8)
    founders = rng.integers(0, 2, (6, 150))
    markers = (founders[rng.integers(0, 6, 300)] ^ (rng.random((300, 150)) < 0.05)).T.astype(np.uint8)
    query = markers[:, [5, 77, 150, 299]].T.astype(np.int8)
    query[:, ::9] = -1
    chosen = copying_numpy.select_candidates(markers, query, 20)  # 300 > 2 x 20: pools of 40
    pool = pbwt.select_candidates(markers, query, copying_numpy.POOL_STATES * 20)
    for q, template in enumerate([5, 77, 150, 299]):
        assert set(chosen[q]) <= set(pool[q]) and template in chosen[q]
    monkeypatch.setattr(copying_numpy, "POOL_STATES", 15)  # 300 <= 15 x 20: every haplotype ranked
    every = copying_numpy.select_candidates(markers, query, 20)
    assert all(template in every[q] for q, template in enumerate([5, 77, 150, 299]))
