"""MMoE (Ma et al. 2018): gates are distributions over experts; one expert = hard sharing."""

from __future__ import annotations

import torch

from mtrl.architectures import MMoE


def test_gates_sum_to_one() -> None:
    torch.manual_seed(0)
    model = MMoE.mlp(5, [8], [2, 3], num_experts=4, tower_hidden=[6])
    gates = model.gate_weights(torch.randn(7, 5))
    assert gates.shape == (2, 7, 4)
    torch.testing.assert_close(gates.sum(-1), torch.ones(2, 7))
    assert torch.all(gates > 0)


def test_output_is_gate_weighted_expert_sum() -> None:
    torch.manual_seed(0)
    model = MMoE.mlp(5, [8], [2, 3], num_experts=3)
    x = torch.randn(4, 5)
    experts = torch.stack([e(x) for e in model.experts], 1)  # (B, E, D)
    g = model.gate_weights(x)[1]
    expected = model.towers[1]((g.unsqueeze(-1) * experts).sum(1))
    torch.testing.assert_close(model(x)[1], expected)
