"""Equal weighting: the plain sum of the task losses (the usual multi-task baseline)."""

from __future__ import annotations

from torch import Tensor

from mtrl.weighting.base import WEIGHTINGS, WeightedLoss


@WEIGHTINGS.register("equal")
class Equal(WeightedLoss):
    """``total = sum_i L_i`` (weights all 1); see Ruder 2017, "An Overview of Multi-Task Learning"."""

    def combine(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        """losses (T,) -> (sum, ones (T,))."""
        return losses.sum(), losses.new_ones(losses.shape)
