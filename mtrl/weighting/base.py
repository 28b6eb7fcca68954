"""Base classes and shared helpers for loss / gradient weighting.

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

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtrl.registry import Registry

WEIGHTINGS: Registry[LossWeighting] = Registry("weighting")


def as_loss_vector(losses: Tensor | Sequence[Tensor]) -> Tensor:
    """Stack a sequence of scalar losses into a ``(T,)`` tensor (a tensor is checked and kept).

    Entries off the device of the others (a constant ``torch.tensor(0.0)`` or a number for a task
    without samples, next to CUDA losses) join them there: torch.stack refuses to mix devices,
    so such a list worked on the CPU and failed on CUDA."""
    if not isinstance(losses, Tensor):
        losses = list(losses)
        device = loss_device(losses)
        losses = torch.stack([torch.as_tensor(x, device=device).reshape(()) for x in losses])
    if losses.dim() != 1:
        raise ValueError(f"losses must have shape (T,), got {tuple(losses.shape)}")
    return losses


def loss_device(losses: Sequence[Tensor | float]) -> torch.device | None:
    """The device of the first loss not on the CPU, if any (else None: the CPU, as before)."""
    return next(
        (x.device for x in losses if isinstance(x, Tensor) and x.device.type != "cpu"), None
    )


def last_weight(params: Sequence[Tensor]) -> list[Tensor]:
    """The last tensor of ``params`` that is a weight matrix (at least two dimensions larger
    than 1: not a bias, not a scalar gain) as a one-element list; the last tensor if none is; []
    if ``params`` is empty. Parameters that do not require grad are skipped."""
    params = [p for p in params if p.requires_grad]
    weights = [p for p in params if sum(n > 1 for n in p.shape) >= 2]
    return weights[-1:] if weights else params[-1:]


def flatten(grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> Tensor:
    """Concatenate ``grads`` into one ``(P,)`` vector; ``None`` entries become zeros of ``like``."""
    parts = [
        (torch.zeros_like(p) if g is None else g).reshape(-1)
        for g, p in zip(grads, like, strict=True)
    ]
    return torch.cat(parts) if parts else torch.zeros(0)


def unflatten(vec: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split a ``(P,)`` vector into views shaped like the tensors of ``like``."""
    out, start = [], 0
    for p in like:
        n = p.numel()
        out.append(vec[start : start + n].view_as(p))
        start += n
    if start != vec.numel():
        raise ValueError(f"vector has {vec.numel()} entries, parameters have {start}")
    return out


def task_gradients(
    losses: Tensor | Sequence[Tensor], inputs: Sequence[Tensor], *, batched: bool = False
) -> Tensor:
    """Per-task gradients ``G[i] = d losses[i] / d inputs`` flattened to a ``(T, P)`` matrix.

    One ``torch.autograd.grad`` per task (graph retained), or a single vmapped call over the
    one-hot basis when ``batched=True`` (not every op supports vmap). Pass the T scalar losses as
    a *sequence* when you have them: differentiating ``stacked[i]`` back-propagates zeros through
    every other task's branch of ``torch.stack`` (T^2 head backward passes), the scalars do not.
    """
    inputs = list(inputs)
    parts = None if isinstance(losses, Tensor) else list(losses)
    if parts is not None:
        losses = as_loss_vector(parts)
    t = losses.shape[0]
    if batched and losses.requires_grad:
        basis = torch.eye(t, dtype=losses.dtype, device=losses.device)
        gs = torch.autograd.grad(
            losses, inputs, basis, retain_graph=True, allow_unused=True, is_grads_batched=True
        )
        gs = [
            torch.zeros((t, *p.shape), dtype=p.dtype, device=p.device) if g is None else g
            for g, p in zip(gs, inputs, strict=True)
        ]
        return torch.cat([g.reshape(t, -1) for g in gs], dim=1)
    if not inputs:
        return losses.new_zeros(t, 0)
    sizes = [p.numel() for p in inputs]
    # filled in place: one copy of each gradient instead of cat + stack
    out = torch.zeros(t, sum(sizes), dtype=inputs[0].dtype, device=inputs[0].device)
    for i in range(t):
        loss = losses[i] if parts is None else parts[i]
        if not loss.requires_grad:
            continue
        gs = torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True)
        for g, dst in zip(gs, out[i].split(sizes)):
            if g is not None:
                dst.copy_(g.reshape(-1))
    return out


def accumulate_grad(params: Sequence[Tensor], vec: Tensor) -> None:
    """Add the flat gradient ``vec`` (P,) into ``p.grad`` of ``params`` (created if ``None``)."""
    for p, g in zip(params, unflatten(vec.detach(), params), strict=True):
        if p.grad is None:
            p.grad = g.to(p.dtype).clone()
        else:
            p.grad.add_(g.to(p.grad.dtype))


def graph_leaves(root: Tensor, stop: Tensor | None = None) -> list[Tensor]:
    """Leaf tensors requiring grad in the autograd graph of ``root`` (not expanding ``stop``)."""
    if root.grad_fn is None:
        return [root] if root.requires_grad else []
    stop_fn = None if stop is None else stop.grad_fn
    seen, leaves, stack = set(), [], [root.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        var = getattr(fn, "variable", None)
        if var is not None:
            leaves.append(var)
            continue
        if fn is stop_fn:
            continue
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return leaves


def backward_task_params(
    losses: Tensor,
    exclude: Sequence[Tensor],
    task_params: Sequence[Tensor] | None = None,
    stop: Tensor | None = None,
) -> None:
    """Backward ``losses.sum()`` into the task-specific parameters only (see module docstring)."""
    total = losses.sum()
    if not total.requires_grad:
        return
    if task_params is None:
        ex = {id(p) for p in exclude}
        task_params = [p for p in graph_leaves(total, stop) if id(p) not in ex]
    else:
        task_params = [p for p in task_params if p.requires_grad]
    if task_params:
        torch.autograd.backward(total, inputs=list(task_params))


def shared_targets(
    shared_params: Sequence[Tensor] | None, features: Tensor | None, method: str
) -> list[Tensor]:
    """The tensors per-task gradients are taken w.r.t.: ``[features]`` or the shared params
    (an empty list means nothing is shared: every parameter gets the plain-sum gradient)."""
    if features is not None:
        return [features]
    if shared_params is None:
        raise ValueError(f"{method} needs shared_params or features= to compute task gradients")
    return [p for p in shared_params if p.requires_grad]


def gram_matrix(grads: Tensor) -> Tensor:
    """The Gram matrix ``G G^T`` (T, T) of ``grads`` (T, P) in float64, on their device.

    The product is taken in the gradients' dtype (one pass, as before), and again on rows scaled
    by powers of two (exact) if it lost range: float32 squares overflow above ~1e19 and underflow
    below ~1e-19, so gradients of norm 1e20 gave an inf Gram (NaN or zero weights) and 1e-30 a
    zero one, although every aggregator's answer is defined at any scale. When nothing overflows
    or underflows the scaled product is the plain one times exact powers of two: same values.
    """
    gram = (grads @ grads.T).double()
    tiny = torch.finfo(grads.dtype).tiny / torch.finfo(grads.dtype).eps  # squares lose bits
    host = gram.detach().cpu().numpy()  # (T, T): the solvers read it on the host anyway
    if grads.numel() == 0 or (np.isfinite(host).all() and (np.diag(host) >= tiny).all()):
        return gram
    if not bool(torch.isfinite(grads).all()):
        return gram
    exponent, scaled = _scaled_rows(grads.detach())
    gram = (scaled @ scaled.T).double()
    exponent = exponent.to(gram.dtype)[:, None]
    return gram * torch.exp2(exponent) * torch.exp2(exponent.T)


def _scaled_rows(grads: Tensor) -> tuple[Tensor, Tensor]:
    """``(e, S)``: row i of ``grads`` is ``2^e_i S_i`` with ``max |S_i| < 1`` (exact; e = 0 for a
    zero row). Scaled in two halves: 2^149 (a subnormal float32 row) is out of float32's range."""
    if grads.shape[1] == 0:  # no entries (amax of nothing raises)
        return torch.zeros(grads.shape[0], dtype=torch.int32, device=grads.device), grads
    exponent = torch.frexp(grads.abs().amax(dim=1)).exponent  # (T,)
    return exponent, _ldexp(grads, -exponent[:, None])


def _ldexp(x: Tensor, exponent: Tensor) -> Tensor:
    """``x * 2^exponent`` exactly, in two halves (one power of two may be out of x's range)."""
    half = torch.div(exponent, 2, rounding_mode="floor")
    return torch.ldexp(torch.ldexp(x, half.to(x.dtype)), (exponent - half).to(x.dtype))


def row_norms(grads: Tensor) -> Tensor:
    """Euclidean norms (T,) of the rows of ``grads`` (T, P) without overflow or underflow:
    ``grads.norm(dim=1)``, unless a norm came out non-finite or below ~1e-18 (float32's squares
    overflow above ~1e19 and vanish under ~1e-19; a zero row too), then on rows scaled by powers
    of two (exact: the same values; ~9x the plain norm's time on the CPU, so only then). On a
    GPU always scaled: reading the norms to decide would be a host sync every step."""
    if _reads_are_free(grads):
        plain = grads.norm(dim=1)
        floor = (torch.finfo(grads.dtype).tiny / torch.finfo(grads.dtype).eps) ** 0.5
        if grads.shape[1] == 0 or bool((torch.isfinite(plain) & (plain >= floor)).all()):
            return plain
    exponent, scaled = _scaled_rows(grads)
    return _ldexp(scaled.norm(dim=1), exponent)


def _reads_are_free(x: Tensor) -> bool:
    """Whether reading ``x``'s values on the host costs no device sync (a CPU tensor)."""
    return x.device.type == "cpu"


def combine(weights: Tensor, grads: Tensor) -> Tensor:
    """``weights @ grads`` (P,) in the gradients' dtype, for solver weights (T,) of any dtype.

    A weight can be out of the gradients' range while its term is not: PCGrad's coefficient on a
    subnormal float32 gradient (~1e-42) is ~1e42, Nash-MTL's 1 / |g_i| the same; cast to float32
    it was inf and the direction inf. Then the sum is taken as ``sum (w_i 2^e_i) S_i`` over the
    rows scaled by powers of two (:func:`_scaled_rows`); otherwise exactly ``w @ grads``."""
    # the checks read a host copy of the (T,) weights: the solvers' come from numpy, and a
    # weight on another device than the gradients (CPU weights, CUDA gradients) may not meet them
    host = weights.detach().to("cpu", torch.float64).numpy()
    info = torch.finfo(grads.dtype)
    size = np.abs(host)
    fits = (size == 0) | ((size >= info.tiny) & (size <= info.max))  # NaN fails both
    if fits.all() or not np.isfinite(host).all():
        return weights.to(device=grads.device, dtype=grads.dtype) @ grads
    exponent, scaled = _scaled_rows(grads)
    ws = weights.to(device=grads.device, dtype=torch.float64) * torch.exp2(exponent.double())
    return ws.to(grads.dtype) @ scaled


def nonzero_rows(k: np.ndarray, rtol: float = 0.0) -> np.ndarray:
    """Indices of the tasks whose gradient is not zero, from a Gram matrix (T, T): squared norm
    above ``rtol`` times the largest. ``rtol`` 0 (exact zeros only): Nash-MTL and IMTL-G are
    invariant to a task's gradient scale, so a task 1e8 times smaller than another is still a
    task (a relative 1e-12 on the squared norms dropped every task under 1e-6 of the largest)."""
    diag = np.diag(k)
    return np.flatnonzero(diag > rtol * max(float(diag.max(initial=0.0)), 1e-300))


class LossWeighting(torch.nn.Module):
    """A multi-task loss/gradient weighting method over ``num_tasks`` tasks.

    Subclasses implement :meth:`backward`; state lives in buffers/parameters (``state_dict``).
    """

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
    ``batched=True`` computes per-task gradients with one vmapped autograd call. The built-in
    solvers work on :func:`gram_matrix` and return float64 weights: a weight can be out of
    float32's range while its term is not (:func:`combine` takes the sum then);
    :meth:`backward` returns them in the gradients' dtype (such a weight shows as inf there).
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
        grads = task_gradients(losses if parts is None else parts, targets, batched=self.batched)
        if bool(torch.isfinite(grads).all()):
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
        # deep copies: Adam updates its moments in place, a checkpoint must not alias them
        return {"optimizer": copy.deepcopy(self._opt.state_dict())}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._opt.load_state_dict(copy.deepcopy(state["optimizer"]))
