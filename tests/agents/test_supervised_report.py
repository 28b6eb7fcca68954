"""A supervised run's figure (agents/supervised_report.py): what each panel draws from the
Trainer's history, the 2-D toy's path over its Pareto front (mtrl.data.pareto_front), and a
figure that fails leaving the run whole."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from agents.supervised_report import metric_names, training_figure
from mtrl.data import pareto_front, toy_losses
from mtrl.trainer_log import TrainerLog

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "supervised"


def _history() -> dict:
    log = TrainerLog(None, ["a", "b"])
    log.step(5, torch.tensor([2.0, 30.0]), torch.tensor([0.5, 1.5]), 1.0, 0)
    log.step(10, torch.tensor([1.0, 20.0]), torch.tensor([0.75, 1.25]), 1.0, 0)
    log.metrics(10, {"a": {"loss": 1.5, "acc": 0.5}, "b": {"loss": 25.0, "acc": 0.25}}, "")
    log.metrics(10, {"a": {"loss": 1.2, "acc": 0.6}, "b": {"loss": 21.0, "acc": 0.3}}, "test_")
    return log.history


def _lines(ax) -> list[tuple[list, list, str]]:
    return [(ln.get_xdata().tolist(), ln.get_ydata().tolist(), ln.get_ls()) for ln in ax.lines]


def test_the_panels_draw_the_history_of_each_task():
    history = _history()
    assert metric_names(history, ["a", "b"]) == ["acc"]
    fig = training_figure(history, ["a", "b"], "mgda on x")
    loss, weights, acc = fig.axes[:3]
    assert _lines(loss) == [
        ([5, 10], [2.0, 1.0], "-"),  # a's training loss per logged step
        ([10], [1.2], "--"),  # a's test loss per epoch
        ([5, 10], [30.0, 20.0], "-"),
        ([10], [21.0], "--"),
    ]
    assert loss.get_yscale() == "linear"  # 1 to 30: not spread over two decades
    assert _lines(weights) == [([5, 10], [0.5, 0.75], "-"), ([5, 10], [1.5, 1.25], "-")]
    assert _lines(acc) == [
        ([10], [0.5], "-"),
        ([10], [0.6], "--"),
        ([10], [0.25], "-"),
        ([10], [0.3], "--"),
    ]
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["a", "b"]
    assert len(fig.axes) == 3 and fig.texts[0].get_text() == "mgda on x"


def test_losses_spread_over_decades_get_a_log_axis_and_weights_never_do():
    log = TrainerLog(None, ["s1", "s100"])
    for step in (1, 2):
        log.step(step, torch.tensor([1.0, 1e4]), torch.tensor([1e-3, 1.999]), 1.0, 0)
    loss, weights = training_figure(log.history, ["s1", "s100"], "t").axes[:2]
    assert loss.get_yscale() == "log" and weights.get_yscale() == "linear"


def test_the_toy_panel_draws_the_loss_path_over_the_front():
    log = TrainerLog(None, ["f1", "f2"])
    path = [(1.0, 8.0), (0.5, 2.0), (-0.5, -15.0)]
    for step, (l1, l2) in enumerate(path):
        log.metrics(step + 1, {"f1": {"loss": l1}, "f2": {"loss": l2}}, "")
    front = np.array([[-2.0, -0.4], [-1.0, -10.0], [-0.04, -20.0]])
    fig = training_figure(log.history, ["f1", "f2"], "t", front=front)
    toy = fig.axes[2]
    drawn = _lines(toy)
    assert drawn[0][:2] == (front[:, 0].tolist(), front[:, 1].tolist())
    assert drawn[1][:2] == ([1.0, 0.5, -0.5], [8.0, 2.0, -15.0])
    assert drawn[2][:2] == ([1.0], [8.0]) and drawn[3][:2] == ([-0.5], [-15.0])  # start, end
    assert (toy.get_xlabel(), toy.get_ylabel()) == ("f1 loss", "f2 loss")
    assert all(not ax.axison for ax in fig.axes[3:])  # the unused cells of the 3-column grid


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_the_front_is_non_dominated_and_spans_both_optima(scale):
    front = pareto_front(scale, resolution=201)
    l1, l2 = front[:, 0], front[:, 1]
    assert torch.all(l1[1:] >= l1[:-1]) and torch.all(l2[1:] < l2[:-1])  # a trade-off curve
    axis = torch.linspace(-10, 10, 201, dtype=torch.float64)
    grid = toy_losses(torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2))
    grid = grid * torch.tensor([scale, 1.0], dtype=torch.float64)
    assert l1.min() == grid[:, 0].min() and l2.min() == grid[:, 1].min()  # each task's optimum
    # no grid point dominates a point of the front
    better = (grid[:, None, :] <= front[None, :, :]).all(-1) & (grid[:, None, :] < front).any(-1)
    assert not better.any()
    # and the analytic Pareto set (x2 about -8.4, x1 between the optima) lies on it
    x1 = torch.linspace(-7, 7, 15, dtype=torch.float64)
    on_set = toy_losses(torch.stack([x1, torch.full_like(x1, -8.4)], -1), scale)
    assert torch.cdist(on_set, front).min(dim=1).values.max() < 0.1


def test_a_supervised_figure_that_fails_is_a_warning_not_a_failed_run(
    tmp_path, capsys, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr("agents.supervised_report.training_figure", broken)
    run_dir = tmp_path / "run"
    args = ["--config", str(CONFIGS / "toy2d.yaml"), f"supervised.run_dir={run_dir}"]
    assert train.main([*args, "supervised.epochs=3", "supervised.progress=false"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 3
    assert not (run_dir / "training.png").exists()
    assert "warning: training.png not written: no display\n" in capsys.readouterr().err
