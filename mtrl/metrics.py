"""Per-task evaluation metrics for the supervised :class:`mtrl.trainer.Trainer`.

Each metric maps ``(output, target)`` for one task and one batch to a scalar tensor, the batch
*mean*; the trainer averages them over a split weighted by batch size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Metric = Callable[[Tensor, Tensor], Tensor]


def accuracy(output: Tensor, target: Tensor) -> Tensor:
    """Fraction of correct argmax predictions: logits (B, C), integer labels (B,) -> ()."""
    return (output.argmax(dim=-1) == target).float().mean()


def mse(output: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over every element: (B, ...) and (B, ...) -> ()."""
    return (output - target.to(output.dtype)).square().mean()


def mae(output: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over every element: (B, ...) and (B, ...) -> ()."""
    return (output - target.to(output.dtype)).abs().mean()


METRICS: dict[str, Metric] = {"accuracy": accuracy, "mse": mse, "mae": mae}


def cross_entropy(output: Tensor, target: Tensor) -> Tensor:
    """Classification loss: logits (B, C), labels (B,) -> () (``F.cross_entropy``)."""
    return torch.nn.functional.cross_entropy(output, target)
