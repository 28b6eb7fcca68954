"""Base classes for loss / gradient weighting (their helpers: :mod:`mtrl.weighting.grads`,
:mod:`mtrl.weighting.numerics`).

Two families share one interface, :meth:`LossWeighting.backward`:

* **loss weighting** (equal, random, uncertainty, dwa, gradnorm, famo): one backward pass of a
  weighted sum of the losses; every parameter in the graph gets its gradient.
* **gradient aggregation** (pcgrad, mgda, cagrad, imtl_g, nash_mtl, upgrad): per-task gradients
  w.r.t. the shared parameters (or the shared representation) are stacked into a matrix
  ``G`` of shape ``(T, P)``, combined into one ``(P,)`` direction, and written back into ``.grad``.
  Every other (task-specific) parameter gets the gradient of the plain sum of the losses.

Gradients *accumulate* into ``.grad`` like ``loss.backward()``; the caller zeroes them.

Which parameters are "task-specific"? Either the ``task_params`` argument, or (default) every leaf
tensor that requires grad in the graph of ``losses`` and is not a shared parameter; in
representation mode the walk stops at ``features``, so only the parameters above the trunk
(heads) are found. Shared parameters not listed in ``shared_params`` count as task parameters and
receive the plain-sum gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mtrl.registry import Registry
from mtrl.state import copy_state
from mtrl.weighting.grads import (
    accumulate_grad,
    as_loss_vector,
    backward_task_params,
    providing,
    shared_targets,
    task_gradients,
)
from mtrl.weighting.heads_pass import heads_pass
from mtrl.weighting.numerics import all_finite, combine

WEIGHTINGS: Registry[LossWeighting] = Registry("weighting")


class LossWeighting(torch.nn.Module):
    """A multi-task loss/gradient weighting method over ``num_tasks`` tasks.

    Subclasses implement :meth:`backward`; state lives in buffers/parameters (``state_dict``).
    """

    #: Whether the gradient it writes keeps its size when every loss is scaled by one constant
    #: (Nash-MTL's update has norm sqrt(T) whatever the losses). The RL runner then leaves the
    #: shared parameters' gradient as it is, where it divides a sum over tasks by K.
    scale_invariant: bool = False

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        self.num_tasks = num_tasks

    def _check(self, losses: Tensor | Sequence[Tensor]) -> Tensor:
        losses = as_loss_vector(losses)
        if losses.shape[0] != self.num_tasks:
            raise ValueError(f"expected {self.num_tasks} losses, got {losses.shape[0]}")
        return losses

    def backward(
        self,
        losses: Tensor | Sequence[Tensor],
        shared_params: Sequence[Tensor] | None = None,
        *,
        features: Tensor | None = None,
        task_params: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Populate ``.grad`` from ``losses`` (T,) and return the applied weights (T,), detached."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement backward(losses, shared_params=None, *, "
            "features=None, task_params=None) -> weights (T,), or subclass WeightedLoss "
            "(combine) or GradientAggregator (weights)"
        )


class WeightedLoss(LossWeighting):
    """Loss weighting: ``total = sum_i w_i L_i (+ extra terms)``, one ordinary backward pass."""

    def combine(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(total, weights)``: the scalar to backpropagate and the (T,) weights."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement combine(losses (T,)) -> (total, weights (T,))"
        )

    def backward(
        self,
        losses: Tensor | Sequence[Tensor],
        shared_params: Sequence[Tensor] | None = None,
        *,
        features: Tensor | None = None,
        task_params: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Backward the weighted sum into every parameter; the shared/feature args are unused."""
        out = self.combine(self._check(losses))
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(
                f"{type(self).__name__}.combine must return (total, weights (T,)), got "
                f"{type(out).__name__}"
            )
        total, weights = out
        if total.requires_grad:
            total.backward()
        return weights.detach()


class GradientAggregator(LossWeighting):
    """Gradient aggregation: combine the rows of ``G`` (T, P) into one direction (P,).

    Subclasses implement :meth:`weights` returning ``w`` (T,) with ``aggregate(G) = w @ G``.
    ``batched=True`` computes per-task gradients with one vmapped autograd call (representation
    mode takes them from one backward through the heads whenever the graph separates by task,
    :mod:`mtrl.weighting.heads_pass`, batched or not). The built-in solvers work on
    :func:`~mtrl.weighting.numerics.gram_matrix` and return float64 weights: a
    weight can be out of float32's range while its term is not
    (:func:`~mtrl.weighting.numerics.combine` takes the sum then); :meth:`backward` returns them
    in the gradients' dtype (such a weight shows as inf there).
    """

    def __init__(self, num_tasks: int, batched: bool = False) -> None:
        super().__init__(num_tasks)
        self.batched = batched

    def weights(self, grads: Tensor, losses: Tensor | None = None) -> Tensor:
        """Combination weights (T,) for the per-task gradient matrix ``grads`` (T, P)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement weights(grads (T, P), losses (T,) or None) "
            "-> (T,)"
        )

    def aggregate(self, grads: Tensor, losses: Tensor | None = None) -> Tensor:
        """The aggregated direction (P,) for ``grads`` (T, P)."""
        return combine(self.weights(grads, losses), grads)

    def backward(
        self,
        losses: Tensor | Sequence[Tensor],
        shared_params: Sequence[Tensor] | None = None,
        *,
        features: Tensor | None = None,
        task_params: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Aggregate per-task gradients w.r.t. ``shared_params`` (or ``features`` (B, D): the
        aggregated feature gradient is backpropagated through the trunk once)."""
        parts = None if isinstance(losses, Tensor) else list(losses)  # scalars: see task_gradients
        losses = self._check(losses)
        targets = shared_targets(shared_params, features, type(self).__name__)
        if not targets:  # nothing shared (e.g. independent networks): plain sum everywhere
            if losses.requires_grad:
                losses.sum().backward()
            return losses.new_ones(losses.shape).detach()
        given = losses if parts is None else parts
        grads = None
        if features is not None and not providing():  # heads serve one task each: one pass
            grads = heads_pass(given, features, task_params)
        heads_done = grads is not None
        if grads is None:
            grads = task_gradients(given, targets, batched=self.batched)
        if all_finite(grads):
            w = self.weights(grads, losses.detach())  # float64 from the built-in solvers
        else:  # no solver sees NaN/inf: the direction is NaN, as a plain backward's would be,
            # for the caller's finite check (the RL runner then skips the update)
            w = grads.new_full((grads.shape[0],), math.nan)
        direction = combine(w, grads)
        w = w.to(grads.dtype)
        if features is not None:
            if features.requires_grad and features.grad_fn is not None:
                features.backward(direction.view_as(features), retain_graph=True)
            else:
                accumulate_grad([features], direction)
        else:
            accumulate_grad(targets, direction)
        if not heads_done:
            backward_task_params(losses, targets, task_params, stop=features)
        return w.detach()


class SeededMixin:
    """Owns a CPU ``torch.Generator`` whose state is checkpointed via ``state_dict`` extra state."""

    def _init_generator(self, seed: int | None) -> None:
        self.generator = torch.Generator()
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self.generator.manual_seed(seed)

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        # a CPU generator takes CPU states only (torch.load(..., map_location=<GPU>) moves it)
        self.generator.set_state(state["generator"].cpu())


OPTIMIZERS = ("sgd", "adam")


class InternalOptimizerMixin:
    """Owns a torch optimiser over some of the method's own parameters (checkpointed as extra
    state). :meth:`_apply_grad` steps it and leaves ``.grad`` at ``None``, so those parameters are
    inert even if a user also hands them to the model's optimiser."""

    def _init_optimizer(
        self, params: list[torch.nn.Parameter], kind: str, lr: float, weight_decay: float = 0.0
    ) -> None:
        self._opt: torch.optim.Optimizer
        if kind == "sgd":
            self._opt = torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
        elif kind == "adam":
            self._opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        else:
            raise ValueError(f"unknown optimizer {kind!r}; valid: {', '.join(OPTIMIZERS)}")

    def _apply_grad(self, param: torch.nn.Parameter, grad: Tensor) -> None:
        opt = self._opt
        if isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == 1:
            group = opt.param_groups[0]
            if not (group["momentum"] or group["maximize"]) and isinstance(group["lr"], float):
                # plain SGD's update itself, the same operations as torch's single-tensor path,
                # without Optimizer.step's per-call overhead (a hot path for FAMO's update)
                with torch.no_grad():
                    d_p = grad if grad.dtype == param.dtype else grad.to(param.dtype)
                    if group["weight_decay"]:
                        d_p = d_p.add(param, alpha=group["weight_decay"])
                    param.add_(d_p, alpha=-group["lr"])
                return
        self._apply_grads([param], [grad])

    def _apply_grads(self, params: Sequence[torch.nn.Parameter], grads: Sequence[Tensor]) -> None:
        """One step of the internal optimiser on ``grads``; the ``.grad`` left behind is None."""
        for p, g in zip(params, grads, strict=True):
            p.grad = g.detach().to(p.dtype)
        self._opt.step()
        for p in params:
            p.grad = None

    def get_extra_state(self) -> dict[str, Any]:
        # copies: Adam updates its moments in place, a checkpoint must not alias them
        # (copy_state: the same copy as deepcopy's at about half its cost, every Trainer step)
        return {"optimizer": copy_state(self._opt.state_dict())}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._opt.load_state_dict(copy_state(state["optimizer"]))
