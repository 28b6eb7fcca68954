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
