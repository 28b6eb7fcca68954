"""Homoscedastic uncertainty weighting: Kendall, Gal and Cipolla 2018, "Multi-Task Learning Using
Uncertainty to Weigh Losses for Scene Geometry and Semantics" (CVPR, arXiv:1705.07115)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtrl.weighting.base import WEIGHTINGS, WeightedLoss


@WEIGHTINGS.register("uncertainty")
class Uncertainty(WeightedLoss):
    """``total = sum_i c_i exp(-s_i) L_i + 0.5 s_i`` with learned ``s_i = log sigma_i^2``.

    ``c_i = 0.5`` for a regression task (Gaussian likelihood, the paper's Eq. 5: weight
    ``1 / (2 sigma^2)``) and ``c_i = 1`` for the tasks listed in ``classification`` (softmax
    likelihood, Eq. 10: weight ``1 / sigma^2``); every task is regression by default.
    ``log_vars`` (T,) is an ``nn.Parameter``: put ``weighting.parameters()`` in your optimiser
    (the paper trains it jointly with the network). At the optimum ``exp(s_i) = 2 c_i L_i``, so
    either form weighs a task by ``1 / (2 L_i)``. Returned weights are ``c_i exp(-s_i)``.
    """

    scale: Tensor

    def __init__(
        self, num_tasks: int, init_log_var: float = 0.0, classification: Sequence[int] = ()
    ) -> None:
        super().__init__(num_tasks)
        self.log_vars = torch.nn.Parameter(torch.full((num_tasks,), float(init_log_var)))
        scale = torch.full((num_tasks,), 0.5)
        for i in classification:
            if not 0 <= i < num_tasks:
                raise ValueError(f"classification index {i} out of range for {num_tasks} tasks")
            scale[i] = 1.0
        # a choice of the caller's, not state: left out of state_dict (older checkpoints load)
        self.register_buffer("scale", scale, persistent=False)

    def combine(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        """losses (T,) -> (regularised weighted sum, weights c exp(-s) (T,))."""
        s = self.log_vars.to(losses.dtype)
        w = self.scale.to(s) * torch.exp(-s)
        return (w * losses + 0.5 * s).sum(), w
