"""FAMO: Liu et al. 2023, "FAMO: Fast Adaptive Multitask Optimization" (NeurIPS,
arXiv:2306.03792), Algorithm 1."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtrl.weighting.base import WEIGHTINGS, InternalOptimizerMixin, WeightedLoss
from mtrl.weighting.grads import as_loss_vector


@WEIGHTINGS.register("famo")
class FAMO(InternalOptimizerMixin, WeightedLoss):
    """Logits ``xi`` (T,), ``z = softmax(xi)``; the model descends ``sum_i z_i log(L_i - b_i + c)``.

    Normalised as in the paper so the applied gradient weights ``z_i / (D_i sum_j z_j / D_j)``
    (``D_i = L_i - b_i + c``) sum to 1. One backward pass, O(1) in T.

    Usage: ``weighting.backward(losses)``; ``optimizer.step()``; then recompute the losses on the
    same batch at the new parameters and call ``weighting.update(new_losses)``: it steps
    ``xi <- xi - lr (delta + gamma xi)``, ``delta = grad_xi z . (log D_before - log D_after)``
    (paper; ``optimizer='adam'`` uses Adam with weight decay ``gamma`` as the authors' code).
    ``xi`` is trained only by :meth:`update`; keep it out of the model's optimiser. The losses must
    stay above ``min_losses`` (default 0; e.g. policy-gradient losses can be negative: pass bounds).
    """

    min_losses: Tensor
    prev_losses: Tensor
    has_prev: Tensor

    def __init__(
        self,
        num_tasks: int,
        lr: float = 0.025,
        gamma: float = 1e-3,
        c: float = 1e-8,
        min_losses: Sequence[float] | Tensor | None = None,
        optimizer: str = "sgd",
    ) -> None:
        super().__init__(num_tasks)
        self.c = c
        self.logits = torch.nn.Parameter(torch.zeros(num_tasks))
        b = torch.zeros(num_tasks) if min_losses is None else torch.as_tensor(min_losses).float()
        if b.numel() != num_tasks:
            raise ValueError(f"min_losses needs one bound per task ({num_tasks}), got {b.numel()}")
        self.register_buffer("min_losses", b.reshape(num_tasks).clone())
        self.register_buffer("prev_losses", torch.zeros(num_tasks))
        self.register_buffer("has_prev", torch.zeros((), dtype=torch.bool))
        self._init_optimizer([self.logits], optimizer, lr, weight_decay=gamma)

    def _shifted(self, losses: Tensor, check: bool = True) -> Tensor:
        """``D = L - b + c`` (detached), with the bounds ``b`` checked."""
        b = self.min_losses
        if b.dtype != losses.dtype or b.device != losses.device:
            b = b.to(losses)
        d = losses.detach() - b + self.c
        if check and float(d.min()) <= 0:
            raise ValueError(
                f"FAMO needs losses above min_losses (lower bounds b_i), got losses "
                f"{losses.detach().tolist()} and min_losses {self.min_losses.tolist()}"
            )
        return d

    def combine(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        """losses (T,) -> (``sum_i w_i L_i``, gradient weights ``w`` (T,) detached).

        ``w_i = z_i / (D_i sum_j z_j / D_j)`` is the gradient of the paper's
        ``sum_i z_i log D_i / sum_j(z_j / D_j)``; backpropagating ``sum_i w_i L_i`` gives the same
        parameter gradient with fewer operations in the graph (the step is a hot path).
        """
        d = self._shifted(losses)
        with torch.no_grad():
            zd = torch.softmax(self.logits, 0).to(d) / d
            w = zd / zd.sum()
        self.prev_losses.copy_(losses.detach())
        self.has_prev.fill_(True)
        return (w * losses).sum(), w

    @torch.no_grad()
    def update(self, new_losses: Tensor | Sequence[Tensor]) -> None:
        """Update ``xi`` from the loss change since the last :meth:`backward` (call after step)."""
        if not bool(self.has_prev):
            raise RuntimeError("FAMO.update() called before backward()")
        new = as_loss_vector(new_losses).detach().to(self.prev_losses)
        # delta_i = log D_i(before) - log D_i(after)
        delta = (self._shifted(self.prev_losses, check=False) / self._shifted(new)).log()
        z = torch.softmax(self.logits, 0)
        grad = z * (delta - (z * delta).sum())  # J_softmax^T delta
        # A non-finite new loss (the step overflowed it; the Trainer's same-batch update comes
        # after its finite check) measures nothing: log(D / inf) = -inf made the logits NaN for
        # good. Such an update steps on a zero gradient (selected on the device, no host sync).
        grad = torch.where(torch.isfinite(grad).all(), grad, torch.zeros_like(grad))
        self._apply_grad(self.logits, grad)
        self.has_prev.fill_(False)
