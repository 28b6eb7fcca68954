"""The run's figure, ``RUN_DIR/returns.png``: each task's training return against environment
steps (the mean of its last ``WINDOW`` episodes; the progress bar shows the last 10) with
the final evaluation beside it: the task policies and, for Distral, the distilled pi0 in every
task. Written at the end of a run, next to ``summary.json``; TensorBoard has the same curves
live. matplotlib is imported here only, and through its object API (no pyplot): a caller's
plotting backend is left alone."""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.config import one_line
from mtrl.io import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

WINDOW = 100  # episodes in the rolling mean (SB3's ep_rew_mean window)
# points drawn per curve: a long run has tens of thousands of episodes per task, a panel is
# 4 inches wide
MAX_POINTS = 2000


def return_curves(
    episode_log: Sequence[tuple[int, int, float, int]], num_tasks: int, window: int = WINDOW
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per task ``(steps, mean)``: at each of its finished episodes, the environment step it
    ended at and the mean return of its last ``window`` episodes (fewer at the start).
    ``episode_log`` rows are ``(global_step, task, return, length)`` in the order they ended."""
    curves = []
    for k in range(num_tasks):
        rows = [(step, ret) for step, task, ret, _ in episode_log if task == k]
        steps = np.array([s for s, _ in rows], dtype=np.int64)
        rets = np.array([r for _, r in rows], dtype=np.float64)
        sums = np.concatenate([[0.0], np.cumsum(rets)])
        ends = np.arange(1, len(rets) + 1)
        starts = np.maximum(ends - window, 0)
        curves.append((steps, (sums[ends] - sums[starts]) / (ends - starts)))
    return curves


def _eval_return(summary: dict[str, Any], key: str, task: str) -> float | None:
    entry = summary.get(key, {}).get(task)
    value = None if entry is None else entry.get("mean_return")
    return None if value is None else float(value)


def panel_grid(panels: int) -> tuple[Figure, list[Axes]]:
    """A figure of ``panels`` 4.2 x 3 inch panels, three to a row, and its axes in reading
    order (a last row's unused cells included: the caller turns them off)."""
    from matplotlib.figure import Figure

    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    width, height = 4.2 * cols, 3.0 * rows + 0.4
    fig = Figure(figsize=(width, height))
    # fixed margins in inches: a layout engine would double the figure's drawing time
    fig.subplots_adjust(
        left=0.75 / width, right=1 - 0.15 / width, bottom=0.55 / height, top=1 - 0.7 / height,
        hspace=0.5, wspace=0.32,
    )  # fmt: skip
    return fig, list(fig.subplots(rows, cols, squeeze=False).flat)


def returns_figure(
    task_names: Sequence[str],
    episode_log: Sequence[tuple[int, int, float, int]],
    summary: dict[str, Any],
    window: int = WINDOW,
) -> Figure:
    """One panel per task: the :func:`return_curves` line (at most ``MAX_POINTS`` of it, evenly
    spaced) and, at the last step, the evaluation's mean return of the task policy (``"tasks"``)
    and of pi0 (``"pi0_tasks"``) where ``summary`` has them."""
    curves = return_curves(episode_log, len(task_names), window)
    fig, axes = panel_grid(len(task_names))
    end = summary.get("total_steps", 0)
    evals = (("tasks", "eval: task policy", "o"), ("pi0_tasks", "eval: pi0", "s"))
    for ax, name, (steps, mean) in zip(axes, task_names, curves, strict=False):
        keep = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), MAX_POINTS)).astype(int))
        ax.plot(steps[keep], mean[keep], lw=1.3, label=f"training (last {window} episodes)")
        for key, label, marker in evals:
            value = _eval_return(summary, key, name)
            if value is not None:
                ax.plot([end], [value], marker, ms=6, label=label)
        if not len(steps):
            ax.text(0.5, 0.5, "no finished episode", ha="center", transform=ax.transAxes)
            ax.set_xlim(0, max(end, 1))
        ax.set_title(name)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("return")
        ax.grid(alpha=0.3)
    for ax in axes[len(task_names) :]:  # the grid's unused cells
        ax.set_axis_off()
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{summary.get('agent', '')}: returns per task")
    return fig


def draw_run_figure(
    run_dir: Path,
    task_names: Sequence[str],
    episode_log: Sequence[tuple[int, int, float, int]],
    summary: dict[str, Any],
) -> None:
    """``run_dir/returns.png`` at the end of a run (:func:`draw_safely`)."""
    draw_safely(run_dir / "returns.png", lambda: returns_figure(task_names, episode_log, summary))


def draw_safely(path: Path, build: Callable[[], Figure]) -> None:
    """Save the figure ``build()`` makes at ``path``; a failure to draw it is one ``warning:``
    line on stderr, not an error: the run, its checkpoint and summary.json are written."""
    try:
        write_figure(path, build())
    except Exception as e:
        print(f"warning: {path.name} not written: {one_line(e)}", file=sys.stderr)


def write_figure(path: Path, fig: Figure) -> Path:
    """Save ``fig`` as a PNG at ``path``, atomically; return ``path``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    atomic_write(path, buf.getvalue())
    return path


def write_returns_plot(
    path: Path,
    task_names: Sequence[str],
    episode_log: Sequence[tuple[int, int, float, int]],
    summary: dict[str, Any],
    window: int = WINDOW,
) -> Path:
    """Save :func:`returns_figure` as a PNG at ``path``, atomically; return ``path``."""
    return write_figure(path, returns_figure(task_names, episode_log, summary, window))
