"""MTAN (Liu et al. 2019), MLP simplification: masks in (0, 1); zero attention = half features."""

from __future__ import annotations

import torch
from torch import nn

from mtrl.architectures import MTAN


def test_zero_attention_gives_half_masks() -> None:
    torch.manual_seed(0)
    model = MTAN.mlp(5, [8, 6], [2, 3])
    for att in model.attention[0]:
        nn.init.zeros_(att.weight)
        nn.init.zeros_(att.bias)
    x = torch.randn(4, 5)
    hs = model.shared_stages(x)
    torch.testing.assert_close(model(x)[0], model.heads[0](0.5 * hs[-1]))
    masks = model.attention_masks(x, 1)
    assert [tuple(m.shape) for m in masks] == [(4, 8), (4, 6)]
    assert all(torch.all((m > 0) & (m < 1)) for m in masks)


def test_attention_by_hand() -> None:
    # random attention weights: the task output is the head on a_2 * h_2 with
    # a_1 = sigmoid(A_1 h_1), f_1 = a_1 h_1, a_2 = sigmoid(A_2 [h_2, f_1]), computed here from the
    # weights (zero attention gives 0.5 h, which a model ignoring attention reproduces too)
    torch.manual_seed(1)
    model = MTAN.mlp(5, [8, 6], [2, 3])
    x = torch.randn(4, 5)
    h1, h2 = model.shared_stages(x)
    for t in range(2):
        a1_layer, a2_layer = model.attention[t]
        a1 = torch.sigmoid(h1 @ a1_layer.weight.T + a1_layer.bias)
        a2 = torch.sigmoid(torch.cat([h2, a1 * h1], 1) @ a2_layer.weight.T + a2_layer.bias)
        assert not torch.allclose(a2, torch.full_like(a2, 0.5), atol=1e-2)
        expected = model.heads[t](a2 * h2)
        torch.testing.assert_close(model(x)[t], expected)
        torch.testing.assert_close(model.attention_masks(x, t)[1], a2)
