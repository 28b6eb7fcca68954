"""Known-answer tests for the Distral distillation losses (Teh et al. 2017)."""

import math

import pytest
import torch

from mtrl.distill import (
    distillation_loss,
    distral_coefficients,
    distral_costs,
    distral_regularised_reward,
    entropy,
    kl_divergence,
    log_prob,
)


def test_kl_of_equal_logits_is_zero_with_zero_gradient():
    p = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    q = p.detach().clone()
    kl = kl_divergence(p, q)
    assert kl.shape == (4,)
    torch.testing.assert_close(kl, torch.zeros(4, dtype=torch.float64))
    kl.sum().backward()
    torch.testing.assert_close(p.grad, torch.zeros_like(p), atol=1e-12, rtol=0)


def test_kl_two_actions_by_hand():
    # p = (0.5, 0.5), q = (0.8, 0.2) -> 0.5 ln(0.5/0.8) + 0.5 ln(0.5/0.2)
    p = torch.zeros(1, 2, dtype=torch.float64)
    q = torch.tensor([[math.log(0.8), math.log(0.2)]], dtype=torch.float64)
    expected = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    assert kl_divergence(p, q).item() == pytest.approx(expected, abs=1e-12)
    # Asymmetric: KL(q || p) differs.
    expected_rev = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    assert kl_divergence(q, p).item() == pytest.approx(expected_rev, abs=1e-12)


def test_kl_is_stable_for_extreme_logits():
    p = torch.tensor([[1000.0, -1000.0]])
    q = torch.tensor([[-1000.0, 1000.0]])
    kl = kl_divergence(p, q)
    assert torch.isfinite(kl).all()
    assert kl.item() == pytest.approx(2000.0, rel=1e-5)


def test_distillation_gradient_is_softmax_difference():
    student = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    loss = distillation_loss(student, teacher, reduction="sum")
    loss.backward()
    expected = torch.softmax(student.detach(), -1) - torch.softmax(teacher.detach(), -1)
    torch.testing.assert_close(student.grad, expected, atol=1e-14, rtol=0)
    assert teacher.grad is None  # the teacher is detached


def test_distillation_equals_kl_plus_teacher_entropy():
    s, t = torch.randn(3, 5), torch.randn(3, 5)
    per = distillation_loss(s, t, reduction="none")
    torch.testing.assert_close(per, kl_divergence(t, s) + entropy(t))


def test_distillation_weights_and_reductions():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    w = torch.tensor([1.0, 0.9, 0.81, 0.729])
    per = distillation_loss(s, t, reduction="none")
    torch.testing.assert_close(distillation_loss(s, t, w, "none"), per * w)
    torch.testing.assert_close(distillation_loss(s, t, w, "sum"), (per * w).sum())
    torch.testing.assert_close(distillation_loss(s, t, w), (per * w).mean())
    with pytest.raises(ValueError, match="avg"):
        distillation_loss(s, t, reduction="avg")


def test_entropy_and_log_prob_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    torch.testing.assert_close(
        entropy(logits),
        torch.tensor([math.log(2.0), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))]),
    )
    lp = log_prob(logits, torch.tensor([1, 0]))
    torch.testing.assert_close(lp, torch.tensor([math.log(0.5), math.log(0.75)]))


def test_regularised_reward_by_hand():
    r = distral_regularised_reward(
        torch.tensor([1.0]), torch.tensor([-1.0]), torch.tensor([-0.25]), alpha=0.5, beta=2.0
    )
    # 1 + (0.5/2)(-1) - (1/2)(-0.25) = 0.875
    torch.testing.assert_close(r, torch.tensor([0.875]))
    shaped = distral_regularised_reward(
        torch.zeros(2, 3), -torch.ones(2, 3), -2 * torch.ones(2, 3), 1.0, 1.0
    )
    torch.testing.assert_close(shaped, torch.ones(2, 3))  # 0 + (-1) - (-2)


@pytest.mark.parametrize(("c_kl", "c_ent"), [(1.0, 0.0), (0.5, 0.5), (2.0, 0.25), (1e-3, 10.0)])
def test_alpha_beta_round_trip(c_kl, c_ent):
    alpha, beta = distral_coefficients(c_kl, c_ent)
    assert alpha == pytest.approx(c_kl / (c_kl + c_ent))
    assert beta == pytest.approx(1.0 / (c_kl + c_ent))
    back = distral_costs(alpha, beta)
    assert back == pytest.approx((c_kl, c_ent))
    assert distral_coefficients(*distral_costs(alpha, beta)) == pytest.approx((alpha, beta))


@pytest.mark.parametrize(
    ("alpha", "beta", "bad"),
    [
        (0.5, 0.0, "beta=0.0"),
        (0.5, -1.0, "beta=-1.0"),
        (0.0, 1.0, "alpha=0.0"),
        (1.5, 1.0, "alpha=1.5"),
    ],
)
def test_invalid_alpha_beta_raise(alpha, beta, bad):
    with pytest.raises(ValueError, match=bad):
        distral_costs(alpha, beta)
    with pytest.raises(ValueError, match=bad):
        distral_regularised_reward(torch.zeros(1), torch.zeros(1), torch.zeros(1), alpha, beta)


def test_invalid_costs_raise():
    with pytest.raises(ValueError, match="c_kl=0"):
        distral_coefficients(0.0, 1.0)
    with pytest.raises(ValueError, match="c_ent=-1"):
        distral_coefficients(1.0, -1.0)


def test_infinite_costs_and_beta_are_refused():
    # distral_coefficients(inf, 1) returned (nan, 0.0); distral_costs(1, inf) returned (0, 0)
    import math

    for bad in [(math.inf, 1.0), (1.0, math.inf)]:
        with pytest.raises(ValueError, match="finite"):
            distral_coefficients(*bad)
    with pytest.raises(ValueError, match="finite"):
        distral_costs(1.0, math.inf)


def test_masked_actions_count_as_zero_probability_not_nan():
    # logits -inf (a masked action): 0 * (-inf) made the sums and their gradients NaN
    inf = math.inf
    p = torch.tensor([[0.0, 1.0, -inf]], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([[1.0, 0.0, -inf]], dtype=torch.float64, requires_grad=True)
    p2, q2 = p.detach()[:, :2].requires_grad_(), q.detach()[:, :2].requires_grad_()
    for fn in (kl_divergence, distillation_loss):
        got, want = fn(p, q).sum(), fn(p2, q2).sum()  # the same as without the masked action
        assert got.item() == pytest.approx(want.item(), rel=1e-12)
        got.backward()
        want.backward()
        assert p.grad[0, 2] == 0 and torch.allclose(p.grad[:, :2], p2.grad)
        p.grad = q.grad = p2.grad = q2.grad = None
    assert entropy(p).item() == pytest.approx(entropy(p2).item(), rel=1e-12)
    # p > 0 where q = 0 is still an infinite divergence
    assert kl_divergence(torch.zeros(1, 2), torch.tensor([[0.0, -inf]])).item() == inf
