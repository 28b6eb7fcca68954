"""MMoE (Ma et al. 2018): gates are distributions over experts; one expert = hard sharing."""

from __future__ import annotations

import pytest
import torch

from mtrl.architectures import MMoE


@pytest.mark.parametrize("num_experts", [0, -1])
def test_no_experts_is_a_value_error(num_experts) -> None:
    # used to fail inside torch (RuntimeError: empty stack / negative dimension)
    with pytest.raises(ValueError, match="num_experts must be >= 1"):
        MMoE.mlp(5, [8], [2, 3], num_experts=num_experts)
    with pytest.raises(ValueError, match="at least one expert"):
        MMoE([], [torch.nn.Linear(5, 1)], [torch.nn.Linear(8, 2)])


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


def test_gates_route_by_hand() -> None:
    # gate logits W x with hand-set W: task 0 looks only at x0, task 1 only at x1 (the tests
    # above compared the output with the model's own gate_weights, so uniform gates passed)
    model = MMoE.mlp(2, [3], [1, 1], num_experts=2)
    with torch.no_grad():
        for t, gate in enumerate(model.gates):
            gate.weight.zero_()
            gate.bias.zero_()
            gate.weight[0, t] = 1.0  # logit of expert 0 = x_t, expert 1 = 0
    x = torch.tensor([[2.0, -1.0]])
    e0 = torch.sigmoid(torch.tensor(2.0))  # softmax([2, 0])[0]
    e1 = torch.sigmoid(torch.tensor(-1.0))
    g = model.gate_weights(x)
    torch.testing.assert_close(g[0, 0], torch.stack([e0, 1 - e0]))
    torch.testing.assert_close(g[1, 0], torch.stack([e1, 1 - e1]))
    experts = torch.stack([e(x) for e in model.experts], 1)[0]  # (E, D)
    for t, w in enumerate((e0, e1)):
        mixed = w * experts[0] + (1 - w) * experts[1]
        torch.testing.assert_close(model(x)[t][0], model.towers[t](mixed))
