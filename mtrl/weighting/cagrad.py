"""CAGrad (conflict-averse gradient descent): Liu et al. 2021, "Conflict-Averse Gradient Descent
for Multi-task Learning" (NeurIPS, arXiv:2110.14048), Algorithm 1."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mtrl.weighting.base import WEIGHTINGS, GradientAggregator
from mtrl.weighting.numerics import combine, gram_matrix, row_norms


def _project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``v`` (T,) onto the probability simplex (sort-based)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    ind = np.arange(1, v.shape[0] + 1)
    positive = ind[u - css / ind > 0]
    rho = positive[-1] if positive.size else 1  # >= 1 exactly; rounding can lose it
    return np.maximum(v - css[rho - 1] / rho, 0.0)


def _solve_dual_fista(
    a: np.ndarray,
    b: np.ndarray,
    sqrt_phi: float,
    gap_tol: float = 1e-11,
    max_iter: int = 2000,
    smooth: float = 1e-8,
) -> np.ndarray | None:
    """Accelerated projected gradient (FISTA with backtracking and restarts) on the simplex;
    returns ``w`` once the Frank-Wolfe duality gap (an upper bound on ``F(w) - F*``) is below
    ``gap_tol``, else ``None``. Milliseconds where SLSQP takes ~0.1 s at T = 40."""
    t = a.shape[0]

    def f(w: np.ndarray) -> float:
        return float(w @ b + sqrt_phi * np.sqrt(max(w @ a @ w, 0.0) + smooth))

    def grad(w: np.ndarray) -> np.ndarray:
        return b + sqrt_phi * (a @ w) / np.sqrt(max(w @ a @ w, 0.0) + smooth)

    w = np.full(t, 1.0 / t)
    y, fw, tk, lip = w.copy(), f(w), 1.0, 1.0
    for _ in range(max_iter):
        g = grad(w)
        if float(g @ w - g.min()) <= gap_tol * max(1.0, abs(fw)):
            return w
        gy, fy = grad(y), f(y)
        for _ in range(60):  # backtracking on the Lipschitz estimate
            z = _project_simplex(y - gy / lip)
            d = z - y
            fz = f(z)
            if fz <= fy + gy @ d + 0.5 * lip * (d @ d) + 1e-15:
                break
            lip *= 2.0
        if fz > fw:  # adaptive restart: drop the momentum
            y, tk = w.copy(), 1.0
            continue
        tn = (1.0 + np.sqrt(1.0 + 4.0 * tk * tk)) / 2.0
        y = z + ((tk - 1.0) / tn) * (z - w)
        w, fw, tk = z, fz, tn
        lip *= 0.9
    return None


def _polish(
    a: np.ndarray,
    b: np.ndarray,
    sqrt_phi: float,
    w: np.ndarray,
    gap_tol: float = 1e-12,
    smooth: float = 1e-8,
) -> np.ndarray | None:
    """Newton's method on the KKT system restricted to the support of ``w`` (an approximate
    solution): ``grad F_S(w) = lambda 1``, ``sum w = 1``; returns the exact optimum if it stays
    feasible and its duality gap is below ``gap_tol``, else ``None``."""
    support = np.flatnonzero(w > 1e-7 * w.max())
    x = np.zeros_like(w)
    x[support] = w[support] / w[support].sum()
    n = support.size
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, n] = kkt[n, :n] = 1.0
    for _ in range(30):
        aw = a @ x
        r = float(np.sqrt(max(x @ aw, 0.0) + smooth))
        g = b + sqrt_phi * aw / r
        lam = float(g[support].mean())
        gap = float(g @ x - g.min())
        if gap <= gap_tol * max(1.0, abs(float(x @ b) + sqrt_phi * r)):
            return x
        hess = sqrt_phi * (a / r - np.outer(aw, aw) / r**3)
        kkt[:n, :n] = hess[np.ix_(support, support)]
        rhs = np.concatenate([-(g[support] - lam), [0.0]])
        try:
            step = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:n]
        except np.linalg.LinAlgError:
            return None
        x[support] += step
        if (x[support] < 0).any():
            return None
        x /= x.sum()
    return None


def _solve_dual(a: np.ndarray, sqrt_phi: float) -> np.ndarray:
    """min over the simplex of ``w.A1/T + sqrt_phi sqrt(w A w)``: FISTA, then Newton on the
    KKT system of its support, accepted when the duality gap certifies it; else SLSQP (as the
    paper's code)."""
    t = a.shape[0]
    # F(w; sA) = s F(w; A) (sqrt_phi scales with sqrt(s)): solve the well-scaled problem.
    scale = max(float(np.trace(a)) / t, 1e-300)
    a, sqrt_phi = a / scale, sqrt_phi / np.sqrt(scale)
    b = a.mean(axis=1)
    # |g_w|^2 + smooth under the square root (the paper's code adds 1e-8): relative to the
    # smallest task's squared norm, not the mean's, which hid every task under 1e-8 of the mean
    # (norms 1e2 : 1 : 1e-2 lost the third: worst-task improvement 2% short of the optimum, 39%
    # at 1e3 : 1 : 1e-3). It keeps the problem smooth where 0 is in the hull (g_w* ~ 0).
    diag = np.diag(a)
    smooth = 1e-8 * float(diag[diag > 0].min(initial=1.0))
    start = _solve_dual_fista(a, b, sqrt_phi, gap_tol=1e-6, max_iter=500, smooth=smooth)
    fast = None if start is None else _polish(a, b, sqrt_phi, start, smooth=smooth)
    if fast is not None:
        return fast
    from scipy.optimize import minimize  # lazy: scipy is optional for the rest of mtrl

    def obj(w: np.ndarray) -> float:
        return float(w @ b + sqrt_phi * np.sqrt(max(w @ a @ w, 0.0) + smooth))

    def jac(w: np.ndarray) -> np.ndarray:
        return b + sqrt_phi * (a @ w) / np.sqrt(max(w @ a @ w, 0.0) + smooth)

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


def cagrad_weights(
    gram: Tensor, c: float = 0.5, rescale: bool = False, grads: Tensor | None = None
) -> Tensor:
    """Weights (T,) with ``d = w @ G`` from the Gram matrix (T, T).

    ``g0`` = mean gradient; dual ``w* = argmin_{w in simplex} g_w.g0 + c|g0| |g_w|``;
    ``d = g0 + (c|g0| / |g_w*|) g_w*``; ``rescale`` divides d by ``1 + c^2`` (paper's code option).
    ``|g_w*|`` is taken from the Gram matrix, or, given the gradients ``grads`` (T, P) and when
    it is under 3% of the norms it combines, from ``g_w*`` itself as the paper's code does: where
    0 is (nearly) in the hull of the gradients,
    ``|g_w*|^2`` from the Gram matrix is rounding noise (float32's: ~1e-7 of the squared norms),
    and so were the coefficients it gave (1e10 on two opposed float32 gradients, whose combined
    term cancels: rounding, or inf). ``g_w* = 0`` (under 10 ulps of the norms it combines; for
    the Gram, 1e-12 of them) gives ``d = g0``, as the paper's code does.
    """
    a = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    t = a.shape[0]
    coef = np.full(t, 1.0 / t)
    sqrt_phi = c * float(np.sqrt(max(a.mean(), 0.0)))
    if c > 0 and sqrt_phi > 0:
        w = _solve_dual(a, sqrt_phi)
        # Relative to the norms g_w combines (as the absolute 1e-12 was for unit gradients): that
        # took every g_w of gradients of norm 1e-12 or less for zero, whatever the conflict.
        size = float(w @ np.sqrt(np.clip(np.diag(a), 0.0, None)))
        gw_norm, rtol = float(np.sqrt(max(w @ a @ w, 0.0))), 1e-12
        if grads is not None and gw_norm < 0.03 * size:  # the Gram's value may be rounding
            gw = combine(torch.as_tensor(w), grads.detach())
            gw_norm = float(row_norms(gw[None])[0])
            rtol = 10 * torch.finfo(grads.dtype).eps
        if gw_norm > rtol * size:
            coef = coef + (sqrt_phi / gw_norm) * w
    if rescale:
        coef = coef / (1.0 + c * c)
    return torch.as_tensor(coef, dtype=gram.dtype, device=gram.device)


def cagrad(grads: Tensor, c: float = 0.5, rescale: bool = False) -> Tensor:
    """CAGrad direction (P,) for per-task gradients ``grads`` (T, P)."""
    return combine(cagrad_weights(gram_matrix(grads), c, rescale, grads), grads)


@WEIGHTINGS.register("cagrad")
class CAGrad(GradientAggregator):
    """CAGrad with radius ``c`` (0.5 default; ``c=0`` gives the mean gradient).

    Convention: ``g0`` is the *mean* of the task gradients (paper), so the update has the scale of
    the mean, not the sum. ``rescale=False`` follows Algorithm 1; ``True`` divides by ``1 + c^2``.
    The T-dimensional dual is solved by FISTA (certified by its duality gap), with scipy's SLSQP
    (imported lazily) as the fallback.
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
        return cagrad_weights(gram_matrix(grads), self.c, self.rescale, grads)
