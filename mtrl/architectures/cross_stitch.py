"""Cross-stitch networks (Misra et al. 2016, "Cross-stitch Networks for Multi-task Learning").

One column per task; after each layer l the T column outputs are mixed by a learnable T x T matrix:
``y'_t = sum_s alpha_l[t, s] y_s`` (per layer), or one T x T matrix per channel (per channel).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from mtrl.architectures._registry import ARCHITECTURES
from mtrl.architectures.base import MultiTaskModel, column_depth, mlp, require_hidden


def stitch_init(num_tasks: int, alpha_self: float, alpha_other: float) -> Tensor:
    """(T, T) matrix with ``alpha_self`` on the diagonal and ``alpha_other`` elsewhere."""
    eye = torch.eye(num_tasks)
    return alpha_self * eye + alpha_other * (1.0 - eye)


def build_columns(
    in_dim: int, hidden: Sequence[int], num_tasks: int, activation: type[nn.Module]
) -> list[list[nn.Module]]:
    """T MLP columns, each a list of ``Linear -> activation`` layers ``in_dim -> hidden...``."""
    dims = [in_dim, *hidden]
    return [
        [mlp([a, b], activation) for a, b in itertools.pairwise(dims)] for _ in range(num_tasks)
    ]


@ARCHITECTURES.register("cross_stitch")
class CrossStitch(MultiTaskModel):
    """``columns[t][l]`` layer l of task t's column; ``heads[t]`` maps the last layer to (B, *out_t).

    Outputs of layer l (B, C_l, ...) must have one shape across columns; a cross-stitch unit follows
    every layer. ``per_channel`` gives alpha_l (C_l, T, T) (``channels`` lists C_l, dim 1), else
    (T, T). Init ``alpha_self`` on the diagonal, ``alpha_other`` off it: (1, 0) = independent columns
    (default), (0.9, 0.1) as in the paper. Since alpha mixes every column into every task's path, the
    columns and alphas are shared parameters; task t owns only ``heads[t]``.
    """

    def __init__(
        self,
        columns: Sequence[Sequence[nn.Module]],
        heads: Sequence[nn.Module],
        per_channel: bool = False,
        channels: Sequence[int] | None = None,
        alpha_self: float = 1.0,
        alpha_other: float = 0.0,
    ) -> None:
        super().__init__()
        num_layers = column_depth(columns, heads)
        self.num_tasks = len(heads)
        self.num_layers = num_layers
        self.columns = nn.ModuleList(nn.ModuleList(c) for c in columns)
        self.heads = nn.ModuleList(heads)
        self.per_channel = per_channel
        if per_channel and (channels is None or len(channels) != self.num_layers):
            raise ValueError("per_channel=True needs `channels`, one channel count per layer")
        base = stitch_init(self.num_tasks, alpha_self, alpha_other)
        sizes = channels if per_channel else None
        self.alphas = nn.ParameterList(
            nn.Parameter(base.expand(sizes[i], -1, -1).clone() if sizes else base.clone())
            for i in range(self.num_layers)
        )

    @classmethod
    def mlp(
        cls,
        in_dim: int,
        hidden: Sequence[int],
        out_dims: Sequence[int],
        activation: type[nn.Module] = nn.ReLU,
        **kwargs: object,
    ) -> CrossStitch:
        """T MLP columns ``in_dim -> hidden...`` with linear heads; kwargs go to the constructor."""
        require_hidden(cls.__name__, hidden)
        cols = build_columns(in_dim, hidden, len(out_dims), activation)
        heads = [nn.Linear(hidden[-1], o) for o in out_dims]
        if kwargs.get("per_channel"):
            kwargs.setdefault("channels", list(hidden))
        return cls(cols, heads, **kwargs)  # type: ignore[arg-type]

    def stitch(self, ys: Sequence[Tensor], layer: int) -> list[Tensor]:
        """Mix T outputs (B, C, ...) of ``layer`` with its alpha; returns T mixed outputs."""
        y = torch.stack(list(ys))  # (T, B, C, ...)
        alpha = self.alphas[layer]
        if self.per_channel:
            # einsum returns a channel-major view; row-major makes the next layer's product the
            # same kernel, with the same rounding, as an unstitched column's (CPU-dependent else).
            mixed = torch.einsum("cts,sbc...->tbc...", alpha, y).contiguous()
        else:
            mixed = torch.einsum("ts,sb...->tb...", alpha, y)
        return list(mixed.unbind(0))

    def column_features(self, x: Tensor) -> list[Tensor]:
        """Each task's input to its head after the last cross-stitch unit: T x (B, C_L, ...)."""
        hs = [x] * self.num_tasks
        for layer in range(self.num_layers):
            ys = [
                cast(nn.ModuleList, col)[layer](h) for col, h in zip(self.columns, hs, strict=True)
            ]
            hs = self.stitch(ys, layer)
        return hs

    def forward_all(self, x: Tensor) -> list[Tensor]:
        hs = self.column_features(x)
        return [head(h) for head, h in zip(self.heads, hs, strict=True)]

    def mixing_parameters(self) -> list[nn.Parameter]:
        """The learned mixing weights, for their own optimiser group: Misra et al. train them with
        a learning rate 10^2-10^3 times the network's."""
        return list(self.alphas)

    def task_parameters(self, t: int) -> list[nn.Parameter]:
        return list(self.heads[t].parameters())
