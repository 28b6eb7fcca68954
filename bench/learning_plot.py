"""Learning-curve figures of the learning benchmark (bench/learning.py): one PNG per suite,
mean ± 95% CI band over seeds against environment steps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

if __name__ == "__main__":  # first: a script run cannot import the bench package below
    from _module_guard import refuse_script_run  # type: ignore[import-not-found]  # script run only

    refuse_script_run(__file__)

from bench.learning_metrics import mean_ci

Run = dict[str, Any]


def mean_band(ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds (rows) and the half-width of its 95% t interval, per point, from the seeds
    that have a value there (a length curve is NaN before a task's first episode); the half-width
    is 0 where fewer than two seeds have one (and the mean NaN where none has)."""
    cells = [mean_ci(col[~np.isnan(col)]) for col in ys.T]
    mean = np.array([m for m, _ in cells], dtype=np.float64)
    return mean, np.nan_to_num(np.array([h for _, h in cells], dtype=np.float64), nan=0.0)


def plot(
    suite: str,
    runs: list[Run],
    metrics: dict[str, list[dict[str, Any]]],
    path: Path,
    length_bound: float = 1.25,
) -> Path:
    """Learning curves, mean ± 95% CI band over seeds, against environment steps
    (``length_bound``: the gridworld threshold's episode-length bound, drawn as a line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = runs[0]["tasks"]
    if suite == "gridworld":
        panels: list[tuple[str | int, str]] = [
            ("curve", "success rate (mean over tasks)"),
            ("curve2", "length / optimal"),
        ]
    else:
        panels = [("curve", "normalised return (mean over games)")]
        panels += [(k, f"{n} return") for k, n in enumerate(names)]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, (key, label) in zip(axes.flat, panels):
        for agent, ms in metrics.items():
            x = ms[0]["x"]
            ys = np.array([m["games"][key] if isinstance(key, int) else m[key] for m in ms])
            mean, half = mean_band(ys)
            style = "-" if agent.startswith("distral") else "--"
            (line,) = ax.plot(x, mean, style, label=agent, lw=1.5)
            ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.15)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(label)
        if key == "curve2":
            ax.set_yscale("log")
            ax.set_ylim(0.9, None)
            ax.axhline(length_bound, color="gray", lw=0.8, ls=":")
        elif suite == "gridworld":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    seeds = len(next(iter(metrics.values())))
    fig.suptitle(f"{suite}: mean ± 95% CI over {seeds} seeds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)
    return path
