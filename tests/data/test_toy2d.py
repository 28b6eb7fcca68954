"""CAGrad's two-objective 2-D toy (Liu et al. 2021): values, starting points, Pareto stationarity."""

import math

import torch

from mtrl.data import CAGRAD_STARTING_POINTS, STARTING_POINTS, is_pareto_stationary, toy_losses
from mtrl.data.toy2d import min_norm_two, pareto_stationarity


def test_values_by_hand():
    # At x2 = 0 both gates vanish.
    torch.testing.assert_close(toy_losses(torch.tensor([3.0, 0.0])), torch.zeros(2))
    # Deep in the lower half the quadratics rule: g1(7, -8) = -20, g2(7, -8) = 196/10 - 20.
    x = torch.tensor([7.0, -8.0], dtype=torch.float64)
    gate = math.tanh(4.0)
    expected = torch.tensor([-20.0 * gate, -0.4 * gate], dtype=torch.float64)
    torch.testing.assert_close(toy_losses(x), expected)
    # Upper half, x1 = 0: f1 = log|-3.5 - tanh(-x2)| + 6, symmetric with f2.
    x = torch.tensor([0.0, 20.0], dtype=torch.float64)
    f = math.log(2.5) + 6
    torch.testing.assert_close(
        toy_losses(x), torch.tensor([f, f], dtype=torch.float64) * math.tanh(10)
    )


def test_starting_points_and_batching():
    assert STARTING_POINTS.shape == (5, 2) and CAGRAD_STARTING_POINTS.shape == (3, 2)
    assert STARTING_POINTS[0].tolist() == [-8.5, 7.5]
    batched = toy_losses(STARTING_POINTS)
    assert batched.shape == (5, 2)
    torch.testing.assert_close(batched[2], toy_losses(STARTING_POINTS[2]))
    for x in STARTING_POINTS.double():
        assert not is_pareto_stationary(x)


def test_pareto_front_is_in_the_lower_half_and_the_plateau_is_only_numerically_stationary():
    # On the front: (0, -8.3551) between the two optima near (+-7, -8.43), both gradients oppose.
    front = torch.tensor([0.0, -8.3551], dtype=torch.float64)
    assert is_pareto_stationary(front, tol=1e-3)
    assert pareto_stationarity(torch.tensor([9.0, -8.4], dtype=torch.float64)) > 1e-2  # past x1=7
    # Far up the gates saturate: a tiny gradient, yet dominated by the front (losses 6.9 > -15).
    plateau = torch.tensor([0.0, 20.0], dtype=torch.float64)
    assert is_pareto_stationary(plateau, tol=1e-6)
    assert (toy_losses(plateau) > toy_losses(front) + 20).all()


def test_scale_multiplies_the_first_loss_only():
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    base, scaled = toy_losses(x), toy_losses(x, scale=0.1)
    torch.testing.assert_close(scaled, torch.stack([0.1 * base[0], base[1]]))
    # the front does not move: scaling one loss keeps its gradient's direction
    assert is_pareto_stationary(torch.tensor([0.0, -8.3551], dtype=torch.float64), scale=0.1)


def test_min_norm_two_by_hand():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(min_norm_two(g1, g2), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(min_norm_two(g1, -g1), torch.zeros(2))
    torch.testing.assert_close(min_norm_two(g1, 2 * g1), g1)


def test_off_minimum_values_and_the_log_floor():
    # lower half away from x2 = -8: the 0.1 (-x2 - 8)^2 term counts (0.1 * 16 = 1.6)
    x = torch.tensor([7.0, -4.0], dtype=torch.float64)
    gate = math.tanh(2.0)
    expected = torch.tensor([(1.6 / 10 - 20) * gate, ((196 + 1.6) / 10 - 20) * gate])
    torch.testing.assert_close(toy_losses(x), expected.double())
    # upper half where f1's argument is 0: log is floored at 5e-6
    x2 = 1.0
    x = torch.tensor([-7.0 - 2.0 * math.tanh(-x2), x2], dtype=torch.float64)
    assert math.isclose(toy_losses(x)[0].item(), (math.log(5e-6) + 6) * math.tanh(0.5))


def test_stationarity_test_uses_the_scaled_losses():
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    # scaling L1 by 0.1 shrinks the min-norm combination here from 1.40 to 0.15
    assert is_pareto_stationary(x, tol=0.5, scale=0.1)
    assert not is_pareto_stationary(x, tol=0.5)


def test_loss_bounds_hold_over_the_plane():
    from mtrl.data import toy_loss_bounds

    xs = torch.linspace(-12, 12, 241)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    for scale in (1.0, 0.1):
        losses = toy_losses(grid, scale)
        bounds = torch.tensor(toy_loss_bounds(scale))
        assert (losses > bounds).all()
        assert (losses.min(0).values - bounds < 0.05 * bounds.abs()).all()  # and they are tight
