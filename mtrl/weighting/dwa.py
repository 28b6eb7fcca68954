"""Dynamic Weight Average: Liu, Johns and Davison 2019, "End-to-End Multi-Task Learning with
Attention" (CVPR, arXiv:1803.10704), Eq. 7."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mtrl.weighting.base import WEIGHTINGS, WeightedLoss


@WEIGHTINGS.register("dwa")
class DWA(WeightedLoss):
    """``w_i = T softmax_i(r_i / temp)``, ``r_i = Lbar_i(e-1) / Lbar_i(e-2)`` over epochs.

    ``Lbar_i(e)`` is the mean of the losses passed to :meth:`backward` during epoch ``e``. Epochs
    end when the caller calls :meth:`epoch_end` or, if ``steps_per_epoch`` is given, automatically
    after that many :meth:`backward` calls. During the first two epochs the weights are 1.
    """

    epoch_sum: Tensor
    epoch_steps: Tensor
    history: Tensor
    epochs: Tensor

    def __init__(self, num_tasks: int, temp: float = 2.0, steps_per_epoch: int | None = None):
        super().__init__(num_tasks)
        if not temp > 0:  # softmax(r / temp): 0 divides by zero, < 0 favours the fastest task
            raise ValueError(f"temp must be > 0, got {temp}")
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.temp = temp
        self.steps_per_epoch = steps_per_epoch
        self.register_buffer("epoch_sum", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("epoch_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("history", torch.ones(2, num_tasks, dtype=torch.float64))  # e-2, e-1
        self.register_buffer("epochs", torch.zeros((), dtype=torch.long))
        # the epoch's weights, as combine uses them, and what they were computed from: they
        # change only when the buffers do (epoch_end, a loaded state, a move), and computing
        # them was ~10 small operations per step, several times equal weighting's (bench/mtl.py)
        self._cached: tuple[Tensor, Tensor, tuple[object, ...], Tensor] | None = None

    def _weights_for(self, like: Tensor) -> Tensor:
        """:meth:`current_weights` in ``like``'s dtype and device, recomputed only when the
        buffers were replaced (a move, ``load_state_dict`` with ``assign``) or modified in place
        (their version counters: ``epoch_end``, ``load_state_dict``, a user's edit)."""
        history, epochs = self.history, self.epochs
        state = (history._version, epochs._version, like.dtype, like.device)
        c = self._cached
        if c is None or c[0] is not history or c[1] is not epochs or c[2] != state:
            w = self.current_weights().to(device=like.device, dtype=like.dtype)
            c = self._cached = (history, epochs, state, w)
        return c[3]

    def current_weights(self) -> Tensor:
        """The weights (T,) used during the current epoch."""
        prev, last = self.history[0], self.history[1]
        # Eq. 7 assumes positive losses. A task at zero loss in both epochs counts as unchanged
        # (r = 1) and one rising from zero as the steepest riser (the largest finite r), so a
        # solved or masked-out task cannot turn every weight into NaN.
        r = torch.where(prev > 0, last / prev, torch.where(last > 0, math.inf, 1.0))
        r = torch.nan_to_num(r, posinf=torch.finfo(r.dtype).max)
        w = self.num_tasks * torch.softmax(r / self.temp, 0)
        # ones in the first two epochs, selected on the device: int(self.epochs) in a branch was
        # a host sync every step on CUDA
        return torch.where(self.epochs < 2, torch.ones_like(w), w)

    def epoch_end(self) -> None:
        """Close the current epoch: its mean losses become ``Lbar(e-1)``."""
        if int(self.epoch_steps) == 0:
            return
        mean = self.epoch_sum / self.epoch_steps
        self.history.copy_(torch.stack([self.history[1], mean]))
        self.epochs += 1
        self.epoch_sum.zero_()
        self.epoch_steps.zero_()

    def combine(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        """losses (T,) -> (weighted sum, weights (T,) summing to T); records the losses."""
        w = self._weights_for(losses)
        self.epoch_sum += losses.detach().to(self.epoch_sum)
        self.epoch_steps += 1
        if self.steps_per_epoch is not None and int(self.epoch_steps) >= self.steps_per_epoch:
            self.epoch_end()
        return (w * losses).sum(), w.clone()  # a copy: the caller may change what it gets
