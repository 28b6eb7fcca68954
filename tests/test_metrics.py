"""mtrl.metrics: values by hand, and shapes that would broadcast are refused."""

import pytest
import torch

from mtrl.metrics import METRICS, accuracy, mae, mse


def test_values_by_hand():
    out, y = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 0.0, 1.0])
    assert mse(out, y).item() == pytest.approx((0 + 4 + 9) / 3)
    assert mae(out, y).item() == pytest.approx((0 + 2 + 3) / 3)
    assert mse(torch.tensor([1, 3]), torch.tensor([1, 1])).item() == pytest.approx(2.0)  # ints
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert accuracy(logits, torch.tensor([1, 1, 1])).item() == pytest.approx(2 / 3)


def test_broadcasting_shapes_are_refused():
    # (B, 1) against (B,) used to compare every pair: mse 1.333 for a perfect prediction
    y = torch.tensor([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"mse: shapes \(3, 1\) and \(3,\) differ"):
        mse(y.unsqueeze(1), y)
    with pytest.raises(ValueError, match="accuracy"):
        accuracy(torch.randn(3, 4), torch.tensor([[1], [2], [3]]))


def test_metric_names_and_precision():
    out, y = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 0.0, 1.0])
    assert METRICS["mse"](out, y).item() == pytest.approx(13 / 3)
    assert METRICS["mae"](out, y).item() == pytest.approx(5 / 3)
    assert METRICS["accuracy"](torch.tensor([[0.2, 0.8]]), torch.tensor([1])).item() == 1.0
    # float64 outputs are compared in float64 (float32 would round 1 + 1e-10 to 1)
    d = mse(
        torch.tensor([1.0 + 1e-10], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    )
    assert d.dtype == torch.float64 and d.item() == pytest.approx(1e-20, rel=1e-3)
