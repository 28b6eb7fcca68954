"""Representation mode's per-task gradients from one backward through the heads.

``G[i] = dL_i/dz`` for the shared features z takes T backward passes through the heads (and one
more for the heads' own parameters) when done one task at a time. When every node between a
task's loss and z serves that task alone (hard sharing: head t consumes z and feeds L_t), one
backward of ``sum_i L_i`` gives them all: a hook on each node that consumes z keeps the gradient
it sends to z under its task, and the same pass gives the heads' parameters the plain sum's
gradient, what :func:`~mtrl.weighting.grads.backward_task_params` would give them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.autograd.graph import Node

from mtrl.weighting.grads import add_grad, graph_nodes

_SHARED = -1  # owner of a node two tasks reach


def _roots(losses: Tensor | Sequence[Tensor], num_tasks: int) -> list[Node | None] | None:
    """Each task's loss node (None: no gradient), or None when the tasks' losses are one node
    (e.g. a (T,) loss from one reduction) and cannot be told apart."""
    if isinstance(losses, Tensor):
        fn = losses.grad_fn
        if fn is None or type(fn).__name__ != "StackBackward0":
            return None
        if len(fn.next_functions) != num_tasks:
            return None
        return [nxt for nxt, _ in fn.next_functions]
    roots: list[Node | None] = []
    for loss in losses:
        if not isinstance(loss, Tensor) or not loss.requires_grad:
            roots.append(None)
        elif loss.grad_fn is None:  # a leaf as a loss: nothing to separate
            return None
        else:
            roots.append(loss.grad_fn)
    return roots


def heads_pass(
    losses: Tensor | Sequence[Tensor],
    features: Tensor,
    task_params: Sequence[Tensor] | None = None,
) -> Tensor | None:
    """Per-task gradients w.r.t. ``features`` as a ``(T, features.numel())`` matrix, with the
    plain sum's gradient accumulated into the task parameters (``task_params``, or every leaf
    the losses reach other than through ``features``), from one backward through the heads.

    Returns None, having done nothing, when the graph does not separate: a node between the
    losses and ``features`` that two tasks reach, a head that reaches the trunk other than
    through ``features``, a stacked loss vector that is not ``torch.stack`` of the tasks' losses,
    or no loss reaching ``features``. The caller then takes one backward per task.
    """
    if not features.requires_grad:
        return None
    parts = losses if isinstance(losses, Tensor) else list(losses)
    t = parts.shape[0] if isinstance(parts, Tensor) else len(parts)
    roots = _roots(parts, t)
    if roots is None:
        return None
    z_fn, z_nr = features.grad_fn, features.output_nr
    trunk = set(graph_nodes(z_fn)) if z_fn is not None else set()

    def is_z(fn: Node | None, nr: int) -> bool:
        if z_fn is not None:
            return fn is z_fn and nr == z_nr
        return getattr(fn, "variable", None) is features  # leaf features: its AccumulateGrad

    owner: dict[Node, int] = {}
    consumers: dict[Node, list[int]] = {}  # node -> indices of its inputs that are z
    leaves: list[Tensor] = []
    for task, root in enumerate(roots):
        if root is None:
            continue
        for fn in graph_nodes(root, stop=z_fn):
            if fn is z_fn:
                continue
            if fn in trunk:  # a skip connection or a tied weight: z is not the only way in
                return None
            prev = owner.setdefault(fn, task)
            if prev != task:
                owner[fn] = _SHARED
            var = getattr(fn, "variable", None)
            if var is not None:  # a leaf: seen once per node, so once in ``leaves``
                if prev == task and var is not features:
                    leaves.append(var)
                continue
            idx = [k for k, (nxt, nr) in enumerate(fn.next_functions) if is_z(nxt, nr)]
            if idx:
                consumers[fn] = idx
    if not consumers or any(owner[fn] == _SHARED for fn in consumers):
        return None

    out = features.new_empty(t, features.numel())
    filled = [False] * t  # rows no hook wrote are zeroed after the pass

    def keeper(task: int, idx: list[int]) -> Callable[[Sequence[Tensor | None], object], None]:
        def keep(grad_inputs: Sequence[Tensor | None], _: object) -> None:
            for k in idx:
                g = grad_inputs[k]
                if g is None:
                    continue
                if filled[task]:
                    out[task].add_(g.reshape(-1))
                else:
                    out[task].copy_(g.reshape(-1))
                    filled[task] = True

        return keep

    handles = [fn.register_hook(keeper(owner[fn], idx)) for fn, idx in consumers.items()]
    if task_params is not None:  # once each: autograd.grad answers every entry of a repeat
        leaves = list({id(p): p for p in task_params if p.requires_grad}.values())
    if isinstance(parts, Tensor):
        outputs, seeds = [parts], [torch.ones_like(parts)]
    else:
        outputs = [x for x, r in zip(parts, roots, strict=True) if r is not None]
        seeds = [torch.ones_like(x) for x in outputs]
    try:
        grads = torch.autograd.grad(outputs, [features, *leaves], seeds, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        for task, done in enumerate(filled):
            if not done:
                out[task].zero_()
        for p, g in zip(leaves, grads[1:], strict=True):
            if g is not None:
                add_grad(p, g)
    return out
