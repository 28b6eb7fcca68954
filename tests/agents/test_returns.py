"""Known-answer tests for n-step returns and GAE with termination vs truncation."""

import pytest
import torch

from agents.returns import gae, nstep_returns

G = 0.5


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32).view(len(rows), 1)


def test_nstep_plain_bootstrap():
    # r = 1, 2, 3, bootstrap V(s_3) = 8: R_2 = 3 + .5*8 = 7, R_1 = 2 + 3.5 = 5.5, R_0 = 1 + 2.75
    r = _t([1, 2, 3])
    f = torch.zeros(3, 1, dtype=torch.bool)
    out = nstep_returns(r, f, f, torch.zeros(3, 1), torch.tensor([8.0]), G)
    assert out.view(-1).tolist() == [3.75, 5.5, 7.0]


def test_termination_cuts_the_return():
    r = _t([1, 2, 3])
    term = torch.tensor([[False], [True], [False]])
    f = torch.zeros(3, 1, dtype=torch.bool)
    out = nstep_returns(r, term, f, torch.full((3, 1), 100.0), torch.tensor([8.0]), G)
    # step 1 terminates: R_1 = 2 (no bootstrap, final_values ignored), R_0 = 1 + .5*2 = 2
    assert out.view(-1).tolist() == [2.0, 2.0, 7.0]


def test_truncation_bootstraps_from_final_obs_value():
    r = _t([1, 2, 3])
    trunc = torch.tensor([[False], [True], [False]])
    f = torch.zeros(3, 1, dtype=torch.bool)
    final = torch.tensor([[100.0], [10.0], [100.0]])
    out = nstep_returns(r, f, trunc, final, torch.tensor([8.0]), G)
    # R_1 = 2 + .5*10 = 7 (V of the final obs, not R_2), R_0 = 1 + 3.5 = 4.5
    assert out.view(-1).tolist() == [4.5, 7.0, 7.0]


def test_terminated_and_truncated_together_means_terminated():
    r = _t([1.0])
    both = torch.tensor([[True]])
    out = nstep_returns(r, both, both, torch.tensor([[10.0]]), torch.tensor([8.0]), G)
    assert out.item() == 1.0
    _, ret = gae(r, torch.zeros(1, 1), both, both, torch.tensor([[10.0]]), torch.tensor([8.0]), G)
    assert ret.item() == 1.0


def test_gae_by_hand():
    # values 1, 2; last value 4; lam .5; no dones.
    r = _t([0, 1])
    v = _t([1, 2])
    f = torch.zeros(2, 1, dtype=torch.bool)
    adv, ret = gae(r, v, f, f, torch.zeros(2, 1), torch.tensor([4.0]), G, lam=0.5)
    d1 = 1 + 0.5 * 4 - 2  # 1.0
    d0 = 0 + 0.5 * 2 - 1  # 0.0
    a1 = d1
    a0 = d0 + 0.5 * 0.5 * a1
    assert adv.view(-1).tolist() == pytest.approx([a0, a1])
    assert ret.view(-1).tolist() == pytest.approx([a0 + 1, a1 + 2])


def test_gae_with_truncation_uses_final_value():
    r = _t([0, 1])
    v = _t([1, 2])
    trunc = torch.tensor([[True], [False]])
    f = torch.zeros(2, 1, dtype=torch.bool)
    adv, _ = gae(r, v, f, trunc, torch.tensor([[6.0], [0.0]]), torch.tensor([4.0]), G, lam=0.5)
    # step 0: delta = 0 + .5*6 - 1 = 2 and no propagation from step 1 (new episode).
    assert adv.view(-1).tolist() == pytest.approx([2.0, 1.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_lambda_one_equals_nstep(seed):
    g = torch.Generator().manual_seed(seed)
    t, n = 7, 5
    r = torch.randn(t, n, generator=g)
    v = torch.randn(t, n, generator=g)
    term = torch.rand(t, n, generator=g) < 0.2
    trunc = torch.rand(t, n, generator=g) < 0.2
    final = torch.randn(t, n, generator=g)
    last = torch.randn(n, generator=g)
    _, ret = gae(r, v, term, trunc, final, last, 0.9, lam=1.0)
    expected = nstep_returns(r, term, trunc, final, last, 0.9)
    torch.testing.assert_close(ret, expected)


def test_values_that_do_not_apply_cannot_leak():
    # a NaN V(final obs) of an untruncated slot, or an inf bootstrap after a termination, used to
    # turn returns into NaN through the 0 * value masks
    r = torch.ones(3, 1)
    term = torch.tensor([[False], [False], [True]])
    trunc = torch.zeros(3, 1, dtype=torch.bool)
    final = torch.full((3, 1), float("nan"))
    last = torch.full((1,), float("inf"))
    values = torch.zeros(3, 1)
    expected = torch.tensor([[1 + 0.9 + 0.81], [1 + 0.9], [1.0]])
    torch.testing.assert_close(nstep_returns(r, term, trunc, final, last, 0.9), expected)
    adv, ret = gae(r, values, term, trunc, final, last, 0.9, 0.95)
    assert torch.isfinite(adv).all() and torch.isfinite(ret).all()
    torch.testing.assert_close(gae(r, values, term, trunc, final, last, 0.9, 1.0)[1], expected)
