"""Inter-task affinity: gradient cosine similarity and TAG's lookahead affinity.

TAG (Fifty et al. 2021, "Efficiently Identifying Task Groupings for Multi-Task Learning") measures
how a step on task i's loss changes task j's loss: Z[i, j] = 1 - L_j(theta - lr grad L_i) / L_j(theta),
averaged over training. Gradient cosine (e.g. Yu et al. 2020) is the cheaper first-order proxy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtrl.weighting.grads import as_loss_vector, task_gradients


def _shared_params(model_or_params: nn.Module | Iterable[Tensor]) -> list[Tensor]:
    """Shared parameters: ``model.shared_parameters()`` if defined, all parameters of a module, or
    the given iterable."""
    shared = getattr(model_or_params, "shared_parameters", None)
    if shared is not None:
        found: Iterable[Tensor] = shared()
    elif isinstance(model_or_params, nn.Module):
        found = model_or_params.parameters()
    else:
        found = model_or_params
    params = [p for p in found if p.requires_grad]
    if not params:
        raise ValueError("no shared parameters requiring grad")
    return params


def gradient_cosine(
    model_or_params: nn.Module | Iterable[Tensor],
    losses: Tensor | Sequence[Tensor],
    eps: float = 1e-12,
) -> Tensor:
    """Pairwise cosine similarity ``(T, T)`` of per-task gradients wrt the shared parameters.

    Args:
        model_or_params: a model (``shared_parameters()`` used if present) or an iterable of tensors.
        losses: ``(T,)`` scalar task losses still attached to the graph (the graph is retained).
    A zero gradient (norm <= ``eps``) has cosine 0 with every task (and with itself); any other
    gradient, however small, is normalised by its own norm first.
    """
    g = task_gradients(losses, _shared_params(model_or_params)).detach()
    norms = g.norm(dim=1, keepdim=True)
    unit = torch.where(norms > eps, g / norms.clamp_min(eps), torch.zeros_like(g))
    return unit @ unit.T


def _as_loss_vector(losses: Tensor | Sequence[Tensor]) -> Tensor:
    """The task losses as a (T,) vector: a tensor of any shape flattened, else as_loss_vector."""
    return as_loss_vector(losses.flatten() if isinstance(losses, Tensor) else losses)


@torch.no_grad()
def _evaluate(fn: Callable[[Any], Tensor], model: Any) -> Tensor:
    return _as_loss_vector(fn(model)).detach()


def lookahead_affinity(
    model: Any,
    shared_params: Iterable[Tensor] | None,
    task_losses_fn: Callable[[Any], Tensor],
    lr: float,
) -> Tensor:
    """TAG lookahead affinity ``Z (T, T)``: Z[i, j] = 1 - L_j(theta_s - lr g_i, theta_j) / L_j(theta).

    Fifty et al. 2021, Eq. 2 with an SGD lookahead: only the shared parameters step along task i's
    gradient g_i; task-specific parameters stay fixed. Positive Z[i, j] means a step on task i helps
    task j. Parameters and, for an ``nn.Module``, its buffers (e.g. BatchNorm running statistics
    that train-mode passes update) are restored bit-exactly afterwards; ``.grad`` is not touched.
    Costs T + 1 forward passes and T backward passes; L_j(theta) must be non-zero.

    Args:
        model: passed to ``task_losses_fn`` (and source of ``shared_parameters()`` if
            ``shared_params`` is None).
        shared_params: the parameters theta_s that take the lookahead step.
        task_losses_fn: ``model -> (T,)`` task losses on a fixed batch (must be deterministic:
            use eval mode or fixed dropout masks).
        lr: lookahead step size (TAG uses the optimiser's learning rate).
    """
    params = _shared_params(model if shared_params is None else shared_params)
    buffers = list(model.buffers()) if isinstance(model, torch.nn.Module) else []
    saved_buffers = [b.detach().clone() for b in buffers]
    saved = [p.detach().clone() for p in params]
    sizes = [p.numel() for p in params]
    rows = []
    try:
        with torch.enable_grad():
            losses = _as_loss_vector(task_losses_fn(model))
            grads = task_gradients(losses, params).detach()
        base = losses.detach()
        if not bool((base != 0).all()):
            zero = (base == 0).nonzero().flatten().tolist()
            raise ValueError(
                f"lookahead_affinity divides by the losses before the step; tasks {zero} have "
                "loss 0 (Z = 1 - L'/L is undefined there)"
            )
        for i in range(grads.shape[0]):
            with torch.no_grad():
                for p, g in zip(params, grads[i].split(sizes)):
                    p.sub_(lr * g.view_as(p))
            rows.append(1.0 - _evaluate(task_losses_fn, model) / base)
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
            for b, s in zip(buffers, saved_buffers):
                b.copy_(s)
    return torch.stack(rows)


class AffinityTracker:
    """Running mean of affinity matrices ``(T, T)`` over training steps (TAG averages Z over t).

    ``update(Z)`` adds one step; ``mean()`` returns the average. ``state_dict`` /
    ``load_state_dict`` checkpoint the running sum and count.
    """

    def __init__(self, num_tasks: int) -> None:
        self.num_tasks = int(num_tasks)
        self.total = torch.zeros(num_tasks, num_tasks, dtype=torch.float64)
        self.count = 0

    def update(self, affinity: Tensor) -> None:
        """Accumulate one affinity matrix ``(T, T)`` (e.g. from :func:`lookahead_affinity`)."""
        if affinity.shape != (self.num_tasks, self.num_tasks):
            raise ValueError(
                f"affinity shape {tuple(affinity.shape)}; expected {(self.num_tasks,) * 2}"
            )
        self.total = self.total.to(affinity.device) + affinity.detach().double()
        self.count += 1

    def step(
        self,
        model: Any,
        shared_params: Iterable[Tensor] | None,
        task_losses_fn: Callable[[Any], Tensor],
        lr: float,
    ) -> Tensor:
        """Compute :func:`lookahead_affinity` for the current batch, accumulate and return it."""
        z = lookahead_affinity(model, shared_params, task_losses_fn, lr)
        self.update(z)
        return z

    def mean(self) -> Tensor:
        """Average affinity ``(T, T)``; raises if nothing was accumulated."""
        if self.count == 0:
            raise ValueError("AffinityTracker.mean() before any update()")
        return self.total / self.count

    def reset(self) -> None:
        self.total = torch.zeros_like(self.total)
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total.clone(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total = state["total"].clone()
        self.count = int(state["count"])
