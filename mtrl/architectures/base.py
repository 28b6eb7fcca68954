"""The :class:`MultiTaskModel` base class every architecture implements.

Call forms (T tasks, batch B):

- ``model(x)`` -> ``list[Tensor]`` of T outputs, each for the whole batch (supervised MTL: every
  sample is labelled for every task). Output t has shape (B, *out_t).
- ``model(x, task_ids)`` with ``task_ids`` (B,) int64 -> ``Tensor`` (B, *out): sample b's output from
  its own task's head/column (RL: each sample belongs to one task). All tasks must then share one
  output shape. Computed batched: architectures whose task paths are separable group samples by task
  (a loop over tasks, never samples); the others compute every task's output and select.
- ``model(x, task_ids=None, return_features=True)`` -> ``(outputs, z)`` where ``z`` is the shared
  representation the task heads consume, (B, D), still attached to the graph, so gradient methods can
  take per-task gradients w.r.t. ``z`` (e.g. MGDA-UB, Sener 2018) and then call
  ``z.backward(aggregated)``. Only architectures with ``supports_features = True`` (hard sharing,
  MMoE) have such a representation; the others raise ``NotImplementedError``.

Parameter partition: ``shared_parameters()`` and ``task_parameters(t)`` are disjoint and cover every
parameter. A parameter is task-specific only if no other task's loss can reach it. Subclasses define
``task_parameters``; ``shared_parameters`` is everything else.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from mtrl.architectures.stacked import check_task_ids, group_by_task
from mtrl.weighting.grads import last_weight

__all__ = ["MultiTaskModel", "mlp", "require_hidden"]


class MultiTaskModel(nn.Module):
    """Base class: ``forward(x, task_ids=None, return_features=False)`` over T tasks.

    Subclasses implement :meth:`forward_all` and :meth:`task_parameters`; they may override
    :meth:`forward_task` (one task's output, used to group samples by task in the ``task_ids`` form
    when ``separable = True``), :meth:`features` / :meth:`heads_from_features` (shared
    representation) and :meth:`penalty`.
    """

    num_tasks: int
    #: True if task t's output can be computed without the other tasks' paths (group by task).
    separable: bool = False
    #: True if the model has one shared representation that all heads consume (see module doc).
    supports_features: bool = False

    # --- to implement -------------------------------------------------------------------------
    def forward_all(self, x: Tensor) -> list[Tensor]:
        """Every task's output for the whole batch: list of T tensors (B, *out_t)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement forward_all(x) -> list of T outputs"
        )

    def task_parameters(self, t: int) -> list[nn.Parameter]:
        """Parameters that only task ``t``'s loss reaches."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement task_parameters(t) -> list of parameters "
            "only task t's loss reaches ([] if none)"
        )

    def forward_task(self, x: Tensor, t: int) -> Tensor:
        """Task ``t``'s output for x (B, ...) -> (B, *out_t). Default: from :meth:`forward_all`."""
        return self.forward_all(x)[t]

    def features(self, x: Tensor) -> Tensor:
        """Shared representation z (B, D) the heads consume (only if ``supports_features``)."""
        raise NotImplementedError(f"{type(self).__name__} has no single shared representation")

    def heads_from_features(self, z: Tensor, x: Tensor) -> list[Tensor]:
        """All task outputs from shared features z (B, D) (and the input x, e.g. MMoE gates)."""
        raise NotImplementedError(f"{type(self).__name__} has no single shared representation")

    def penalty(self) -> Tensor:
        """Architecture regulariser to add to the loss (soft-sharing distance, ...); 0 by default."""
        p = next(self.parameters(), None)
        return torch.zeros(
            (), device=None if p is None else p.device, dtype=None if p is None else p.dtype
        )

    # --- provided -----------------------------------------------------------------------------
    def forward(
        self, x: Tensor, task_ids: Tensor | None = None, return_features: bool = False
    ) -> Tensor | list[Tensor] | tuple[Tensor | list[Tensor], Tensor]:
        """See the module docstring for the three call forms. x (B, ...), task_ids (B,) int64."""
        if return_features:
            if not self.supports_features:
                raise NotImplementedError(
                    f"{type(self).__name__} has no single shared representation; "
                    "return_features is supported by hard_sharing and mmoe"
                )
            z = self.features(x)
            outs = self.heads_from_features(z, x)
            return (outs if task_ids is None else self._select(outs, task_ids)), z
        if task_ids is None:
            return self.forward_all(x)
        return self.forward_routed(x, task_ids)

    def forward_routed(self, x: Tensor, task_ids: Tensor) -> Tensor:
        """The ``task_ids`` form: x (B, ...), task_ids (B,) -> (B, *out).

        Default: group samples by task through :meth:`forward_task` if ``separable``, else compute
        every task's output and select. Override to share work across tasks (e.g. a shared trunk).
        """
        if self.separable:
            return group_by_task(x, task_ids, self.num_tasks, self.forward_task)
        return self._select(self.forward_all(x), task_ids)

    def _select(self, outs: list[Tensor], task_ids: Tensor) -> Tensor:
        """Pick sample b's row from ``outs[task_ids[b]]``: outs T x (B, *out) -> (B, *out)."""
        task_ids = check_task_ids(task_ids, outs[0].shape[0], len(outs))
        shapes = {tuple(o.shape) for o in outs}
        if len(shapes) != 1:
            raise ValueError(
                f"the task_ids form needs equal output shapes for all tasks, got {sorted(shapes)}"
            )
        stacked = torch.stack(outs)  # (T, B, *out)
        batch = torch.arange(stacked.shape[1], device=stacked.device)
        return stacked[task_ids, batch]

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every parameter not in any ``task_parameters(t)`` (order of ``self.parameters()``)."""
        task_ids = {id(p) for t in range(self.num_tasks) for p in self.task_parameters(t)}
        return [p for p in self.parameters() if id(p) not in task_ids]

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The weight(s) of the last shared layer: GradNorm's ``W`` (Chen et al. 2018), whose
        per-task gradient norms it balances. Default: the last shared weight matrix (not a bias);
        [] if nothing is shared. Architectures whose last shared layer is several tensors
        (MMoE's experts) override it."""
        return last_weight(self.shared_parameters())

    def named_task_parameters(self, t: int) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` pairs of :meth:`task_parameters`."""
        ids = {id(p) for p in self.task_parameters(t)}
        return ((n, p) for n, p in self.named_parameters() if id(p) in ids)


def mlp(
    dims: list[int],
    activation: type[nn.Module] = nn.ReLU,
    activate_last: bool = True,
) -> nn.Sequential:
    """``Linear(dims[0], dims[1]) -> act -> ... -> Linear(dims[-2], dims[-1]) [-> act]``."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2 or activate_last:
            layers.append(activation())
    return nn.Sequential(*layers)


def require_hidden(name: str, hidden: Sequence[int]) -> None:
    """Raise a ``ValueError`` naming ``name`` if ``hidden`` is empty: architectures that mix or
    attend between hidden layers need at least one."""
    if len(hidden) == 0:
        raise ValueError(f"{name} needs at least one hidden layer, got hidden={list(hidden)}")


def column_depth(columns: Sequence[Sequence[nn.Module]], heads: Sequence[nn.Module]) -> int:
    """Check one equally deep column per head (cross-stitch, sluice); return the depth."""
    if len(columns) != len(heads):
        raise ValueError(f"need one column per head, got {len(columns)} and {len(heads)}")
    depths = {len(c) for c in columns}
    if len(depths) != 1:
        raise ValueError(f"all columns need the same number of layers, got {depths}")
    return depths.pop()
