"""MGDA-UB: Sener and Koltun 2018, "Multi-Task Learning as Multi-Objective Optimization"
(NeurIPS, arXiv:1810.04650): the min-norm point of the convex hull of the task gradients."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mtrl.weighting.base import WEIGHTINGS, GradientAggregator
from mtrl.weighting.numerics import combine, gram_matrix

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def _line_search(xx: float, xy: float, yy: float) -> float:
    """argmin over gamma in [0, 1] of |gamma x + (1 - gamma) y|^2 (Sener 2018, Algorithm 1)."""
    denom = xx + yy - 2.0 * xy
    if denom <= 1e-20 * (xx + yy):  # x = y (relative: two gradients 1e-10 of the largest)
        return 0.5
    return float(np.clip((yy - xy) / denom, 0.0, 1.0))


def min_norm_weights(gram: Tensor, max_iter: int = 250, tol: float = 1e-6) -> Tensor:
    """Simplex weights (T,) of the min-norm point of conv{g_i}, from the Gram matrix (T, T).

    T = 1, 2: exact closed form. T > 2: Wolfe's (1976) min-norm-point algorithm from the best
    pairwise solution; if it does not reach the optimality (KKT) condition, Frank-Wolfe with exact
    line search (Sener 2018, Alg. 2) stopped on the FW duality gap ``tol``, then Wolfe's
    corrections on the found support.
    """
    k = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    k = k / max(float(np.diag(k).max(initial=0.0)), 1e-300)  # the weights are scale-free
    t = k.shape[0]
    alpha = np.zeros(t)
    if t == 1:
        alpha[0] = 1.0
    elif t == 2:
        g = _line_search(k[0, 0], k[0, 1], k[1, 1])
        alpha[:] = (g, 1.0 - g)
    else:
        # every gradient in the support (common when they agree more than they conflict): the
        # affine hull's min-norm point is then inside the simplex, found in one solve where
        # Wolfe's cycles from a pair would add the T - 2 others one solve each
        full = _affine_min(k, list(range(t)), t)
        n = _sizes(k)
        if (full * n > 1e-12 * float(np.abs(full) @ n)).all() and _optimal(k, full, 1e-10):
            return torch.as_tensor(full, dtype=gram.dtype, device=gram.device)
        # best pair, vectorised: the line search of _line_search for every (i, j) at once
        xx, yy = np.diag(k)[:, None], np.diag(k)[None, :]
        denom = xx + yy - 2.0 * k
        same = denom <= 1e-20 * (xx + yy)
        gam = np.where(same, 0.5, np.clip((yy - k) / np.where(same, 1.0, denom), 0.0, 1.0))
        val = gam * gam * xx + 2 * gam * (1 - gam) * k + (1 - gam) ** 2 * yy
        val[np.tril_indices(t)] = np.inf
        i, j = np.unravel_index(int(np.argmin(val)), val.shape)
        alpha[i], alpha[j] = gam[i, j], 1.0 - gam[i, j]
        # Wolfe's exact min-norm-point algorithm from the best pair usually finishes in a few
        # major cycles; Frank-Wolfe (slow, O(1/k)) is only the fallback when it does not.
        exact = _refine(k, alpha, max_rounds=2 * t)
        if _optimal(k, exact, 1e-10):
            return torch.as_tensor(exact, dtype=gram.dtype, device=gram.device)
        for _ in range(max_iter):
            ka = k @ alpha
            s = int(np.argmin(ka))
            # x = g_s (vertex), y = current point G^T alpha
            if alpha @ ka - ka[s] <= tol * max(float(k.max()), 1e-300):  # FW duality gap
                break
            gamma = _line_search(float(k[s, s]), float(ka[s]), float(alpha @ ka))
            alpha = (1.0 - gamma) * alpha
            alpha[s] += gamma
        alpha = _refine(k, alpha, max_rounds=2 * t)
    return torch.as_tensor(alpha, dtype=gram.dtype, device=gram.device)


def _sizes(k: np.ndarray) -> np.ndarray:
    """The gradients' norms (T,), 1 for a zero gradient: the scale each weight is judged on."""
    n = np.sqrt(np.clip(np.diag(k), 0.0, None))
    return np.where(n > 0, n, 1.0)


def _optimal(k: np.ndarray, x: np.ndarray, rtol: float) -> bool:
    """KKT of the min-norm point: ``g_j . d >= |d|^2`` for every task j, up to ``rtol`` times
    the size of the terms of ``g_j . d`` (|g_j| sum_i x_i |g_i|): with one tolerance for all
    (relative to the largest Gram entry), tasks 1e8 times smaller than the largest could be
    left with g_j . d < 0 (MGDA's common descent direction increased their loss)."""
    n = _sizes(k)
    kx = k @ x
    return bool((kx + rtol * n * float(x @ n) >= float(x @ kx)).all())


def _affine_min(k: np.ndarray, support: list[int], t: int) -> np.ndarray:
    """Weights (T,) minimising ``a K a`` on the affine hull of the support (sum 1, 0 elsewhere).

    Solved for ``z = n a`` (n the norms) on the correlations ``K / n n^T``, the constraint
    ``sum a = 1`` scaled by ``min n`` (entries <= 1): the plain KKT system's least squares cut
    the singular values of gradients much smaller than the largest."""
    m = len(support)
    n = _sizes(k)[support]
    kkt = np.zeros((m + 1, m + 1))
    kkt[:m, :m] = k[np.ix_(support, support)] / np.outer(n, n)
    kkt[:m, m] = kkt[m, :m] = n.min() / n
    rhs = np.zeros(m + 1)
    rhs[m] = n.min()
    out = np.zeros(t)
    out[support] = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:m] / n
    return out


def _refine(k: np.ndarray, alpha: np.ndarray, max_rounds: int) -> np.ndarray:
    """Wolfe's (1976) exact min-norm-point iterations started from the Frank-Wolfe point: FW alone
    converges as O(1/k); this makes the result exact (KKT: ``(K a)_i >= a K a`` for all i)."""
    t = k.shape[0]
    # weights are judged by their share of the point, x_i |g_i| against sum_j x_j |g_j|: a
    # weight of 1e-16 on a gradient 1e8 times the others' is no rounding error
    n = _sizes(k)
    x = alpha.copy()
    support = [int(i) for i in np.flatnonzero(x * n > 1e-12 * float(x @ n))]
    for _ in range(max_rounds):
        for _ in range(t + 1):  # minor cycles: drop vertices with non-positive affine weight
            y = _affine_min(k, support, t)
            neg = [i for i in support if y[i] * n[i] <= 1e-14 * float(np.abs(y) @ n)]
            if not neg:
                break
            ratios = [(x[i] / (x[i] - y[i]), i) for i in neg if x[i] > y[i]]
            if not ratios:
                return alpha
            theta, first = min(ratios)
            x = x + min(max(theta, 0.0), 1.0) * (y - x)
            x[first] = 0.0
            x[x * n < 1e-14 * float(np.abs(x) @ n)] = 0.0
            support = [i for i in support if x[i] > 0]
            if not support:
                return alpha
        else:
            break
        x = np.clip(y, 0.0, None)
        x /= x.sum()
        kx = k @ x
        slack = 1e-12 * n * float(x @ n)  # see _optimal
        j = int(np.argmin(kx + slack))
        if kx[j] + slack[j] >= x @ kx or j in support:
            break
        support.append(j)
    return x if x @ k @ x <= alpha @ k @ alpha else alpha


def mgda(grads: Tensor) -> Tensor:
    """Min-norm element (P,) of the convex hull of the rows of ``grads`` (T, P)."""
    return combine(min_norm_weights(gram_matrix(grads)), grads)


def gradient_normalizers(
    grads: Tensor, losses: Tensor | None, kind: str, norms: Tensor | None = None
) -> Tensor:
    """Per-task scale (T,) dividing each gradient, as in the MGDA-UB code: 'none' -> 1,
    'l2' -> |g_i|, 'loss' -> L_i, 'loss+' -> L_i |g_i|. ``norms`` (T,): the gradients' norms if
    known (e.g. from :func:`~mtrl.weighting.numerics.gram_matrix`, which does not overflow)."""
    if norms is None:
        norms = grads.norm(dim=1)
    if kind == "none":
        return torch.ones_like(norms)
    if kind == "l2":
        return norms
    if losses is None:
        raise ValueError(f"normalization {kind!r} needs the losses")
    losses = losses.to(norms)
    if kind == "loss":
        return losses
    if kind == "loss+":
        return losses * norms
    raise ValueError(f"unknown normalization {kind!r}; valid: {', '.join(NORMALIZATIONS)}")


@WEIGHTINGS.register("mgda")
class MGDA(GradientAggregator):
    """MGDA(-UB) weighting: min-norm weights of (optionally normalised) task gradients.

    As in the paper's code, the weights found on the normalised gradients ``g_i / n_i`` are applied
    to the *original* gradients (``sum_i w_i g_i``, weights sum to 1). ``normalization`` is one of
    'none' (default), 'l2', 'loss', 'loss+'. With ``features=`` this is MGDA-UB proper (gradients
    w.r.t. the shared representation).
    """

    def __init__(
        self,
        num_tasks: int,
        normalization: str = "none",
        max_iter: int = 250,
        tol: float = 1e-6,
        batched: bool = False,
    ) -> None:
        super().__init__(num_tasks, batched=batched)
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"unknown normalization {normalization!r}; valid: {', '.join(NORMALIZATIONS)}"
            )
        self.normalization = normalization
        self.max_iter = max_iter
        self.tol = tol

    def weights(self, grads: Tensor, losses: Tensor | None = None) -> Tensor:
        """grads (T, P), losses (T,) -> simplex weights (T,)."""
        gram = gram_matrix(grads)
        if self.normalization != "none":  # Gram of g_i / n_i without copying G (T, P)
            norms = torch.diagonal(gram).sqrt()
            scale = gradient_normalizers(grads, losses, self.normalization, norms)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            gram = gram / (scale[:, None] * scale[None, :])
        return min_norm_weights(gram, self.max_iter, self.tol)
