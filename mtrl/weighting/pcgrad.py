"""PCGrad (projecting conflicting gradients): Yu et al. 2020, "Gradient Surgery for Multi-Task
Learning" (NeurIPS, arXiv:2001.06782), Algorithm 1."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mtrl.weighting.base import WEIGHTINGS, GradientAggregator, SeededMixin
from mtrl.weighting.numerics import combine, gram_matrix


def pcgrad_weights(gram: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Weights ``w`` (T,) with ``sum_i g_i^PC = w @ G`` from the Gram matrix ``G G^T`` (T, T).

    For each task i and the other tasks j in a random order: if ``g_i^PC . g_j < 0`` then
    ``g_i^PC -= (g_i^PC . g_j / |g_j|^2) g_j``. Tracked as coefficients over the original rows.
    """
    k = gram.detach().to(device="cpu", dtype=torch.float64).numpy()  # numpy: cheap scalar ops
    t = k.shape[0]
    diag = np.diag(k)
    total = np.zeros(t)
    for i in range(t):
        coef = np.zeros(t)
        coef[i] = 1.0
        for j in torch.randperm(t, generator=generator).tolist():
            if j == i or diag[j] <= 0:
                continue
            dot = coef @ k[:, j]
            if dot < 0:
                coef[j] -= dot / diag[j]
        total += coef
    return torch.as_tensor(total, dtype=gram.dtype, device=gram.device)


def pcgrad(grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """PCGrad update (P,) for per-task gradients ``grads`` (T, P): sum of projected gradients."""
    return combine(pcgrad_weights(gram_matrix(grads), generator), grads)


@WEIGHTINGS.register("pcgrad")
class PCGrad(SeededMixin, GradientAggregator):
    """PCGrad on the shared parameters (or features). ``reduction='sum'`` (paper) or ``'mean'``.

    The random task order comes from an own generator seeded by ``seed`` (checkpointed).
    """

    def __init__(
        self, num_tasks: int, seed: int | None = 0, reduction: str = "sum", batched: bool = False
    ) -> None:
        super().__init__(num_tasks, batched=batched)
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.reduction = reduction
        self._init_generator(seed)

    def weights(self, grads: Tensor, losses: Tensor | None = None) -> Tensor:
        """grads (T, P) -> weights (T,)."""
        w = pcgrad_weights(gram_matrix(grads), self.generator)
        w = w / self.num_tasks if self.reduction == "mean" else w
        return w
