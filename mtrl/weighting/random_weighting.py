"""Random loss weighting (RLW): Lin et al. 2021, "Reasonable Effectiveness of Random Weighting:
A Litmus Test for Multi-Task Learning" (arXiv:2111.10603)."""

from __future__ import annotations

import torch
from torch import Tensor

from mtrl.weighting.base import WEIGHTINGS, SeededMixin, WeightedLoss


@WEIGHTINGS.register("random")
class RandomWeighting(SeededMixin, WeightedLoss):
    """Each step ``w = softmax(z)``, ``z ~ N(0, I_T)``; ``total = sum_i w_i L_i``.

    As in the paper the weights sum to 1 (no factor T). Draws come from an own CPU generator
    seeded by ``seed`` (``None``: drawn from torch's global RNG); its state is checkpointed.
    """

    def __init__(self, num_tasks: int, seed: int | None = None) -> None:
        super().__init__(num_tasks)
        self._init_generator(seed)

    def combine(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        """losses (T,) -> (weighted sum, weights (T,) summing to 1)."""
        z = torch.randn(self.num_tasks, generator=self.generator, dtype=torch.float64)
        # to a GPU without waiting for it (a blocking copy stalls the stream every step); the
        # source is pageable, so the copy has read it when it returns
        gpu = losses.device.type != "cpu"
        w = torch.softmax(z, 0).to(device=losses.device, dtype=losses.dtype, non_blocking=gpu)
        return (w * losses).sum(), w
