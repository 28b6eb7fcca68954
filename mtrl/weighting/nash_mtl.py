"""Nash-MTL: Navon et al. 2022, "Multi-Task Learning as a Bargaining Game" (ICML,
arXiv:2202.01017): the Nash bargaining solution ``G G^T alpha = 1 / alpha``."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mtrl.weighting.base import WEIGHTINGS, GradientAggregator
from mtrl.weighting.numerics import combine, gram_matrix, nonzero_rows


def nash_weights(
    gram: Tensor,
    normalize: bool = False,
    max_iter: int = 100,
    tol: float = 1e-10,
    ridge: float = 1e-8,
) -> Tensor:
    """Solve ``K alpha = 1 / alpha``, ``alpha > 0`` for ``K = G G^T`` (T, T); returns alpha (T,).

    It is the stationarity condition of the strictly convex ``f(a) = a^T K a / 2 - sum log a_i``,
    minimised here by damped Newton (self-concordant step ``1 / (1 + lambda)``, which keeps
    ``a > 0``), instead of the paper's CCP sequence solved with cvxpy. ``normalize`` solves on
    ``K / |K|_F`` as the authors' code does (same direction, larger step). A ridge (relative to the
    task's squared gradient norm) keeps the problem bounded if the gradients are linearly
    dependent, e.g. exactly opposed at a Pareto point (the paper assumes they are not; then alpha
    can be large but ``|d| <= sqrt(T)`` still), also where the Gram matrix's rounding made it
    slightly indefinite. Two tasks are solved in closed form. Tasks with a zero gradient get
    weight 0.
    """
    full = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    out = np.zeros(full.shape[0])
    rows = nonzero_rows(full)  # a zero gradient cannot satisfy the equation: weight 0
    if rows.size == 0 or not np.isfinite(full).all():
        return torch.as_tensor(out, dtype=gram.dtype, device=gram.device)
    k = full[np.ix_(rows, rows)]
    t = k.shape[0]
    # Solve on C = D^-1/2 K D^-1/2 (unit diagonal, D = diag K), then alpha = D^-1/2 a:
    # K alpha = 1/alpha exactly. Per task, not by one mean scale: a ridge relative to the mean
    # squared norm swamped the tasks with small gradients (norms 1e4 : 1 gave alpha 18% off).
    norms = np.sqrt(np.diag(k))
    kn = k / np.outer(norms, norms)
    # The Gram matrix of float32 gradients is rounded in float32: for (nearly) dependent gradients
    # C can come out slightly indefinite, and then f is unbounded below (Newton ran to max_iter
    # and returned whatever it reached). Its spectrum is shifted so the smallest eigenvalue is at
    # least the ridge, as for exact dependent gradients.
    low = float(np.linalg.eigvalsh(kn)[0])
    kn = kn + (ridge + max(0.0, -low)) * np.eye(t)
    if t == 2 and kn[0, 0] + kn[0, 1] > 0:
        # two tasks in closed form: C's diagonal entries are equal, so the unique solution is
        # symmetric, a1 = a2 = 1 / sqrt(C11 + C12), with no Newton iterations (on the 2-D toy their
        # numpy calls were about half of a training step)
        a = np.full(2, 1.0 / np.sqrt(kn[0, 0] + kn[0, 1]))
    else:
        a = _newton(kn, max_iter, tol)
    a = a / norms
    if normalize:
        a = a * np.sqrt(np.linalg.norm(k))
    out[rows] = a
    return torch.as_tensor(out, dtype=gram.dtype, device=gram.device)


def _newton(kn: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    """``a > 0`` with ``kn a = 1 / a`` by damped Newton on ``a^T kn a / 2 - sum log a_i``."""
    a = 1.0 / np.sqrt(np.diag(kn))
    eye = np.eye(kn.shape[0])
    for _ in range(max_iter):
        kna = kn @ a
        if np.max(np.abs(a * kna - 1.0)) < tol:
            break
        grad = kna - 1.0 / a
        # Newton system H step = -grad with H = K + diag(1/a^2), solved in the variables a-scaled
        # (diag(a) H diag(a) = diag(a) K diag(a) + I is well conditioned near the solution).
        y = np.linalg.solve(a[:, None] * kn * a[None, :] + eye, -a * grad)
        step = a * y
        lam = float(np.sqrt(max(float(-grad @ step), 0.0)))  # Newton decrement
        size = 1.0 if lam < 0.25 else 1.0 / (1.0 + lam)
        while np.any(a + size * step <= 0):
            size *= 0.5
        a = a + size * step
    return a


def nash_mtl(grads: Tensor, normalize: bool = False) -> Tensor:
    """Nash-MTL direction ``d = sum alpha_i g_i`` (P,) for ``grads`` (T, P)."""
    return combine(nash_weights(gram_matrix(grads), normalize), grads)


@WEIGHTINGS.register("nash_mtl")
class NashMTL(GradientAggregator):
    """Nash-MTL: ``d = G^T alpha`` with ``G G^T alpha = 1/alpha``.

    With the paper's exact equation ``|d|^2 = sum_i alpha_i (K alpha)_i = T``: the update always
    has norm sqrt(T), whatever the loss scale. ``normalize=True`` reproduces the authors' code
    (alpha solved on ``K / |K|_F``, so ``|d| = sqrt(T |K|_F)``); they also clip the update norm
    (``max_norm=1``), which here is the caller's gradient clipping.
    """

    def __init__(
        self, num_tasks: int, normalize: bool = False, max_iter: int = 100, batched: bool = False
    ) -> None:
        super().__init__(num_tasks, batched=batched)
        self.normalize = normalize
        self.max_iter = max_iter
        self.scale_invariant = not normalize  # |d| = sqrt(T); normalize=True: grows with G

    def weights(self, grads: Tensor, losses: Tensor | None = None) -> Tensor:
        """grads (T, P) -> alpha (T,), positive."""
        return nash_weights(gram_matrix(grads), self.normalize, self.max_iter)
