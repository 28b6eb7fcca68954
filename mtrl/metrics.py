"""Per-task evaluation metrics for the supervised :class:`mtrl.trainer.Trainer`.

Each metric maps ``(output, target)`` for one task and one batch to a scalar tensor, the batch
*mean*; the trainer averages them over a split weighted by batch size (:class:`MetricSums`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

Metric = Callable[[Tensor, Tensor], Tensor]


def _same_shape(what: str, a: Tensor, b: Tensor) -> None:
    # broadcasting (B, 1) against (B,) would silently compare every pair
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ")


def accuracy(output: Tensor, target: Tensor) -> Tensor:
    """Fraction of correct argmax predictions: logits (B, C), integer labels (B,) -> ()."""
    pred = output.argmax(dim=-1)
    _same_shape("accuracy (argmax of the output vs target)", pred, target)
    return (pred == target).float().mean()


def _difference(what: str, output: Tensor, target: Tensor) -> Tensor:
    _same_shape(what, output, target)
    dtype = output.dtype if output.is_floating_point() else torch.get_default_dtype()
    return output.to(dtype) - target.to(dtype)


def mse(output: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over every element: (B, ...) and (B, ...) of the same shape -> ()."""
    return _difference("mse", output, target).square().mean()


def mae(output: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over every element: (B, ...) and (B, ...) of the same shape -> ()."""
    return _difference("mae", output, target).abs().mean()


METRICS: dict[str, Metric] = {"accuracy": accuracy, "mse": mse, "mae": mae}


def cross_entropy(output: Tensor, target: Tensor) -> Tensor:
    """Classification loss: logits (B, C), labels (B,) -> () (``F.cross_entropy``)."""
    return torch.nn.functional.cross_entropy(output, target)


class MetricSums:
    """Size-weighted sums of each task's loss and metrics over one pass: one float64 vector on
    the device (the T losses, then every task's metrics in order), added to once per batch and
    read once per pass, in :meth:`means` (no host sync per batch: on CUDA a sync per task and
    metric each step stalled the GPU; one vector instead of a tensor per value also saves the
    per-value Python and dispatch work). Each entry takes the values and operations a separate
    sum of its own did: ``0 + value.to(float64) * n`` added up batch by batch."""

    def __init__(self, task_names: Sequence[str], metrics: Sequence[Mapping[str, Metric]]) -> None:
        self.task_names = list(task_names)
        self.metrics = [list(m.items()) for m in metrics]
        self.total: Tensor | None = None
        self.n = 0.0

    def add(self, losses: Tensor, outs: Sequence[Tensor], ys: Sequence[Tensor]) -> None:
        n = ys[0].shape[0]
        f64, device = torch.float64, losses.device
        values = [losses.to(f64)]
        for t, metrics in enumerate(self.metrics):
            for _, fn in metrics:
                value = torch.as_tensor(fn(outs[t], ys[t]), dtype=f64, device=device)
                values.append(value.reshape(1))
        batch = torch.cat(values) * n
        if self.total is None:
            self.total = torch.zeros_like(batch)
        self.total += batch
        self.n += n

    def means(self) -> dict[str, dict[str, float]]:
        """Per-task means (``{}`` for every task if no batch was added)."""
        if self.total is None:
            return {name: {} for name in self.task_names}
        totals = self.total.tolist()  # the one read of the pass
        div = max(self.n, 1.0)
        out: dict[str, dict[str, float]] = {}
        i = len(self.task_names)  # the metrics follow the T losses
        for t, name in enumerate(self.task_names):
            out[name] = {"loss": totals[t] / div}
            for key, _ in self.metrics[t]:
                out[name][key] = totals[i] / div
                i += 1
        return out
