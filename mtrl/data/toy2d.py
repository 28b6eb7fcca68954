"""The two-objective 2-D toy problem of CAGrad (Liu et al. 2021, "Conflict-Averse Gradient Descent
for Multi-task Learning", Appendix), reused by Nash-MTL (Navon et al. 2022) and FAMO (Liu et al. 2023).

Two losses over x = (x1, x2) in R^2. For x2 > 0 each is a log-valley f_i (minimised along a curve),
for x2 < 0 a wide quadratic g_i; tanh gates blend the two. The Pareto set is a curve in the lower
half, from task 1's optimum near (7, -8.43) through (0, -8.36) to task 2's near (-7, -8.43); equal
weighting stalls where the gradients conflict, MGDA/CAGrad/Nash-MTL reach the front. Far up
(x2 >> 0) the tanh gates saturate and every gradient vanishes, so points there are only
*numerically* stationary: check the losses too, not stationarity alone. Nash-MTL's and FAMO's
experiments scale L1 by 0.1 (``scale``); CAGrad's use 1.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_LOWER = 5e-6  # floor inside the log, as in the paper

#: The five starting points used by Nash-MTL and FAMO, ``(5, 2)``.
STARTING_POINTS = torch.tensor([[-8.5, 7.5], [0.0, 0.0], [9.0, 9.0], [-7.5, -0.5], [9.0, -1.0]])
#: The three starting points of the CAGrad paper's Figure 1, ``(3, 2)``.
CAGRAD_STARTING_POINTS = torch.tensor([[-8.5, 7.5], [-8.5, -5.0], [9.0, 9.0]])


def toy_losses(x: Tensor, scale: float = 1.0) -> Tensor:
    """Both objectives ``(2,)`` at a point ``x (2,)`` (differentiable; batched ``(..., 2)`` too);
    ``scale`` multiplies L1 (0.1 in Nash-MTL's and FAMO's toy experiments).

    f1 = log(max(|0.5(-x1 - 7) - tanh(-x2)|, 5e-6)) + 6,
    f2 = log(max(|0.5(-x1 + 3) + tanh(-x2) + 2|, 5e-6)) + 6,
    g1 = ((-x1 + 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20,  g2 = ((-x1 - 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20,
    L_i = f_i max(tanh(x2 / 2), 0) + g_i max(tanh(-x2 / 2), 0).
    """
    x1, x2 = x[..., 0], x[..., 1]
    th = torch.tanh(-x2)
    f1 = torch.log(torch.clamp((0.5 * (-x1 - 7.0) - th).abs(), min=_LOWER)) + 6.0
    f2 = torch.log(torch.clamp((0.5 * (-x1 + 3.0) + th + 2.0).abs(), min=_LOWER)) + 6.0
    quad = 0.1 * (-x2 - 8.0) ** 2
    g1 = ((-x1 + 7.0) ** 2 + quad) / 10.0 - 20.0
    g2 = ((-x1 - 7.0) ** 2 + quad) / 10.0 - 20.0
    up = torch.clamp(torch.tanh(0.5 * x2), min=0.0)
    down = torch.clamp(torch.tanh(-0.5 * x2), min=0.0)
    return torch.stack([scale * (f1 * up + g1 * down), f2 * up + g2 * down], dim=-1)


def toy_loss_bounds(scale: float = 1.0) -> list[float]:
    """Lower bounds of the two losses (e.g. FAMO's ``min_losses``): each L_i > -20, the g_i's
    offset (f_i >= log(5e-6) + 6 > -20 and the gates lie in [0, 1]); L1 scaled by ``scale``."""
    return [-20.0 * scale, -20.0]


def toy_gradients(x: Tensor, scale: float = 1.0) -> Tensor:
    """Per-objective gradients ``(2, 2)`` (row i = grad L_i) at a point ``x (2,)``."""
    point = x.detach().clone().requires_grad_(True)
    losses = toy_losses(point, scale)
    rows = [torch.autograd.grad(losses[i], point, retain_graph=True)[0] for i in range(2)]
    return torch.stack(rows)


def min_norm_two(g1: Tensor, g2: Tensor) -> Tensor:
    """Min-norm point of the segment between two gradients (closed-form MGDA for two tasks,
    Sener and Koltun 2018): w* = clip(((g2 - g1) . g2) / ||g1 - g2||^2, 0, 1), d = w g1 + (1-w) g2."""
    diff = g1 - g2
    denom = diff.dot(diff)
    if denom <= 0:
        return g1.clone()
    w = torch.clamp((g2 - g1).dot(g2) / denom, 0.0, 1.0)
    return w * g1 + (1 - w) * g2


def pareto_stationarity(x: Tensor, scale: float = 1.0) -> float:
    """Norm of the min-norm convex combination of the two gradients at ``x (2,)``; 0 iff
    Pareto-stationary (no common descent direction exists). Also near 0 on the saturated plateau
    far up (x2 >> 0), which is not on the Pareto front (see the module docstring)."""
    g = toy_gradients(x, scale)
    return float(min_norm_two(g[0], g[1]).norm())


def is_pareto_stationary(x: Tensor, tol: float = 1e-3, scale: float = 1.0) -> bool:
    """Whether ``x (2,)`` is (near) Pareto-stationary: :func:`pareto_stationarity` <= ``tol``."""
    return pareto_stationarity(x, scale) <= tol


def pareto_front(scale: float = 1.0, extent: float = 10.0, resolution: int = 401) -> Tensor:
    """The Pareto front in loss space, approximated: the non-dominated ``(L1, L2)`` pairs of a
    ``resolution`` x ``resolution`` grid over ``[-extent, extent]^2``, ``(M, 2)`` sorted by L1
    (increasing; L2 then decreases). For figures, not for checking optimality: a grid point can
    miss the front by about the grid spacing's effect on the losses."""
    axis = torch.linspace(-extent, extent, resolution, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)
    losses = toy_losses(grid, scale)
    # sort by L1, ties by L2: a point is non-dominated iff its L2 is below every earlier one's
    order = torch.from_numpy(np.lexsort((losses[:, 1].numpy(), losses[:, 0].numpy())))
    ranked = losses[order]
    earlier = torch.cat([ranked.new_full((1,), float("inf")), ranked[:-1, 1]])
    keep = ranked[:, 1] < torch.cummin(earlier, dim=0).values
    return ranked[keep]
