"""Transfer matrices: steps to threshold, AUC, relative gain and the heatmap."""

import math

import pytest
import torch

from mtrl.relations import (
    area_under_curve,
    plot_transfer_matrix,
    steps_to_threshold,
    transfer_matrix,
)


def test_steps_to_threshold_by_hand():
    steps, values = [0, 10, 20, 30], [0.0, 0.4, 0.6, 0.9]
    assert steps_to_threshold(steps, values, 0.5) == 20
    assert steps_to_threshold(steps, values, 0.4) == 10  # reaching counts
    assert steps_to_threshold(torch.tensor(steps), torch.tensor(values), 1.0) == math.inf
    with pytest.raises(ValueError, match="shape"):
        steps_to_threshold([0, 1], [0.0], 0.5)


def test_steps_to_threshold_held_for_several_points():
    # met at 10, dips at 20, met from 30 on: the first crossing is 10, held twice or three times 30
    steps, values = [0, 10, 20, 30, 40, 50], [0.0, 1.0, 0.5, 1.0, 1.0, 1.0]
    assert steps_to_threshold(steps, values, 1.0, hold=1) == 10
    assert steps_to_threshold(steps, values, 1.0, hold=2) == 30
    assert steps_to_threshold(steps, values, 1.0, hold=3) == 30
    assert steps_to_threshold(steps, values, 1.0, hold=4) == math.inf  # the run ends first
    assert steps_to_threshold([0, 10], [1.0, 1.0], 1.0, hold=3) == math.inf  # shorter than hold
    with pytest.raises(ValueError, match="hold must be >= 1"):
        steps_to_threshold(steps, values, 1.0, hold=0)


def test_area_under_curve_by_hand():
    assert area_under_curve([0, 1, 3], [0.0, 2.0, 2.0]) == pytest.approx(5.0)
    assert area_under_curve([0, 1, 3], [0.0, 2.0, 2.0], normalize=True) == pytest.approx(5.0 / 3)
    assert area_under_curve([5], [1.0]) == 0.0


def test_transfer_matrix_relative_gain():
    m = transfer_matrix(
        {(0, 1): 100.0, (1, 0): 150.0}, scratch=[100.0, 200.0], lower_is_better=True
    )
    assert m[0, 1].item() == pytest.approx(0.5)  # half the steps
    assert m[1, 0].item() == pytest.approx(-0.5)  # 50% more steps
    assert math.isnan(m[0, 0].item())
    auc = transfer_matrix({(0, 1): 3.0, (1, 1): 2.0}, scratch=[1.0, 2.0])
    assert auc[0, 1].item() == pytest.approx(0.5) and auc[1, 1].item() == 0.0
    with pytest.raises(ValueError, match="out of range"):
        transfer_matrix({(0, 2): 1.0}, scratch=[1.0, 1.0])


def test_plot_transfer_matrix(tmp_path):
    m = transfer_matrix({(0, 1): 3.0, (1, 0): 0.5}, scratch=[1.0, 2.0])
    out = plot_transfer_matrix(m, ["a", "b"], tmp_path / "sub" / "m.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_transfer_matrix_negative_scratch_metric():
    # gain = (m_ij - m_j) / |m_j|: with a negative scratch AUC (-50), -25 after transfer is better
    m = transfer_matrix({(0, 1): -25.0, (1, 0): -150.0}, scratch=[-100.0, -50.0])
    assert m[0, 1].item() == pytest.approx(0.5)
    assert m[1, 0].item() == pytest.approx(-0.5)
