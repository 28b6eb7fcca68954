"""Hard parameter sharing (Caruana 1993; Ruder 2017 overview): one shared trunk, one head per task."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mtrl.architectures._registry import ARCHITECTURES
from mtrl.architectures.base import MultiTaskModel, mlp
from mtrl.architectures.stacked import group_by_task


@ARCHITECTURES.register("hard_sharing")
class HardSharing(MultiTaskModel):
    """``trunk`` x (B, ...) -> z (B, D) shared; ``heads[t]`` z -> (B, *out_t) task-specific.

    Supports ``return_features``: z is the trunk output. Task parameters: head t.
    """

    supports_features = True

    def __init__(self, trunk: nn.Module, heads: Sequence[nn.Module]) -> None:
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleList(heads)
        self.num_tasks = len(self.heads)

    @classmethod
    def mlp(
        cls,
        in_dim: int,
        hidden: Sequence[int],
        out_dims: Sequence[int],
        activation: type[nn.Module] = nn.ReLU,
    ) -> HardSharing:
        """MLP trunk ``in_dim -> hidden...`` (activated) and linear heads ``hidden[-1] -> out_t``."""
        trunk = mlp([in_dim, *hidden], activation)
        width = hidden[-1] if hidden else in_dim
        return cls(trunk, [nn.Linear(width, o) for o in out_dims])

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x)

    def heads_from_features(self, z: Tensor, x: Tensor) -> list[Tensor]:
        return [head(z) for head in self.heads]

    def forward_all(self, x: Tensor) -> list[Tensor]:
        return self.heads_from_features(self.trunk(x), x)

    def forward_task(self, x: Tensor, t: int) -> Tensor:
        return self.heads[t](self.trunk(x))

    def forward_routed(self, x: Tensor, task_ids: Tensor) -> Tensor:
        """Trunk once on the whole batch, then each head on its own task's samples."""
        z = self.trunk(x)
        return group_by_task(z, task_ids, self.num_tasks, lambda h, t: self.heads[t](h))

    def task_parameters(self, t: int) -> list[nn.Parameter]:
        return list(self.heads[t].parameters())
