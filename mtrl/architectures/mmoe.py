"""Multi-gate Mixture-of-Experts (Ma et al. 2018, "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD).

E shared experts f_e(x) (B, D); per task t a gate g_t(x) = softmax(W_t x) (B, E) and a tower h_t:
``y_t = h_t(sum_e g_t(x)_e f_e(x))``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mtrl.architectures._registry import ARCHITECTURES
from mtrl.architectures.base import MultiTaskModel, mlp, require_hidden
from mtrl.architectures.stacked import group_by_task
from mtrl.weighting.grads import last_weight


@ARCHITECTURES.register("mmoe")
class MMoE(MultiTaskModel):
    """``experts[e]`` x -> (B, D) shared; ``gates[t]`` x -> (B, E) logits; ``towers[t]`` (B, D) -> out_t.

    Supports ``return_features``: z = the flattened expert outputs (B, E*D) (gates read x directly,
    and they are task parameters, so all shared-parameter gradient flows through z).
    Task t owns ``gates[t]`` and ``towers[t]``.
    """

    supports_features = True

    def __init__(
        self, experts: Sequence[nn.Module], gates: Sequence[nn.Module], towers: Sequence[nn.Module]
    ) -> None:
        super().__init__()
        if len(gates) != len(towers):
            raise ValueError(f"need one gate per tower, got {len(gates)} and {len(towers)}")
        if len(experts) < 1:
            raise ValueError(f"MMoE needs at least one expert, got {len(experts)}")
        self.experts = nn.ModuleList(experts)
        self.gates = nn.ModuleList(gates)
        self.towers = nn.ModuleList(towers)
        self.num_tasks = len(towers)
        self.num_experts = len(self.experts)

    @classmethod
    def mlp(
        cls,
        in_dim: int,
        hidden: Sequence[int],
        out_dims: Sequence[int],
        num_experts: int = 4,
        tower_hidden: Sequence[int] = (),
        activation: type[nn.Module] = nn.ReLU,
    ) -> MMoE:
        """Experts MLP ``in_dim -> hidden...``, linear gates ``in_dim -> E``, towers
        ``hidden[-1] -> tower_hidden... -> out_t``."""
        require_hidden(cls.__name__, hidden)
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        experts = [mlp([in_dim, *hidden], activation) for _ in range(num_experts)]
        gates = [nn.Linear(in_dim, num_experts) for _ in out_dims]
        towers = [
            mlp([hidden[-1], *tower_hidden, o], activation, activate_last=False) for o in out_dims
        ]
        return cls(experts, gates, towers)

    def gate_weights(self, x: Tensor) -> Tensor:
        """Softmax gate weights of every task, (T, B, E); each row sums to 1."""
        return torch.stack([gate(x).softmax(-1) for gate in self.gates])

    def features(self, x: Tensor) -> Tensor:
        """Expert outputs, flattened: (B, E*D)."""
        return torch.stack([e(x) for e in self.experts], 1).flatten(1)

    def heads_from_features(self, z: Tensor, x: Tensor) -> list[Tensor]:
        d = z.shape[1] // self.num_experts  # spelled out: -1 is ambiguous for an empty batch
        shape = (z.shape[0], self.num_experts, d)  # (B, E, D)
        # a view of z per task: each task's graph then starts at its own node, so representation
        # mode takes every task's gradient in one backward (mtrl.weighting.heads_pass)
        return [self._task(z.reshape(shape), x, t) for t in range(self.num_tasks)]

    def _task(self, experts: Tensor, x: Tensor, t: int) -> Tensor:
        gate = self.gates[t](x).softmax(-1)  # (B, E)
        return self.towers[t](torch.einsum("be,bed->bd", gate, experts))

    def forward_all(self, x: Tensor) -> list[Tensor]:
        return self.heads_from_features(self.features(x), x)

    def forward_routed(self, x: Tensor, task_ids: Tensor) -> Tensor:
        """Experts once on the batch; each task's gate and tower on its own samples."""
        experts = torch.stack([e(x) for e in self.experts], 1)  # (B, E, D)
        return group_by_task((experts, x), task_ids, self.num_tasks, self._task)

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The last weight of every expert: together they produce the representation the gates
        mix (one expert's alone would leave GradNorm blind to the others)."""
        return [last_weight(list(e.parameters()))[0] for e in self.experts]

    def task_parameters(self, t: int) -> list[nn.Parameter]:
        return [*self.gates[t].parameters(), *self.towers[t].parameters()]
