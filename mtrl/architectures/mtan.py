"""Multi-Task Attention Network (Liu, Johns & Davison 2019, "End-to-End Multi-Task Learning with
Attention", CVPR), simplified to a sequence of shared stages.

Shared stages s_1..s_L give h_l = s_l(h_{l-1}) (B, D_l). Task t keeps an attended feature f_{t,l}:
``a_{t,l} = sigmoid(A_{t,l}([h_l, f_{t,l-1}]))``, ``f_{t,l} = a_{t,l} * h_l`` (for l = 1 the
attention reads h_1 alone), and its head reads f_{t,L}. Simplification of the paper: the paper's
mask is computed from the first layer of a block and applied to the last one, with a shared conv
between stages; here a stage is one block and the mask reads the stage output itself. For (B, C, H, W)
stages, concatenation is along channels, so consecutive stages must keep their spatial size.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from mtrl.architectures._registry import ARCHITECTURES
from mtrl.architectures.base import MultiTaskModel, mlp, require_hidden
from mtrl.architectures.stacked import group_by_task


@ARCHITECTURES.register("mtan")
class MTAN(MultiTaskModel):
    """``stages[l]`` shared; ``attention[t][l]`` maps ``[h_l, f_{t,l-1}]`` (cat on dim 1; h_1 alone
    for l = 0) to mask logits shaped like h_l; ``heads[t]`` maps f_{t,L} to (B, *out_t).

    Task t owns ``attention[t]`` and ``heads[t]``.
    """

    def __init__(
        self,
        stages: Sequence[nn.Module],
        attention: Sequence[Sequence[nn.Module]],
        heads: Sequence[nn.Module],
    ) -> None:
        super().__init__()
        if len(attention) != len(heads) or any(len(a) != len(stages) for a in attention):
            raise ValueError("need attention[t] with one module per stage for every head t")
        self.stages = nn.ModuleList(stages)
        self.attention = nn.ModuleList(nn.ModuleList(a) for a in attention)
        self.heads = nn.ModuleList(heads)
        self.num_tasks = len(heads)

    @classmethod
    def mlp(
        cls,
        in_dim: int,
        hidden: Sequence[int],
        out_dims: Sequence[int],
        activation: type[nn.Module] = nn.ReLU,
    ) -> MTAN:
        """Shared stages ``Linear -> act`` over ``in_dim -> hidden...``; per-task linear attention
        ``D_l (+ D_{l-1}) -> D_l``; linear heads ``hidden[-1] -> out_t``."""
        require_hidden(cls.__name__, hidden)
        dims = [in_dim, *hidden]
        stages = [mlp([a, b], activation) for a, b in itertools.pairwise(dims)]
        att_in = [hidden[0]] + [hidden[i] + hidden[i - 1] for i in range(1, len(hidden))]
        attention = [
            [nn.Linear(i, o) for i, o in zip(att_in, hidden, strict=True)] for _ in out_dims
        ]
        return cls(stages, attention, [nn.Linear(hidden[-1], o) for o in out_dims])

    def shared_stages(self, x: Tensor) -> list[Tensor]:
        """The shared trunk's stage outputs [h_1, ..., h_L]."""
        hs = []
        for stage in self.stages:
            x = stage(x)
            hs.append(x)
        return hs

    def _attention(self, t: int) -> nn.ModuleList:
        """Task t's attention modules, one per stage."""
        return cast(nn.ModuleList, self.attention[t])

    def _task(self, hs: Sequence[Tensor], t: int) -> Tensor:
        f: Tensor | None = None
        for att, h in zip(self._attention(t), hs, strict=True):
            inp = h if f is None else torch.cat([h, f], 1)
            f = torch.sigmoid(att(inp)) * h
        return self.heads[t](f)

    def attention_masks(self, x: Tensor, t: int) -> list[Tensor]:
        """Task t's masks a_{t,l} in (0, 1), shaped like each h_l (for inspection)."""
        masks, f = [], None
        for att, h in zip(self._attention(t), self.shared_stages(x), strict=True):
            a = torch.sigmoid(att(h if f is None else torch.cat([h, f], 1)))
            masks.append(a)
            f = a * h
        return masks

    def forward_all(self, x: Tensor) -> list[Tensor]:
        hs = self.shared_stages(x)
        return [self._task(hs, t) for t in range(self.num_tasks)]

    def forward_routed(self, x: Tensor, task_ids: Tensor) -> Tensor:
        """Shared stages once on the batch; each task's attention and head on its own samples."""
        hs = tuple(self.shared_stages(x))
        return group_by_task(hs, task_ids, self.num_tasks, lambda *a: self._task(a[:-1], a[-1]))

    def task_parameters(self, t: int) -> list[nn.Parameter]:
        return [*self.attention[t].parameters(), *self.heads[t].parameters()]
