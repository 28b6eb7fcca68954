"""Soft sharing penalties by hand on tiny weights (Duong 2015 L2; Yang & Hospedales 2017 trace)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtrl.architectures import SoftSharing


def _tiny(penalty_type: str) -> SoftSharing:
    cols = [nn.Linear(1, 2), nn.Linear(1, 2)]
    with torch.no_grad():
        cols[0].weight.copy_(torch.tensor([[1.0], [2.0]]))
        cols[0].bias.copy_(torch.tensor([0.0, 0.0]))
        cols[1].weight.copy_(torch.tensor([[3.0], [4.0]]))
        cols[1].bias.copy_(torch.tensor([1.0, 1.0]))
    return SoftSharing(cols, penalty_type=penalty_type)


def test_l2_penalty_by_hand() -> None:
    # weights: mean [2, 3], squared distances 1+1+1+1 = 4; biases: mean 0.5, 4 * 0.25 = 1
    assert _tiny("l2").penalty().item() == pytest.approx(5.0)


def test_trace_penalty_by_hand() -> None:
    # weights stacked [[1, 2], [3, 4]]: ||.||_* = sqrt(||.||_F^2 + 2|det|) = sqrt(30 + 4);
    # biases stacked [[0, 0], [1, 1]] has rank 1: nuclear = Frobenius = sqrt(2)
    expected = math.sqrt(34.0) + math.sqrt(2.0)
    assert _tiny("trace").penalty().item() == pytest.approx(expected, rel=1e-6)


def test_penalty_weight_and_skipped_mismatched_heads() -> None:
    model = SoftSharing.mlp(3, [4], [2, 5], weight=0.5)
    names = [n for n, _ in model.corresponding_parameters()]
    assert names == ["0.weight", "0.bias"]  # output layers differ in shape
    w = [model.columns[t][0].weight for t in range(2)]
    expected = 0.5 * (
        (w[0] - w[1]).square().sum() / 2
        + (model.columns[0][0].bias - model.columns[1][0].bias).square().sum() / 2
    )
    torch.testing.assert_close(model.penalty(), expected)


def test_identical_columns_have_zero_l2_and_finite_trace_gradient() -> None:
    model = SoftSharing.mlp(3, [4], [2, 2, 2], penalty_type="trace", couple_heads=True)
    for col in model.columns[1:]:
        col.load_state_dict(model.columns[0].state_dict())
    assert SoftSharing(list(model.columns)).penalty().item() == pytest.approx(0.0, abs=1e-5)
    model.penalty().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_mlp_couples_the_trunks_and_leaves_same_shaped_heads_free() -> None:
    # the heads (left digit, right digit: both (64 -> 10)) used to be pulled together too, so that
    # two_digits with the default weight trained both heads to predict alike (0.53 accuracy
    # after 5 epochs; 0.88 with the trunks alone coupled)
    torch.manual_seed(0)
    model = SoftSharing.mlp(3, [4], [2, 2])
    assert [n for n, _ in model.corresponding_parameters()] == ["0.weight", "0.bias"]
    trunk = [(model.columns[0][0].weight, model.columns[1][0].weight)]
    trunk += [(model.columns[0][0].bias, model.columns[1][0].bias)]
    by_hand = sum((a - b).square().sum() / 2 for a, b in trunk)
    torch.testing.assert_close(model.penalty(), by_hand)
    coupled = SoftSharing.mlp(3, [4], [2, 2], couple_heads=True)
    assert [n for n, _ in coupled.corresponding_parameters()] == [
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
    ]
    columns = [nn.Sequential(nn.Linear(1, 2), nn.Linear(2, 2)) for _ in range(2)]
    named = SoftSharing(columns, uncoupled=["0"])  # any submodule by name
    assert [n for n, _ in named.corresponding_parameters()] == ["1.weight", "1.bias"]


def test_bad_penalty_type() -> None:
    with pytest.raises(ValueError, match="penalty_type"):
        SoftSharing([nn.Linear(1, 1)], penalty_type="l1")


def test_a_negative_weight_is_refused() -> None:
    # it ran (the sweep), pushing the columns apart instead of together
    with pytest.raises(ValueError, match=r"weight must be >= 0, got -1.0"):
        SoftSharing.mlp(3, [4], [2, 2], weight=-1.0)
    with pytest.raises(ValueError, match=r"weight must be >= 0, got nan"):
        SoftSharing.mlp(3, [4], [2, 2], weight=float("nan"))  # a NaN penalty


def test_uncoupled_names_a_submodule_not_a_name_prefix() -> None:
    # uncoupled=["1"] leaves layer 1 free, not layers 10 and 11 as well
    columns = [nn.Sequential(*(nn.Linear(1, 1) for _ in range(12))) for _ in range(2)]
    model = SoftSharing(columns, uncoupled=["1"])
    names = [n for n, _ in model.corresponding_parameters()]
    assert "1.weight" not in names and {"10.weight", "11.bias"} <= set(names)
    assert len(names) == 22
