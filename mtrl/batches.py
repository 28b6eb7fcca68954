"""Supervised data as device batches for :class:`mtrl.trainer.Trainer`: ``(x, targets)`` tensors
(shuffled and cut into batches here) or any re-iterable of ``(x, targets)`` batches (e.g. a
``DataLoader``); ``targets`` is ``(N, T, ...)`` or a sequence of T tensors ``(N, ...)``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeGuard

import torch
from torch import Tensor

Batch = tuple[Tensor, Tensor | Sequence[Tensor]]
Data = tuple[Tensor, Tensor | Sequence[Tensor]] | Iterable[Batch]


def split_targets(targets: Tensor | Sequence[Tensor], num_tasks: int) -> list[Tensor]:
    """T per-task targets from a ``(B, T, ...)`` tensor or a sequence of T tensors ``(B, ...)``."""
    if isinstance(targets, Tensor):
        if targets.dim() < 2 or targets.shape[1] != num_tasks:
            raise ValueError(
                f"targets tensor must have shape (B, T={num_tasks}, ...), got {tuple(targets.shape)}"
            )
        return [targets[:, t] for t in range(num_tasks)]
    targets = list(targets)
    if len(targets) != num_tasks:
        raise ValueError(f"expected {num_tasks} per-task targets, got {len(targets)}")
    return targets


def _is_tensor_pair(data: Any) -> TypeGuard[Batch]:
    """``(x, targets)`` tensors (a tuple or list whose first item is a tensor), not batches."""
    return isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], Tensor)


def iterate_batches(
    data: Data,
    num_tasks: int,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, list[Tensor]]]:
    """Yield ``(x (B, ...), [y_t (B, ...)] * T)`` on ``device``. Tensors are cut into batches of
    ``batch_size``, in an order drawn from ``generator`` (None keeps their order); an iterable's
    batches are passed through as they come."""
    if _is_tensor_pair(data):
        x, targets = data
        ys = split_targets(targets, num_tasks)
        n = x.shape[0]
        sizes = [y.shape[0] if isinstance(y, Tensor) and y.dim() else None for y in ys]
        if any(size != n for size in sizes):
            # indexing a longer target with x's permutation would silently drop its tail
            raise ValueError(f"x has {n} samples but the per-task targets have {sizes}")
        order = torch.arange(n) if generator is None else torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            yield _to(x[idx], device), [_to(y[idx], device) for y in ys]
        return
    if isinstance(data, tuple | list) and len(data) == 2 and hasattr(data[0], "shape"):
        raise TypeError(
            f"data must be (x, targets) torch tensors or an iterable of such batches; "
            f"x is a {type(data[0]).__name__} (convert it with torch.as_tensor)"
        )
    for x, targets in data:
        ys = split_targets(targets, num_tasks)
        yield _to(x, device), [_to(y, device) for y in ys]


def _to(t: Tensor, device: torch.device) -> Tensor:
    """``t`` on ``device``; to a GPU without waiting for it: a blocking copy to CUDA synchronises
    its stream (T + 1 times per batch). From pageable memory the copy has read its source when it
    returns; a DataLoader's pinned batch is kept by the caching allocator until it is done. A
    copy to the CPU stays blocking (its result is read at once)."""
    return t.to(device, non_blocking=torch.device(device).type != "cpu")


def num_batches(data: Data, batch_size: int) -> int | None:
    """Batches per pass over ``data`` (None for an iterable without ``len``)."""
    if _is_tensor_pair(data):
        return -(-data[0].shape[0] // batch_size)
    return len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]
