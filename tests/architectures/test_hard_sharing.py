"""Hard sharing: shapes, partition into trunk (shared) and heads (task)."""

from __future__ import annotations

import torch
from torch import nn

from mtrl.architectures import HardSharing


def test_hard_sharing_from_modules() -> None:
    trunk = nn.Sequential(nn.Linear(4, 6), nn.ReLU())
    heads = [nn.Linear(6, 2), nn.Linear(6, 5)]
    model = HardSharing(trunk, heads)
    x = torch.randn(3, 4)
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(3, 2), (3, 5)]
    torch.testing.assert_close(outs[1], heads[1](trunk(x)))
    assert {id(p) for p in model.shared_parameters()} == {id(p) for p in trunk.parameters()}
    assert model.task_parameters(1) == list(heads[1].parameters())
    torch.testing.assert_close(model.features(x), trunk(x))


def test_hard_sharing_mlp_shapes() -> None:
    model = HardSharing.mlp(4, [8, 6], [1, 2, 3])
    outs = model(torch.randn(7, 4))
    assert [tuple(o.shape) for o in outs] == [(7, 1), (7, 2), (7, 3)]
    assert len(model.shared_parameters()) == 4
