"""Sluice networks (Ruder et al. 2017): identity alpha + last-layer beta = independent columns;
subspace mixing, beta skips and the orthogonality penalty by hand."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mtrl.architectures import Sluice


def test_identity_equals_independent_columns() -> None:
    torch.manual_seed(0)
    model = Sluice.mlp(5, [6, 6], [2, 3], num_subspaces=3)
    x = torch.randn(4, 5)
    for t, out in enumerate(model(x)):
        net = nn.Sequential(*copy.deepcopy(list(model.columns[t])), copy.deepcopy(model.heads[t]))
        assert torch.equal(out, net(x))


def test_subspace_mixing_and_beta_by_hand() -> None:
    # T = 1, G = 2: alpha swaps the two subspaces; two identity layers; beta = (0.25, 0.75)
    model = Sluice([[nn.Identity(), nn.Identity()]], [nn.Identity()], num_subspaces=2)
    with torch.no_grad():
        for a in model.alphas:
            a.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
        model.betas[0].copy_(torch.tensor([0.25, 0.75]))
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    (y,) = model(x)
    layer1 = torch.tensor([[3.0, 4.0, 1.0, 2.0]])
    torch.testing.assert_close(y, 0.25 * layer1 + 0.75 * x)


def test_orthogonality_penalty_by_hand() -> None:
    model = Sluice([[nn.Identity()]], [nn.Identity()], num_subspaces=2, ortho_weight=2.0)
    x = torch.tensor([[1.0, 0.0, 2.0, 1.0], [0.0, 1.0, 1.0, 3.0]])
    model(x)
    g1, g2 = x[:, :2], x[:, 2:]
    expected = 2.0 * (g1.T @ g2).square().sum()
    torch.testing.assert_close(model.penalty(), expected)


def test_mlp_needs_equal_widths() -> None:
    with pytest.raises(ValueError, match="equal hidden widths"):
        Sluice.mlp(3, [4, 6], [1])


@pytest.mark.parametrize(
    ("num_subspaces", "needle"),
    [(3, "not divisible by num_subspaces 3"), (0, "num_subspaces must be >= 1"), (-2, ">= 1")],
)
def test_bad_num_subspaces_fails_when_built(num_subspaces, needle) -> None:
    # used to build and then fail at the first forward (ValueError, ZeroDivisionError, ...)
    with pytest.raises(ValueError, match=needle):
        Sluice.mlp(3, [4, 4], [1, 1], num_subspaces=num_subspaces)


def test_conv_columns_split_channels() -> None:
    torch.manual_seed(0)
    cols = [[nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)] for _ in range(2)]
    model = Sluice(cols, [nn.Flatten(), nn.Flatten()], num_subspaces=2, ortho_weight=1.0)
    x = torch.randn(3, 2, 5, 5)
    for t, out in enumerate(model(x)):
        assert torch.equal(out, nn.Sequential(*cols[t], nn.Flatten())(x))
    # by hand: per task and layer, channels [0:2] and [2:4] are the two subspaces, flattened per
    # sample to (B, 2*5*5); penalty = sum ||G_1^T G_2||_F^2 (identity mixing: layer outputs are
    # the plain column outputs)
    expected = torch.zeros(())
    for col in cols:
        h = x
        for layer in col:
            h = layer(h)
            g1, g2 = h[:, :2].reshape(3, -1), h[:, 2:].reshape(3, -1)
            expected = expected + (g1.T @ g2).square().sum()
    torch.testing.assert_close(model.penalty(), expected, rtol=1e-4, atol=1e-4)


def test_mixing_parameters() -> None:
    model = Sluice.mlp(3, [4, 4], [1, 2])
    assert len(model.mixing_parameters()) == 2 + 2


def test_asymmetric_mixing_and_uniform_beta_by_hand() -> None:
    # T = 1, G = 2 one-feature subspaces, B = 2; alpha = [[1, 0.5], [0, 1]] adds half of
    # subspace 1 to subspace 0 at each of the two identity layers; beta uniform = (0.5, 0.5)
    model = Sluice(
        [[nn.Identity(), nn.Identity()]], [nn.Identity()], num_subspaces=2, beta_init="uniform"
    )
    with torch.no_grad():
        for a in model.alphas:
            a.copy_(torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    layer1 = torch.tensor([[2.0, 2.0], [5.0, 4.0]])
    layer2 = torch.tensor([[3.0, 2.0], [7.0, 4.0]])
    (y,) = model(x)
    torch.testing.assert_close(y, 0.5 * layer1 + 0.5 * layer2)
