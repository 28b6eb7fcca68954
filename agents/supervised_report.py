"""A supervised run's figure, ``RUN_DIR/training.png``, drawn from the Trainer's logged history
(:attr:`mtrl.trainer_log.TrainerLog.history`, kept across resumes): each task's training loss
and weight against optimiser steps, the test loss and every metric per epoch and, for the 2-D
toy, the path the losses took towards the Pareto front. Written after ``summary.json``, like the
RL runs' ``returns.png`` (:mod:`agents.report`); TensorBoard has the same curves live."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agents.report import draw_safely, panel_grid

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from agents.supervised_config import SupervisedConfig
    from mtrl.trainer import Trainer
    from mtrl.trainer_log import Series

# the per-step and per-epoch series that are not a metric panel of their own
_SPECIAL = ("loss", "epoch_loss", "test_loss")
FEW_POINTS = 60  # a series with at most this many points gets a dot on each


def draw_training_figure(run_dir: Path, trainer: Trainer, cfg: SupervisedConfig) -> None:
    """``run_dir/training.png`` at the end of a run (a failure is a ``warning:`` line)."""

    def build() -> Figure:
        front = None
        if cfg.benchmark.name == "toy2d":
            from mtrl.data import pareto_front

            front = pareto_front(cfg.benchmark.scale).numpy()
        title = f"{cfg.weighting.name} on {cfg.benchmark.name}"
        return training_figure(trainer.log.history, trainer.task_names, title, front)

    draw_safely(run_dir / "training.png", build)


def metric_names(history: dict[str, Series], task_names: Sequence[str]) -> list[str]:
    """The metrics (``accuracy``, ``mse``, ...) with a series for some task, in first-seen order;
    ``test_<metric>`` counts as ``<metric>``."""
    names: list[str] = []
    for key in history:
        for task in task_names:
            prefix = f"task/{task}/"
            if key.startswith(prefix):
                metric = key[len(prefix) :].removeprefix("test_")
                if metric not in _SPECIAL and metric not in names:
                    names.append(metric)
    return names


def _curve(ax: Axes, series: Series | None, dashed: bool = False, **style: object) -> list[float]:
    """Draw ``series`` (skipped non-finite steps leave gaps; dots where there are few points,
    e.g. one per epoch); return its values (none if there is no series)."""
    if series is None or not series.steps:
        return []
    if dashed:
        style.update(ls="--", lw=1.0)
    if len(series.steps) <= FEW_POINTS:
        style.setdefault("marker", ".")
    ax.plot(series.steps, series.values, **style)  # type: ignore[arg-type]
    return series.values


def _log_if_spread(ax: Axes, values: Sequence[float]) -> None:
    """A log y axis where every value is positive and they span more than two decades (the
    GradNorm toy's losses, scaled by 1 and 100)."""
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) > 100 * min(finite):
        ax.set_yscale("log")


def training_figure(
    history: dict[str, Series],
    task_names: Sequence[str],
    title: str,
    front: np.ndarray | None = None,
) -> Figure:
    """Panels: training loss per task (each logged step; the test loss per epoch dashed), task
    weights, one panel per metric (training per epoch solid, test dashed) and, given ``front``
    (``(M, 2)`` loss pairs, the 2-D toy's Pareto front), the per-epoch ``(L1, L2)`` path."""
    metrics = metric_names(history, task_names)
    panels = 2 + len(metrics) + (front is not None)
    fig, axes = panel_grid(panels)
    colours = [f"C{i % 10}" for i in range(len(task_names))]
    titles = ["loss (training; test per epoch dashed)", "task weights"]
    titles += [f"{metric} per epoch (training; test dashed)" for metric in metrics]
    keys = [("loss", "test_loss"), ("weights", None)] + [(m, f"test_{m}") for m in metrics]
    for ax, panel_title, (key, test_key) in zip(axes, titles, keys, strict=False):
        values: list[float] = []
        for task, colour in zip(task_names, colours, strict=True):
            name = f"weights/{task}" if key == "weights" else f"task/{task}/{key}"
            values += _curve(ax, history.get(name), color=colour, lw=1.2, label=task)
            if test_key is not None:
                test = history.get(f"task/{task}/{test_key}")
                values += _curve(ax, test, dashed=True, color=colour)
        if key != "weights":  # weights stay linear: several methods keep their sum at T
            _log_if_spread(ax, values)
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel("optimiser steps")
        ax.grid(alpha=0.3)
    if front is not None:
        _loss_path(axes[panels - 1], history, task_names, front)
    for ax in axes[panels:]:  # the grid's unused cells
        ax.set_axis_off()
    if axes[0].get_legend_handles_labels()[0]:  # no per-step losses logged: no legend
        axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    return fig


def _loss_path(
    ax: Axes, history: dict[str, Series], task_names: Sequence[str], front: np.ndarray
) -> None:
    """The two tasks' per-epoch training losses as a path in loss space, over the front."""
    ax.plot(front[:, 0], front[:, 1], color="black", lw=3, alpha=0.35, label="Pareto front")
    first, second = (history.get(f"task/{t}/epoch_loss") for t in task_names[:2])
    if first is not None and second is not None and first.values:
        l1, l2 = np.asarray(first.values), np.asarray(second.values)
        ax.plot(l1, l2, color="C3", lw=1.2, label="path")
        ax.plot(l1[:1], l2[:1], "o", color="C3", ms=5, label="start")
        ax.plot(l1[-1:], l2[-1:], "*", color="C3", ms=10, label="last step")
    ax.set_xlabel(f"{task_names[0]} loss")
    ax.set_ylabel(f"{task_names[1]} loss")
    ax.set_title("losses per step (toy2d), towards the front", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
