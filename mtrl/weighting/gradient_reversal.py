"""Gradient reversal: Ganin and Lempitsky 2015, "Unsupervised Domain Adaptation by
Backpropagation" (ICML, arXiv:1409.7495)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mtrl.weighting.base import WEIGHTINGS, LossWeighting
from mtrl.weighting.grads import backward_task_params, shared_targets


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

    adversarial: Tensor
    lambda_: Tensor

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
        """Trunk: reversed adversarial gradients; heads: plain sum. Returns trunk weights (T,).

        One backward of ``sum_i w_i L_i`` into every parameter (what equal weighting costs),
        then, if some task is adversarial, a backward of ``(1 + lambda) sum_adv L_j`` into the
        parameters that are not ``targets`` only (the adversaries' heads, which the first pass
        gave ``-lambda`` times their gradient): those end with the plain sum."""
        parts = None if isinstance(losses, Tensor) else list(losses)
        losses = self._check(losses)
        targets = shared_targets(shared_params, features, "gradient_reversal")
        w = self.trunk_weights().to(losses)
        if not targets:  # nothing shared: every parameter gets the plain sum
            backward_task_params(losses, targets, task_params)
            return w.detach()
        # lambda and the mask in one host read (on CUDA nonzero() and each int() were a sync)
        lam, *mask = torch.cat(
            [self.lambda_.reshape(1).double(), self.adversarial.double()]
        ).tolist()
        scale = 1.0 + lam
        adversaries = [i for i, adv in enumerate(mask) if adv] if scale else []
        total = (w * losses).sum()
        if total.requires_grad:
            total.backward(retain_graph=bool(adversaries))
            if adversaries:
                # Separate scalar losses let this pass skip the other tasks' heads; a stacked
                # (T,) tensor reaches them through its stack, with zero gradients.
                fix = sum(parts[i] for i in adversaries) if parts else losses[adversaries].sum()
                backward_task_params(scale * fix, targets, task_params, stop=features)
        return w.detach()
