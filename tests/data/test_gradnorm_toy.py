"""GradNorm toy regression data (Chen et al. 2018): shapes, scales, determinism."""

import pytest
import torch

from mtrl.data import make_gradnorm_toy
from mtrl.data.gradnorm_toy import default_sigmas


def test_shapes_and_formula():
    d = make_gradnorm_toy(num_tasks=2, n_train=64, n_test=16, seed=3)
    assert d["x_train"].shape == (64, 250) and d["y_train"].shape == (64, 2, 100)
    assert d["x_test"].shape == (16, 250) and d["y_test"].shape == (16, 2, 100)
    assert d["B"].shape == (100, 250) and d["eps"].shape == (2, 100, 250)
    torch.testing.assert_close(d["x_train"].norm(dim=1), torch.ones(64))
    x = d["x_train"][5]
    for t, sigma in enumerate([1.0, 100.0]):
        expected = sigma * torch.tanh((d["B"] + d["eps"][t]) @ x)
        torch.testing.assert_close(d["y_train"][5, t] / sigma, expected / sigma, rtol=0, atol=1e-5)
    # output scales follow sigma_i (|y| <= sigma_i)
    assert d["y_train"][:, 0].abs().max() <= 1.0 + 1e-6
    assert d["y_train"][:, 1].abs().max() > 10.0


def test_determinism_and_seed_dependence():
    a = make_gradnorm_toy(num_tasks=3, n_train=8, n_test=4, seed=1)
    b = make_gradnorm_toy(num_tasks=3, n_train=8, n_test=4, seed=1)
    c = make_gradnorm_toy(num_tasks=3, n_train=8, n_test=4, seed=2)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["y_train"], c["y_train"])


def test_sigmas_defaults_and_validation():
    assert default_sigmas(2) == [1.0, 100.0]
    s10 = default_sigmas(10)
    assert len(s10) == 10 and s10[0] == pytest.approx(1.0) and s10[-1] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="expected num_tasks=3"):
        make_gradnorm_toy(num_tasks=3, sigmas=[1.0, 2.0])


def test_test_set_does_not_depend_on_the_training_budget():
    small = make_gradnorm_toy(2, n_train=100, n_test=50, seed=3)
    large = make_gradnorm_toy(2, n_train=400, n_test=50, seed=3)
    assert torch.equal(small["x_test"], large["x_test"])
    assert torch.equal(small["y_test"], large["y_test"])
    assert torch.equal(small["x_train"], large["x_train"][:100])
    other = make_gradnorm_toy(2, n_train=100, n_test=50, seed=4)
    assert not torch.equal(small["x_test"], other["x_test"])


def test_scales_of_b_eps_and_x_follow_the_paper():
    d = make_gradnorm_toy(num_tasks=2, n_train=64, n_test=4, seed=0)
    # B ~ N(0, 10) and eps_i ~ N(0, 3.5) read as standard deviations (25,000 draws each per task)
    assert d["B"].std().item() == pytest.approx(10.0, rel=0.03)
    assert d["eps"][0].std().item() == pytest.approx(3.5, rel=0.03)
    assert not torch.equal(d["eps"][0], d["eps"][1])  # eps_i is task-specific
    # x uniform in [-1, 1]^250 before normalisation: about half of the coordinates are negative
    assert 0.45 < (d["x_train"] < 0).float().mean().item() < 0.55
