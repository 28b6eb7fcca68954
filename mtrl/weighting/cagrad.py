"""CAGrad (conflict-averse gradient descent): Liu et al. 2021, "Conflict-Averse Gradient Descent
for Multi-task Learning" (NeurIPS, arXiv:2110.14048), Algorithm 1."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mtrl.weighting.base import WEIGHTINGS, GradientAggregator


def _solve_dual(a: np.ndarray, sqrt_phi: float) -> np.ndarray:
    """min over the simplex of ``w.A1/T + sqrt_phi sqrt(w A w)`` (SLSQP, as the paper's code)."""
    from scipy.optimize import minimize  # lazy: scipy is optional for the rest of mtrl

    t = a.shape[0]
    # F(w; sA) = s F(w; A) (sqrt_phi scales with sqrt(s)): solve the well-scaled problem.
    scale = max(float(np.trace(a)) / t, 1e-300)
    a, sqrt_phi = a / scale, sqrt_phi / np.sqrt(scale)
    b = a.mean(axis=1)

    def obj(w: np.ndarray) -> float:
        return float(w @ b + sqrt_phi * np.sqrt(w @ a @ w + 1e-8))

    def jac(w: np.ndarray) -> np.ndarray:
        return b + sqrt_phi * (a @ w) / np.sqrt(w @ a @ w + 1e-8)

    res = minimize(
        obj,
        np.full(t, 1.0 / t),
        jac=jac,
        bounds=[(0.0, 1.0)] * t,
        constraints={"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(t)},
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 200},
    )
    w = np.clip(res.x, 0.0, None)
    return w / w.sum()


def cagrad_weights(gram: Tensor, c: float = 0.5, rescale: bool = False) -> Tensor:
    """Weights (T,) with ``d = w @ G`` from the Gram matrix (T, T).

    ``g0`` = mean gradient; dual ``w* = argmin_{w in simplex} g_w.g0 + c|g0| |g_w|``;
    ``d = g0 + (c|g0| / |g_w*|) g_w*``; ``rescale`` divides d by ``1 + c^2`` (paper's code option).
    """
    a = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    t = a.shape[0]
    coef = np.full(t, 1.0 / t)
    sqrt_phi = c * float(np.sqrt(max(a.mean(), 0.0)))
    if c > 0 and sqrt_phi > 0:
        w = _solve_dual(a, sqrt_phi)
        gw_norm = float(np.sqrt(max(w @ a @ w, 0.0)))
        if gw_norm > 1e-12:
            coef = coef + (sqrt_phi / gw_norm) * w
    if rescale:
        coef = coef / (1.0 + c * c)
    return torch.as_tensor(coef, dtype=gram.dtype, device=gram.device)


def cagrad(grads: Tensor, c: float = 0.5, rescale: bool = False) -> Tensor:
    """CAGrad direction (P,) for per-task gradients ``grads`` (T, P)."""
    return cagrad_weights(grads @ grads.T, c, rescale) @ grads


@WEIGHTINGS.register("cagrad")
class CAGrad(GradientAggregator):
    """CAGrad with radius ``c`` (0.5 default; ``c=0`` gives the mean gradient).

    Convention: ``g0`` is the *mean* of the task gradients (paper), so the update has the scale of
    the mean, not the sum. ``rescale=False`` follows Algorithm 1; ``True`` divides by ``1 + c^2``.
    Needs scipy (imported lazily) for the T-dimensional dual.
    """

    def __init__(
        self, num_tasks: int, c: float = 0.5, rescale: bool = False, batched: bool = False
    ) -> None:
        super().__init__(num_tasks, batched=batched)
        if c < 0:
            raise ValueError(f"c must be >= 0, got {c}")
        self.c = c
        self.rescale = rescale

    def weights(self, grads: Tensor, losses: Tensor | None = None) -> Tensor:
        """grads (T, P) -> weights (T,)."""
        return cagrad_weights(grads @ grads.T, self.c, self.rescale)
