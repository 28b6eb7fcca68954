"""Transfer matrices: how much training on source task i helps target task j.

Taskonomy (Zamir et al. 2018) tabulates the gain on each target from each source; for RL the usual
measures are the steps needed to reach a return threshold, or the area under the learning curve,
after transfer versus from scratch (e.g. Taylor and Stone 2009's "time to threshold" and "area ratio").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

ArrayLike = Sequence[float] | np.ndarray | Tensor


def _as_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def steps_to_threshold(
    curve_steps: ArrayLike, curve_values: ArrayLike, threshold: float, hold: int = 1
) -> float:
    """First step at which the learning curve reaches ``threshold`` (value >= threshold) and
    stays there for ``hold`` consecutive points (1: the first crossing; a noisy curve that dips
    below again right after crossing counts from a later point with ``hold`` > 1).

    ``curve_steps`` and ``curve_values`` are ``(N,)`` with increasing steps; returns ``math.inf``
    when the threshold is never reached (cap it by the run's budget before comparing if needed);
    a run must be ``hold`` points long from its crossing to count.
    """
    steps, values = _as_numpy(curve_steps), _as_numpy(curve_values)
    if steps.shape != values.shape:
        raise ValueError(f"steps {steps.shape} and values {values.shape} differ in shape")
    if hold < 1:
        raise ValueError(f"hold must be >= 1, got {hold}")
    met = (values >= threshold).astype(np.int64)
    if met.size < hold:
        return math.inf
    # points met within each window of `hold` starting at i
    runs = np.convolve(met, np.ones(hold, dtype=np.int64), mode="valid")
    hit = np.nonzero(runs == hold)[0]
    return float(steps[hit[0]]) if hit.size else math.inf


def area_under_curve(steps: ArrayLike, values: ArrayLike, normalize: bool = False) -> float:
    """Trapezoidal area under a learning curve ``(N,)``; ``normalize`` divides by the step span,
    giving the curve's mean value (comparable across runs of equal length)."""
    s, v = _as_numpy(steps), _as_numpy(values)
    if s.shape != v.shape:
        raise ValueError(f"steps {s.shape} and values {v.shape} differ in shape")
    if s.size < 2:
        return 0.0 if not normalize or s.size == 0 else float(v[0])
    area = float(np.sum((s[1:] - s[:-1]) * (v[1:] + v[:-1]) / 2.0))
    if normalize:
        span = float(s[-1] - s[0])
        return area / span if span > 0 else float(v[0])
    return area


def transfer_matrix(
    results: Mapping[tuple[int, int], float],
    scratch: Sequence[float] | Tensor,
    lower_is_better: bool = False,
) -> Tensor:
    """Relative transfer gain ``M (T, T)``: M[i, j] is the gain on target j from source i.

    ``results[(i, j)]`` is the target-j metric after transfer from source i (e.g. AUC, or steps to
    threshold with ``lower_is_better=True``) and ``scratch[j]`` the same metric trained from scratch.
    Gain = (m_ij - m_j) / |m_j| (sign flipped when lower is better), so 0 means no transfer, > 0
    positive transfer; e.g. 0.5 = half the steps to threshold. Missing pairs are NaN, and so
    is every pair onto a target whose ``scratch`` metric is 0 (a relative gain is undefined
    there: compare absolute differences instead).
    """
    base = torch.as_tensor(scratch, dtype=torch.float64).flatten()
    t = base.numel()
    m = torch.full((t, t), math.nan, dtype=torch.float64)
    for (i, j), value in results.items():
        if not (0 <= i < t and 0 <= j < t):
            raise ValueError(f"results key {(i, j)} out of range for {t} tasks")
        ref = float(base[j])
        gain = (float(value) - ref) / abs(ref) if ref != 0 else math.nan
        m[i, j] = -gain if lower_is_better else gain
    return m


def plot_transfer_matrix(
    matrix: Tensor | np.ndarray,
    names: Sequence[str],
    path: str | Path,
    title: str = "Transfer gain (source -> target)",
    annotate: bool = True,
) -> Path:
    """Save a heatmap PNG of a ``(T, T)`` transfer matrix (rows: sources, columns: targets).

    Uses matplotlib's Agg backend, imported lazily so ``mtrl`` does not depend on it at import.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = matrix.detach().cpu().numpy() if isinstance(matrix, Tensor) else np.asarray(matrix)
    if m.shape != (len(names), len(names)):
        raise ValueError(f"matrix shape {m.shape} does not match {len(names)} names")
    finite = np.abs(m[np.isfinite(m)])
    lim = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(names), 0.8 + 0.6 * len(names)))
    im = ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(names)), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), labels=names)
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    ax.set_title(title)
    if annotate:
        for (i, j), v in np.ndenumerate(m):
            ax.text(
                j,
                i,
                "-" if not np.isfinite(v) else f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=8,
            )
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
