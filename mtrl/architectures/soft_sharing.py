"""Soft parameter sharing (Duong et al. 2015 L2; Yang & Hospedales 2017 trace norm).

One column (network) per task; :meth:`SoftSharing.penalty` pulls corresponding parameters together.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mtrl.architectures._registry import ARCHITECTURES
from mtrl.architectures.base import MultiTaskModel, mlp


@ARCHITECTURES.register("soft_sharing")
class SoftSharing(MultiTaskModel):
    """``columns[t]`` x (B, ...) -> (B, *out_t); no shared parameters (``shared_parameters() == []``).

    ``penalty()`` (times ``weight``) over each group of corresponding parameters (same name and
    shape in every column; e.g. task-specific output layers of different sizes are skipped, and
    so are the submodules named in ``uncoupled``, e.g. ``["2"]`` for a column's layer ``2``):

    - ``'l2'``: sum_t ||theta_t - mean_s theta_s||^2 (Duong et al. 2015, "Low Resource Dependency
      Parsing: Cross-lingual Parameter Sharing", squared distance to the mean);
    - ``'trace'``: nuclear norm of the stacked (T, P) matrix [vec theta_1; ...; vec theta_T]
      (Yang & Hospedales 2017, "Trace Norm Regularised Deep Multi-Task Learning", "Tensor" flattened
      per layer), summed over parameter tensors.
    """

    separable = True

    def __init__(
        self,
        columns: Sequence[nn.Module],
        penalty_type: str = "l2",
        weight: float = 1.0,
        uncoupled: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.uncoupled = tuple(uncoupled)
        if not weight >= 0:  # a negative weight would push the columns apart
            raise ValueError(f"weight must be >= 0, got {weight}")
        if penalty_type not in ("l2", "trace"):
            raise ValueError(f"penalty_type must be 'l2' or 'trace', got {penalty_type!r}")
        self.columns = nn.ModuleList(columns)
        self.num_tasks = len(self.columns)
        self.penalty_type = penalty_type
        self.weight = weight

    @classmethod
    def mlp(
        cls,
        in_dim: int,
        hidden: Sequence[int],
        out_dims: Sequence[int],
        activation: type[nn.Module] = nn.ReLU,
        penalty_type: str = "l2",
        weight: float = 1.0,
        couple_heads: bool = False,
    ) -> SoftSharing:
        """One MLP column ``in_dim -> hidden... -> out_t`` per task. The columns' hidden layers
        are coupled: the trunks of REFERENCE's "one trunk per task". Their output layers are the
        task heads and stay free unless ``couple_heads`` (pulling two tasks' heads together
        makes them predict alike even when their outputs mean different things, e.g. the left
        and the right digit)."""
        cols = [mlp([in_dim, *hidden, o], activation, activate_last=False) for o in out_dims]
        heads = () if couple_heads else (str(len(cols[0]) - 1),)  # the last Linear's index
        return cls(cols, penalty_type, weight, heads)

    def forward_all(self, x: Tensor) -> list[Tensor]:
        return [col(x) for col in self.columns]

    def forward_task(self, x: Tensor, t: int) -> Tensor:
        return self.columns[t](x)

    def task_parameters(self, t: int) -> list[nn.Parameter]:
        return list(self.columns[t].parameters())

    def corresponding_parameters(self) -> list[tuple[str, list[nn.Parameter]]]:
        """Groups ``(name, [theta_1..theta_T])`` of same-named, same-shaped column parameters."""
        named = [dict(col.named_parameters()) for col in self.columns]
        groups = []
        for name, p0 in named[0].items():
            if any(name.startswith(f"{module}.") for module in self.uncoupled):
                continue
            ps = [d[name] for d in named if name in d]
            if len(ps) == len(named) and all(p.shape == p0.shape for p in ps):
                groups.append((name, ps))
        return groups

    def penalty(self) -> Tensor:
        """``weight`` x the L2-to-mean or trace-norm coupling, summed over parameter groups."""
        total = super().penalty()
        for _, ps in self.corresponding_parameters():
            stacked = torch.stack([p.reshape(-1) for p in ps])  # (T, P)
            if self.penalty_type == "l2":
                total = total + (stacked - stacked.mean(0, keepdim=True)).square().sum()
            else:  # svdvals has a stable gradient even with repeated singular values
                total = total + torch.linalg.svdvals(stacked).sum()
        return self.weight * total
