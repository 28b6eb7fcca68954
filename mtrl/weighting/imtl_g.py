"""IMTL-G (impartial MTL, gradient part): Liu et al. 2021, "Towards Impartial Multi-task
Learning" (ICLR), Section 3.2, closed form."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mtrl.weighting.base import WEIGHTINGS, GradientAggregator
from mtrl.weighting.numerics import combine, gram_matrix, nonzero_rows


def imtl_g_weights(gram: Tensor, eps: float = 0.0) -> Tensor:
    """Weights ``alpha`` (T,), summing to 1, from the Gram matrix (T, T).

    ``g = sum alpha_i g_i`` has equal projections on all unit gradients ``u_i = g_i/|g_i|``:
    ``K alpha = lambda n`` (n_i = |g_i|). Solved on the correlations ``C = K / n n^T`` (unit
    diagonal, well conditioned whatever the tasks' scales): ``C beta = 1``, ``alpha ~ beta / n``.
    If ``C`` is singular, the paper's form: with ``D = [g_1 - g_i]``, ``U = [u_1 - u_i]``
    (i = 2..T), ``alpha_{2:T} = g_1 U^T (D U^T)^-1`` and ``alpha_1 = 1 - sum alpha_{2:T}`` (least
    squares). Tasks with a zero gradient get weight 0. ``eps``: a floor on the squared norms (0;
    an absolute 1e-12 floor distorted every gradient of norm under 1e-6).
    """
    full = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    alpha = np.zeros(full.shape[0])
    rows = nonzero_rows(full)  # zero gradients have no direction: weight 0, solve on the rest
    if rows.size <= 1:
        alpha[rows] = 1.0
        return torch.as_tensor(alpha, dtype=gram.dtype, device=gram.device)
    k = full[np.ix_(rows, rows)]
    n = np.sqrt(np.clip(np.diag(k), eps, None))
    corr = k / np.outer(n, n)
    # The difference form's alpha_1 = 1 - sum(rest) cancels catastrophically when the tasks'
    # scales differ (1e8 : 1 : 1e-8 gave the largest task alone); C has a unit diagonal.
    if np.linalg.cond(corr) < 1e12:
        beta = np.linalg.solve(corr, np.ones(rows.size)) / n
        if beta.sum() != 0 and np.isfinite(beta).all():
            alpha[rows] = beta / beta.sum()
            return torch.as_tensor(alpha, dtype=gram.dtype, device=gram.device)
    ku = k / n[None, :]  # ku[a, b] = g_a . u_b
    # DU^T[i, j] = (g_1 - g_i).(u_1 - u_j), for i, j = 2..T; v[j] = g_1.(u_1 - u_j)
    du = ku[0, 0] - ku[0, 1:][None, :] - ku[1:, 0][:, None] + ku[1:, 1:]
    v = ku[0, 0] - ku[0, 1:]
    rest = np.linalg.lstsq(du.T, v, rcond=None)[0]  # row vector: rest @ du = v
    alpha[rows] = np.concatenate([[1.0 - rest.sum()], rest])
    return torch.as_tensor(alpha, dtype=gram.dtype, device=gram.device)


def imtl_g(grads: Tensor) -> Tensor:
    """IMTL-G direction (P,) for per-task gradients ``grads`` (T, P)."""
    return combine(imtl_g_weights(gram_matrix(grads)), grads)


@WEIGHTINGS.register("imtl_g")
class IMTLG(GradientAggregator):
    """IMTL-G: the aggregated gradient projects equally on every task's unit gradient.

    Weights sum to 1 (paper). The paper applies it to the shared representation (``features=``)
    or, equally valid, to the shared parameters.
    """

    def weights(self, grads: Tensor, losses: Tensor | None = None) -> Tensor:
        """grads (T, P) -> weights (T,) summing to 1."""
        return imtl_g_weights(gram_matrix(grads))
