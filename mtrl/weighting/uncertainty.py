"""Homoscedastic uncertainty weighting: Kendall, Gal and Cipolla 2018, "Multi-Task Learning Using
Uncertainty to Weigh Losses for Scene Geometry and Semantics" (CVPR, arXiv:1705.07115)."""

from __future__ import annotations

import torch
from torch import Tensor

from mtrl.weighting.base import WEIGHTINGS, WeightedLoss


@WEIGHTINGS.register("uncertainty")
class Uncertainty(WeightedLoss):
    """``total = sum_i 0.5 exp(-s_i) L_i + 0.5 s_i`` with learned ``s_i = log sigma_i^2``.

    ``log_vars`` (T,) is an ``nn.Parameter``: put ``weighting.parameters()`` in your optimiser
    (the paper trains it jointly with the network). At the optimum ``exp(s_i) = L_i``, i.e.
    weight ``1 / (2 sigma_i^2)``. Returned weights are ``0.5 exp(-s_i)``.
    """

    def __init__(self, num_tasks: int, init_log_var: float = 0.0) -> None:
        super().__init__(num_tasks)
        self.log_vars = torch.nn.Parameter(torch.full((num_tasks,), float(init_log_var)))

    def combine(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        """losses (T,) -> (regularised weighted sum, weights 0.5 exp(-s) (T,))."""
        s = self.log_vars.to(losses.dtype)
        w = 0.5 * torch.exp(-s)
        return (w * losses + 0.5 * s).sum(), w
