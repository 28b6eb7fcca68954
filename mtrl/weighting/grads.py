"""Per-task gradient plumbing shared by the weightings: stacking task losses, per-task gradients
``(T, P)`` of the shared parameters or features, and writing a combined direction back into
``.grad`` (the task-specific parameters get the plain-sum gradient: see :mod:`mtrl.weighting.base`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

import torch
from torch import Tensor
from torch.autograd.graph import Node

TensorT = TypeVar("TensorT", bound=Tensor)  # a Tensor or a subclass (nn.Parameter) kept as such


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


def last_weight(params: Sequence[TensorT]) -> list[TensorT]:
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


GradientProvider = Callable[[Tensor | Sequence[Tensor], list[Tensor]], Tensor]
_PROVIDER: ContextVar[GradientProvider | None] = ContextVar("task_gradient_provider", default=None)


@contextmanager
def task_gradient_provider(provider: GradientProvider | None) -> Iterator[None]:
    """Inside, :func:`task_gradients` returns ``provider(losses, inputs)`` (the same (T, P)
    matrix, computed another way: e.g. the RL agents' :mod:`agents.blocked`, which knows which
    rows of the batch each task's loss reaches). The provider's own calls of
    :func:`task_gradients` take the usual path. None: no provider."""
    token = _PROVIDER.set(provider)
    try:
        yield
    finally:
        _PROVIDER.reset(token)


def providing() -> bool:
    """Whether a :func:`task_gradient_provider` is installed (it then defines the matrix)."""
    return _PROVIDER.get() is not None


def task_gradients(
    losses: Tensor | Sequence[Tensor], inputs: Sequence[Tensor], *, batched: bool = False
) -> Tensor:
    """Per-task gradients ``G[i] = d losses[i] / d inputs`` flattened to a ``(T, P)`` matrix.

    One ``torch.autograd.grad`` per task (graph retained), or a single vmapped call over the
    one-hot basis when ``batched=True`` (not every op supports vmap). Pass the T scalar losses as
    a *sequence* when you have them: differentiating ``stacked[i]`` back-propagates zeros through
    every other task's branch of ``torch.stack`` (T^2 head backward passes), the scalars do not.
    Inside :func:`task_gradient_provider`, the provider computes it.
    """
    inputs = list(inputs)
    provider = _PROVIDER.get()
    if provider is not None:
        token = _PROVIDER.set(None)
        try:
            return provider(losses, inputs)
        finally:
            _PROVIDER.reset(token)
    parts = None if isinstance(losses, Tensor) else list(losses)
    vec = as_loss_vector(losses if parts is None else parts)
    t = vec.shape[0]
    if batched and vec.requires_grad:
        basis = torch.eye(t, dtype=vec.dtype, device=vec.device)
        gs = torch.autograd.grad(
            vec, inputs, basis, retain_graph=True, allow_unused=True, is_grads_batched=True
        )
        full = [
            torch.zeros((t, *p.shape), dtype=p.dtype, device=p.device) if g is None else g
            for g, p in zip(gs, inputs, strict=True)
        ]
        return torch.cat([g.reshape(t, -1) for g in full], dim=1)
    if not inputs:
        return vec.new_zeros(t, 0)
    sizes = [p.numel() for p in inputs]
    # filled in place: one copy of each gradient instead of cat + stack
    out = torch.zeros(t, sum(sizes), dtype=inputs[0].dtype, device=inputs[0].device)
    for i in range(t):
        loss = vec[i] if parts is None else parts[i]
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
        add_grad(p, g)


def add_grad(param: Tensor, grad: Tensor) -> None:
    """Add ``grad`` into ``param.grad`` in the parameter's dtype (a copy when it has none)."""
    if param.grad is None:
        param.grad = grad.to(param.dtype).clone()
    else:
        param.grad.add_(grad.to(param.grad.dtype))


def graph_nodes(root: Node, stop: Node | None = None) -> Iterator[Node]:
    """Every node of ``root``'s autograd graph once, depth first; ``stop`` is yielded but not
    expanded."""
    seen: set[Node] = set()
    stack: list[Node | None] = [root]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        yield fn
        if fn is not stop:  # next_functions hold None for inputs without grad
            stack.extend(nxt for nxt, _ in fn.next_functions)


def graph_leaves(root: Tensor, stop: Tensor | None = None) -> list[Tensor]:
    """Leaf tensors requiring grad in the autograd graph of ``root`` (not expanding ``stop``)."""
    if root.grad_fn is None:
        return [root] if root.requires_grad else []
    stop_fn = None if stop is None else stop.grad_fn
    leaves = (getattr(fn, "variable", None) for fn in graph_nodes(root.grad_fn, stop_fn))
    return [var for var in leaves if var is not None]


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
