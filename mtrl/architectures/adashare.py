"""AdaShare (Sun et al. 2020, "AdaShare: Learning What To Share For Efficient Deep Multi-Task
Learning", NeurIPS; arXiv:1911.12423).

Shared residual blocks F_l; each task t learns a select/skip policy per block with select probability
alpha_{t,l}. Block l for task t: ``h <- u_{t,l} F_l(h) + (1 - u_{t,l}) h``, u sampled by Gumbel-softmax
with temperature ``tau`` in training (straight-through hard samples if ``hard``), argmax in eval.
One policy sample per task per forward call, shared by that task's samples (a policy is per task,
not per input). Anneal ``model.tau`` from outside. Simplifications: no curriculum over blocks and
no separate re-training phase with the sampled policy fixed; use ``eval()`` for the final policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtrl.architectures._registry import ARCHITECTURES
from mtrl.architectures.base import MultiTaskModel
from mtrl.architectures.stacked import group_by_task


class ResidualMLPBlock(nn.Module):
    """``h + act(Linear(h))``, (B, D) -> (B, D)."""

    def __init__(self, width: int, activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.act = activation()

    def forward(self, h: Tensor) -> Tensor:
        return h + self.act(self.linear(h))


@ARCHITECTURES.register("adashare")
class AdaShare(MultiTaskModel):
    """``stem`` shared (x -> h_0), ``blocks[l]`` shared shape-preserving blocks, ``heads[t]``.

    Task t owns ``policy_logits[t]`` (L, 2) = (select, skip) logits, init 0 (p = 0.5), and
    ``heads[t]``. ``penalty()`` = ``sparsity_weight`` x sum_{t,l} log alpha_{t,l} (pushes towards
    skipping) + ``sharing_weight`` x sum_{s<t} sum_l (L - l)/L |alpha_{s,l} - alpha_{t,l}|
    (l = 0..L-1: agreement weighted towards the lower blocks), the paper's two policy regularisers.
    The paper's sum runs over l = 1..L, which would give the top block weight 0; the authors' code
    weighs block l by (l+1)/L (rising with depth) or uniformly. This keeps the paper's direction
    (share the lower blocks) and gives the top block 1/L, so every block's agreement counts.
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        heads: Sequence[nn.Module],
        stem: nn.Module | None = None,
        tau: float = 5.0,
        hard: bool = True,
        sparsity_weight: float = 0.05,
        sharing_weight: float = 0.05,
    ) -> None:
        super().__init__()
        if not tau > 0:  # Gumbel-softmax divides by tau: 0 made every step non-finite
            raise ValueError(f"tau must be > 0, got {tau}")
        self.stem = stem if stem is not None else nn.Identity()
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleList(heads)
        self.num_tasks = len(self.heads)
        self.tau = float(tau)  # a plain float (no device sync); checkpointed as extra state
        self.hard = hard
        self.sparsity_weight = sparsity_weight
        self.sharing_weight = sharing_weight
        n = len(self.blocks)
        self.policy_logits = nn.ParameterList(
            nn.Parameter(torch.zeros(n, 2)) for _ in range(self.num_tasks)
        )

    @classmethod
    def mlp(
        cls,
        in_dim: int,
        hidden: Sequence[int],
        out_dims: Sequence[int],
        activation: type[nn.Module] = nn.ReLU,
        **kwargs: object,
    ) -> AdaShare:
        """Stem ``Linear(in_dim, w) -> act``, one residual block of width w per entry of ``hidden``
        (all equal to w), linear heads ``w -> out_t``."""
        if len(set(hidden)) != 1:
            raise ValueError(f"adashare blocks need equal hidden widths, got {list(hidden)}")
        w = hidden[0]
        stem = nn.Sequential(nn.Linear(in_dim, w), activation())
        blocks = [ResidualMLPBlock(w, activation) for _ in hidden]
        heads = [nn.Linear(w, o) for o in out_dims]
        return cls(blocks, heads, stem, **kwargs)  # type: ignore[arg-type]

    def get_extra_state(self) -> dict[str, float]:
        """The annealed temperature, so a checkpoint resumes with it (``state_dict``)."""
        return {"tau": self.tau}

    def set_extra_state(self, state: dict[str, float]) -> None:
        self.tau = float(state["tau"])

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # Checkpoints from before the temperature was saved keep the current one.
        state_dict.setdefault(prefix + "_extra_state", self.get_extra_state())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def select_probs(self) -> Tensor:
        """alpha (T, L): each task's probability of executing each block."""
        return torch.stack([lg.softmax(-1)[:, 0] for lg in self.policy_logits])

    def policy(self, t: int) -> Tensor:
        """u_t (L,): Gumbel-softmax samples in training, hard argmax (1 = select) in eval."""
        logits = self.policy_logits[t]
        if self.training:
            return F.gumbel_softmax(logits, tau=self.tau, hard=self.hard)[:, 0]
        return (logits[:, 0] >= logits[:, 1]).to(logits.dtype)

    def _blocks(self, h: Tensor, t: int) -> Tensor:
        """Task t's path through the blocks from the stem output h_0, then its head."""
        u = self.policy(t)
        # eval: which blocks run, read once (a host sync per block on CUDA otherwise)
        skip = None if self.training else [not selected for selected in u.bool().tolist()]
        for i, block in enumerate(self.blocks):
            if skip is not None and skip[i]:
                continue  # skipped in eval: save the compute
            h = u[i] * block(h) + (1 - u[i]) * h
        return self.heads[t](h)

    def forward_task(self, x: Tensor, t: int) -> Tensor:
        return self._blocks(self.stem(x), t)

    def forward_all(self, x: Tensor) -> list[Tensor]:
        h0 = self.stem(x)
        return [self._blocks(h0, t) for t in range(self.num_tasks)]

    def forward_routed(self, x: Tensor, task_ids: Tensor) -> Tensor:
        """Stem once on the batch; each task's block path and head on its own samples."""
        return group_by_task(self.stem(x), task_ids, self.num_tasks, self._blocks)

    def penalty(self) -> Tensor:
        """Sparsity + sharing regularisers on the select probabilities (see class docstring)."""
        alpha = self.select_probs()  # (T, L)
        num_blocks = alpha.shape[1]
        sparsity = alpha.log().sum()
        depth = torch.arange(num_blocks, device=alpha.device, dtype=alpha.dtype)
        w = (num_blocks - depth) / num_blocks
        diff = (alpha.unsqueeze(0) - alpha.unsqueeze(1)).abs()  # (T, T, L)
        sharing = 0.5 * (diff * w).sum()  # each unordered pair counted once
        return self.sparsity_weight * sparsity + self.sharing_weight * sharing

    def task_parameters(self, t: int) -> list[nn.Parameter]:
        return [self.policy_logits[t], *self.heads[t].parameters()]
