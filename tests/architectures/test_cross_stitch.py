"""Cross-stitch (Misra 2016): identity stitches equal independent columns; mixing by hand."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mtrl.architectures import CrossStitch


@pytest.mark.parametrize("per_channel", [False, True])
def test_identity_equals_independent_columns(per_channel: bool) -> None:
    torch.manual_seed(0)
    model = CrossStitch.mlp(5, [6, 7, 4], [2, 3], per_channel=per_channel)
    independent = [
        nn.Sequential(*copy.deepcopy(list(model.columns[t])), copy.deepcopy(model.heads[t]))
        for t in range(2)
    ]
    x = torch.randn(8, 5)
    for out, net in zip(model(x), independent, strict=True):
        assert torch.equal(out, net(x))


def test_mixing_by_hand() -> None:
    cols = [[nn.Identity()], [nn.Identity()]]
    model = CrossStitch(cols, [nn.Identity(), nn.Identity()])
    with torch.no_grad():
        model.alphas[0].copy_(torch.tensor([[0.9, 0.1], [0.3, 0.7]]))
    x = torch.tensor([[1.0, 2.0]])
    y0, y1 = model(x)
    # both columns see the same x, so each output is (row sum) * x
    torch.testing.assert_close(y0, 1.0 * x)
    torch.testing.assert_close(y1, 1.0 * x)
    cols = [[nn.Identity()], [nn.Linear(2, 2, bias=False)]]
    with torch.no_grad():
        cols[1][0].weight.copy_(2 * torch.eye(2))
    model = CrossStitch(cols, [nn.Identity(), nn.Identity()], alpha_self=0.9, alpha_other=0.1)
    y0, y1 = model(x)
    torch.testing.assert_close(y0, 0.9 * x + 0.1 * 2 * x)
    torch.testing.assert_close(y1, 0.1 * x + 0.9 * 2 * x)


def test_per_channel_mixing_by_hand() -> None:
    cols = [[nn.Identity()], [nn.Linear(2, 2, bias=False)]]
    with torch.no_grad():
        cols[1][0].weight.copy_(2 * torch.eye(2))
    model = CrossStitch(cols, [nn.Identity()] * 2, per_channel=True, channels=[2])
    assert model.alphas[0].shape == (2, 2, 2)
    with torch.no_grad():
        model.alphas[0][1] = torch.tensor([[0.5, 0.5], [0.0, 1.0]])  # channel 1 only
    y0, _ = model(torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(y0, torch.tensor([[1.0, 0.5 * 1 + 0.5 * 2]]))


def test_paper_init_and_errors() -> None:
    model = CrossStitch.mlp(3, [4], [1, 1, 1], alpha_self=0.9, alpha_other=0.05)
    expected = torch.full((3, 3), 0.05).fill_diagonal_(0.9)
    torch.testing.assert_close(model.alphas[0].detach(), expected)
    with pytest.raises(ValueError, match="channels"):
        CrossStitch([[nn.Identity()]], [nn.Identity()], per_channel=True)


def test_conv_columns_per_channel_identity_and_task_ids() -> None:
    torch.manual_seed(0)
    cols = [
        [nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU()), nn.Conv2d(4, 4, 3)]
        for _ in range(2)
    ]
    heads = [nn.Flatten(), nn.Flatten()]
    model = CrossStitch(cols, heads, per_channel=True, channels=[4, 4])
    x = torch.randn(3, 2, 5, 5)
    for t, out in enumerate(model(x)):
        assert torch.equal(out, nn.Sequential(*cols[t], nn.Flatten())(x))
    ids = torch.tensor([1, 0, 1])
    torch.testing.assert_close(model(x, ids), torch.stack(model(x))[ids, torch.arange(3)])
