"""Sluice networks (Ruder et al. 2017/2019, "Latent Multi-task Architecture Learning", arXiv:1705.08142).

One column per task; each layer's output (B, D, ...) is split along dim 1 into G subspaces and the
T*G subspaces are mixed by a learnable (T*G) x (T*G) alpha matrix (cross-stitch on subspaces). Each
task's head reads a learned beta-weighted sum of its column's (mixed) layer outputs (layer skips).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from mtrl.architectures._registry import ARCHITECTURES
from mtrl.architectures.base import MultiTaskModel, column_depth
from mtrl.architectures.cross_stitch import build_columns, stitch_init


@ARCHITECTURES.register("sluice")
class Sluice(MultiTaskModel):
    """``columns[t][l]`` layer l of task t (outputs (B, D, ...) equal across columns and layers,
    D divisible by ``num_subspaces`` G); ``heads[t]`` reads ``sum_l beta_t[l] h_{t,l}``.

    alpha_l (T*G, T*G), index ``t*G + g``, init ``alpha_self`` on the diagonal and ``alpha_other``
    elsewhere ((1, 0): independent columns). beta_t (L,) init one-hot on the last layer
    (``beta_init='last'``) or 1/L (``'uniform'``). ``penalty()`` = ``ortho_weight`` x
    sum_{t,l} sum_{g<h} ||G_{t,l,g}^T G_{t,l,h}||_F^2, the paper's subspace orthogonality constraint
    on the (B, D/G) subspace activations of the last forward pass (before mixing).
    Columns and alphas are shared; task t owns ``heads[t]`` and ``betas[t]``.
    """

    def __init__(
        self,
        columns: Sequence[Sequence[nn.Module]],
        heads: Sequence[nn.Module],
        num_subspaces: int = 2,
        alpha_self: float = 1.0,
        alpha_other: float = 0.0,
        beta_init: str = "last",
        ortho_weight: float = 0.0,
    ) -> None:
        super().__init__()
        num_layers = column_depth(columns, heads)
        if beta_init not in ("last", "uniform"):
            raise ValueError(f"beta_init must be 'last' or 'uniform', got {beta_init!r}")
        if num_subspaces < 1:
            raise ValueError(f"num_subspaces must be >= 1, got {num_subspaces}")
        width = getattr(heads[0], "in_features", None) if heads else None  # the columns' width
        if width is not None and width % num_subspaces:  # else the first forward pass fails
            raise ValueError(
                f"hidden width {width} is not divisible by num_subspaces {num_subspaces}"
            )
        self.num_tasks = len(heads)
        self.num_layers = num_layers
        self.num_subspaces = num_subspaces
        self.ortho_weight = ortho_weight
        self.columns = nn.ModuleList(nn.ModuleList(c) for c in columns)
        self.heads = nn.ModuleList(heads)
        tg = self.num_tasks * num_subspaces
        self.alphas = nn.ParameterList(
            nn.Parameter(stitch_init(tg, alpha_self, alpha_other)) for _ in range(self.num_layers)
        )
        if beta_init == "last":
            beta = torch.zeros(self.num_layers)
            beta[-1] = 1.0
        else:
            beta = torch.full((self.num_layers,), 1.0 / self.num_layers)
        self.betas = nn.ParameterList(nn.Parameter(beta.clone()) for _ in range(self.num_tasks))
        self._subspaces: list[Tensor] = []

    @classmethod
    def mlp(
        cls,
        in_dim: int,
        hidden: Sequence[int],
        out_dims: Sequence[int],
        activation: type[nn.Module] = nn.ReLU,
        **kwargs: object,
    ) -> Sluice:
        """T MLP columns ``in_dim -> hidden...`` (equal widths) with linear heads."""
        if len(set(hidden)) != 1:
            raise ValueError(f"sluice layer skips need equal hidden widths, got {list(hidden)}")
        cols = build_columns(in_dim, hidden, len(out_dims), activation)
        heads = [nn.Linear(hidden[-1], o) for o in out_dims]
        return cls(cols, heads, **kwargs)  # type: ignore[arg-type]

    def stitch(self, ys: Sequence[Tensor], layer: int) -> list[Tensor]:
        """Mix T outputs (B, D, ...) as T*G subspaces (B, D/G, ...) with alpha_layer."""
        t, g = self.num_tasks, self.num_subspaces
        y = torch.stack(list(ys))  # (T, B, D, ...)
        _, b, d, *rest = y.shape
        if d % g:
            raise ValueError(f"layer {layer} width {d} is not divisible by num_subspaces {g}")
        sub = y.reshape(t, b, g, d // g, *rest).transpose(1, 2).reshape(t * g, b, d // g, *rest)
        if self.ortho_weight > 0:
            # the size spelled out: -1 is ambiguous for an empty batch
            self._subspaces.append(sub.reshape(t, g, b, d // g * math.prod(rest)))
        mixed = torch.einsum("ij,jb...->ib...", self.alphas[layer], sub)
        return list(
            mixed.reshape(t, g, b, d // g, *rest).transpose(1, 2).reshape(y.shape).unbind(0)
        )

    def forward_all(self, x: Tensor) -> list[Tensor]:
        self._subspaces = []
        hs = [x] * self.num_tasks
        outs: list[list[Tensor]] = []
        for layer in range(self.num_layers):
            ys = [
                cast(nn.ModuleList, col)[layer](h) for col, h in zip(self.columns, hs, strict=True)
            ]
            hs = self.stitch(ys, layer)
            outs.append(hs)
        results = []
        for t, head in enumerate(self.heads):
            layer_outs = torch.stack([o[t] for o in outs])  # (L, B, D, ...)
            beta = self.betas[t].reshape(-1, *([1] * (layer_outs.dim() - 1)))
            results.append(head((beta * layer_outs).sum(0)))
        return results

    def penalty(self) -> Tensor:
        """Subspace orthogonality of the last forward pass, times ``ortho_weight`` (0 if none)."""
        total = super().penalty()
        for sub in self._subspaces:  # (T, G, B, P)
            gram = torch.einsum("tgbp,thbq->tghpq", sub, sub)  # G_g^T G_h per task, (T,G,G,P,P)
            g = sub.shape[1]
            upper = torch.triu(torch.ones(g, g, device=sub.device, dtype=sub.dtype), diagonal=1)
            total = total + (gram.square().sum((-1, -2)) * upper).sum()
        return self.ortho_weight * total

    def mixing_parameters(self) -> list[nn.Parameter]:
        """The learned mixing weights, for their own optimiser group: Misra et al. train them with
        a learning rate 10^2-10^3 times the network's."""
        return [*self.alphas, *self.betas]

    def task_parameters(self, t: int) -> list[nn.Parameter]:
        return [*self.heads[t].parameters(), self.betas[t]]
