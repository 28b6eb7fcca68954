"""Gradient reversal: Ganin and Lempitsky 2015, "Unsupervised Domain Adaptation by
Backpropagation" (ICML, arXiv:1409.7495)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mtrl.weighting.base import (
    WEIGHTINGS,
    LossWeighting,
    accumulate_grad,
    backward_task_params,
    flatten,
    shared_targets,
)


class GradReverse(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``-lambda``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, lambda_: float) -> Tensor:
        ctx.lambda_ = float(lambda_)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.lambda_ * grad, None


def grad_reverse(x: Tensor, lambda_: float = 1.0) -> Tensor:
    """Gradient reversal layer: ``y = x`` (any shape), ``dL/dx = -lambda dL/dy``."""
    return GradReverse.apply(x, lambda_)


@WEIGHTINGS.register("gradient_reversal")
class GradientReversal(LossWeighting):
    """Adversarial tasks (indices ``adversarial``) have their gradient reversed through the shared
    trunk only: the trunk gets ``d/dtheta (sum_{normal} L_i - lambda sum_{adv} L_i)`` while every
    head (including the adversary's) gets its own loss gradient as with the plain sum.

    ``lambda_`` is a buffer (checkpointed; set ``weighting.lambda_.fill_(v)`` to schedule it).
    Returned weights are the trunk's: 1 for normal tasks, ``-lambda`` for adversarial ones.
    """

    def __init__(self, num_tasks: int, adversarial: Sequence[int] = (), lambda_: float = 1.0):
        super().__init__(num_tasks)
        mask = torch.zeros(num_tasks, dtype=torch.bool)
        for i in adversarial:
            if not 0 <= i < num_tasks:
                raise ValueError(f"adversarial index {i} out of range for {num_tasks} tasks")
            mask[i] = True
        self.register_buffer("adversarial", mask)
        self.register_buffer("lambda_", torch.tensor(float(lambda_)))

    def trunk_weights(self) -> Tensor:
        """(T,) weights applied to the losses in the shared trunk."""
        one = torch.ones_like(self.lambda_)
        return torch.where(self.adversarial, -self.lambda_, one)

    def backward(
        self,
        losses: Tensor | Sequence[Tensor],
        shared_params: Sequence[Tensor] | None = None,
        *,
        features: Tensor | None = None,
        task_params: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Trunk: reversed adversarial gradients; heads: plain sum. Returns trunk weights (T,)."""
        losses = self._check(losses)
        targets = shared_targets(shared_params, features, "gradient_reversal")
        w = self.trunk_weights().to(losses)
        trunk_loss = (w * losses).sum()
        if trunk_loss.requires_grad and targets:
            grads = torch.autograd.grad(trunk_loss, targets, retain_graph=True, allow_unused=True)
            direction = flatten(grads, targets)
            if features is not None and features.grad_fn is not None:
                features.backward(direction.view_as(features), retain_graph=True)
            else:
                accumulate_grad(targets, direction)
        backward_task_params(losses, targets, task_params, stop=features)
        return w.detach()
