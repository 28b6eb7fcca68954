"""Per-task gradients of the shared layers in one backward pass, for the gradient weightings.

PCGrad, MGDA, GradNorm and the like need each task's gradient of the shared parameters. Taken
one task at a time (:func:`mtrl.weighting.grads.task_gradients`), each backward runs over the
whole batch, although a task's loss reaches only its own rows: the other K - 1 tasks' rows carry
zeros through every layer, and K tasks cost K full backward passes. In the loss pass's batch the
rows are task-major (:mod:`agents.replay`), and no layer mixes rows, so one backward of the sum
of the task losses gives every row the gradient of its own task's loss; a shared layer's weight
gradient then splits into one sum per task's block of rows. The encoders' shared layers in the
loss pass, replayed or recomputed, run through :class:`agents.replay._ReplayConv` and
``_ReplayLinear``, which take their weight gradients block by block while a
:class:`BlockedGrads` is open, writing them into the columns of the (K, P) matrix that
:func:`blocked_task_gradients` returns: the same matrix for one backward's work (other shared
parameters, e.g. a shared head's, are taken one task at a time as before).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from mtrl.weighting.grads import as_loss_vector, task_gradients

# The sink of the backward in progress, if any. A plain module global, not a thread-local or a
# ContextVar: on CUDA the autograd engine runs the layers' backward on its own device threads.
_OPEN: list[BlockedGrads] = []


class BlockedGrads:
    """Per-task gradients (K, *shape) of the parameters whose layers took them block by block
    during one backward; a parameter seen twice (used by two layers) is dropped."""

    def __init__(self, num_tasks: int, slots: dict[int, Tensor] | None = None) -> None:
        self.num_tasks = num_tasks
        self.grads: dict[int, Tensor] = {}
        self.seen: set[int] = set()
        # (K, *shape) views into the caller's (K, P) matrix, by parameter id: a layer writes its
        # per-task gradients there instead of stacking them into a tensor that is copied again
        self.slots = slots or {}

    def add(self, param_id: int, grads: Tensor) -> None:
        """Record one layer's per-task gradients of the parameter with ``id`` ``param_id``."""
        if param_id in self.seen:
            self.grads.pop(param_id, None)  # another use's gradient would be missing from it
        else:
            self.grads[param_id] = grads
        self.seen.add(param_id)

    def get(self, param: Tensor) -> Tensor | None:
        return self.grads.get(id(param))

    def slot(self, param_id: int) -> Tensor | None:
        """Where a layer may write the (K, *shape) per-task gradients of the parameter with
        ``id`` ``param_id`` (then passed to :meth:`record`), or None: make a tensor of them.
        A second layer using the parameter overwrites it; the caller then fills the columns
        from the one-task-at-a-time path (:meth:`add` dropped the parameter)."""
        return self.slots.get(param_id)

    def record(
        self, param_ids: Sequence[int], per_task: Sequence[Tensor | None]
    ) -> list[Tensor | None]:
        """A layer's per-task gradients (K, *shape) of its weight and bias (None: not asked
        for), recorded under ``param_ids``; returns their sums over tasks, the layer's usual
        gradients."""
        sums: list[Tensor | None] = []
        for param_id, grads in zip(param_ids, per_task, strict=True):
            if grads is not None:
                self.add(param_id, grads)
            sums.append(None if grads is None else grads.sum(0))
        return sums


def open_blocks(rows: int) -> BlockedGrads | None:
    """The sink, when one is open and a batch of ``rows`` (along its first dimension) splits
    into its K task blocks; else None (the layer computes its gradients as usual)."""
    if not _OPEN:
        return None
    sink = _OPEN[-1]
    return sink if sink.num_tasks > 1 and rows % sink.num_tasks == 0 else None


@contextmanager
def blocked(num_tasks: int, slots: dict[int, Tensor] | None = None) -> Iterator[BlockedGrads]:
    """Inside: replayed shared layers record per-task weight gradients into the yielded sink
    (into ``slots``' views where given, :class:`BlockedGrads`)."""
    sink = BlockedGrads(num_tasks, slots)
    _OPEN.append(sink)
    try:
        yield sink
    finally:
        _OPEN.remove(sink)


def blocked_task_gradients(
    losses: Tensor | Sequence[Tensor], inputs: list[Tensor], blockable: Collection[int]
) -> Tensor:
    """``task_gradients(losses, inputs)`` (K, P) for the K task losses of a loss pass whose rows
    are task-major: one backward of their sum for the inputs whose ``id`` is in ``blockable``
    (the encoders' parameters), one backward per task for the rest and for any such input no
    layer took block by block (module docstring)."""
    vec = as_loss_vector(losses)
    k = vec.shape[0]
    chosen = [p for p in inputs if id(p) in blockable]
    if k < 2 or not vec.requires_grad or not chosen:
        return task_gradients(losses, inputs)
    sizes = [p.numel() for p in inputs]
    matrix = inputs[0].new_empty(k, sum(sizes))
    cols = matrix.split(sizes, 1)
    views = [c.view(k, *p.shape) for p, c in zip(inputs, cols, strict=True)]
    slots = {id(p): v for p, v in zip(inputs, views, strict=True) if id(p) in blockable}
    with blocked(k, slots) as sink:
        torch.autograd.grad(vec.sum(), chosen, retain_graph=True, allow_unused=True)
    rest: list[int] = []
    for i, (p, view) in enumerate(zip(inputs, views, strict=True)):
        got = sink.get(p)
        if got is None:
            rest.append(i)
        elif got is not view:  # the layer made a tensor of them (or p is listed twice)
            view.copy_(got)
    if rest:
        plain = task_gradients(losses, [inputs[i] for i in rest])
        for i, part in zip(rest, plain.split([sizes[i] for i in rest], 1), strict=True):
            cols[i].copy_(part)
    return matrix
