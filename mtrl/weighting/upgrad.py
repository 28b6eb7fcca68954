"""UPGrad (unconflicting projection of gradients): Quinton and Rey 2024, "Jacobian Descent for
Multi-Objective Optimization" (arXiv:2406.16232)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mtrl.weighting.base import WEIGHTINGS, GradientAggregator
from mtrl.weighting.numerics import combine, gram_matrix


def dual_cone_weights(gram: Tensor) -> Tensor:
    """Matrix ``V`` (T, T) whose row i gives ``proj(g_i) = V[i] @ G``, the projection of ``g_i``
    onto the dual cone ``{x : G x >= 0}``: ``V[i] = argmin_{v >= e_i} v^T K v`` (K = G G^T).

    Substituting ``v = e_i + u``, ``u >= 0``, and ``K = A^T A`` (A from the eigendecomposition)
    turns each into a T-dimensional non-negative least squares, solved exactly (scipy, lazily).
    """
    from scipy.optimize import nnls  # lazy: scipy is optional for the rest of mtrl

    k = gram.detach().to(device="cpu", dtype=torch.float64)
    t = k.shape[0]
    # torch's eigh (honours torch.set_num_threads; numpy's threaded LAPACK can be 100x slower
    # on a busy machine for this tiny matrix)
    vals, vecs = torch.linalg.eigh((k + k.T) / 2)
    a = (vals.clamp_min(0.0).sqrt()[:, None] * vecs.T).numpy()  # A^T A = K
    out = np.eye(t)
    for i in range(t):
        u, _ = nnls(a, -a[:, i])
        out[i] += u
    return torch.as_tensor(out, dtype=gram.dtype, device=gram.device)


def upgrad_weights(gram: Tensor) -> Tensor:
    """Weights (T,) of the mean of the dual-cone projections of the task gradients."""
    return dual_cone_weights(gram).mean(0)


def upgrad(grads: Tensor) -> Tensor:
    """UPGrad direction (P,) for per-task gradients ``grads`` (T, P); ``grads @ d >= 0``."""
    return combine(upgrad_weights(gram_matrix(grads)), grads)


@WEIGHTINGS.register("upgrad")
class UPGrad(GradientAggregator):
    """UPGrad: average of each task gradient projected onto the dual cone of all of them, so no
    task's loss increases to first order. Equals the mean gradient when no pair conflicts.
    Convention: mean of the projections (torchjd's default), i.e. the scale of the mean gradient.
    Needs scipy (imported lazily).
    """

    def weights(self, grads: Tensor, losses: Tensor | None = None) -> Tensor:
        """grads (T, P) -> weights (T,)."""
        return upgrad_weights(gram_matrix(grads))
