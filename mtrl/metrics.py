"""Per-task evaluation metrics for the supervised :class:`mtrl.trainer.Trainer`.

Each metric maps ``(output, target)`` for one task and one batch to a scalar tensor, the batch
*mean*; the trainer averages them over a split weighted by batch size.
"""

from __future__ import annotations

from collections.abc import Callable

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
