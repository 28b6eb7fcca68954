"""Does the default job learn? Train ``configs/default.yaml`` for a budget a CPU can afford and
report its per-game training returns, policy entropies and KL from the run's TensorBoard log.

    python bench/atari_learning.py --steps 2400000 --run-dir runs/atari_default   # train + report
    python bench/atari_learning.py --from-run runs/atari_default                   # report only
    python bench/atari_learning.py --config configs/atari_a2c.yaml --run-dir runs/atari_a2c  # A2C

Writes ``docs/atari_default.png`` (``--png``) and prints a markdown table: each game's mean
training-episode return (sampled actions, raw unclipped score) in the first and the last of
``--bins`` equal step bins, next to the random and human references (envs/atari_scores.py).
Extra ``key=value`` arguments override the config, as for train.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CURVES = ("losses/entropy", "losses/entropy_pi0", "losses/kl")


def read_run(run_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-game ``(steps, returns)`` of finished training episodes and the logged loss curves,
    each an ``(n, 2)`` array of (global step, value), from the run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not run_dir.is_dir():
        raise ValueError(f"run directory {run_dir} not found")
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    tags = events.Tags()["scalars"]

    def series(tag: str) -> np.ndarray:
        return np.array([(e.step, e.value) for e in events.Scalars(tag)], dtype=float).reshape(
            -1, 2
        )

    games = {
        t.split("/")[1]: series(t) for t in tags if t.startswith("task/") and t.endswith("/return")
    }
    if not games:
        raise ValueError(f"no task/<game>/return scalars under {run_dir}: not a run directory")
    return games, {t: series(t) for t in CURVES if t in tags}


def binned(points: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean value of the points in each ``[edges[i], edges[i+1])`` bin (the last bin closed);
    NaN where a bin has none."""
    idx = np.clip(np.searchsorted(edges, points[:, 0], side="right") - 1, 0, len(edges) - 2)
    out = np.full(len(edges) - 1, np.nan)
    for b in range(len(out)):
        if (idx == b).any():
            out[b] = points[idx == b, 1].mean()
    return out


def table(games: dict[str, np.ndarray], bins: int) -> tuple[str, np.ndarray, dict[str, np.ndarray]]:
    """Markdown table of first- vs last-bin mean returns per game; also the bin edges and means."""
    from envs.atari_scores import REFERENCE_SCORES, human_normalised

    last = max(float(p[:, 0].max()) for p in games.values() if len(p))
    edges = np.linspace(0.0, last, bins + 1)
    means = {g: binned(p, edges) for g, p in games.items()}
    lines = [
        f"| game | random | human | first {edges[1]:,.0f} steps | last {edges[-1] - edges[-2]:,.0f} "
        "steps | last, human-normalised | episodes |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for g, m in means.items():
        refs = [f"{r:g}" for r in REFERENCE_SCORES[g]] if g in REFERENCE_SCORES else ["n/a"] * 2
        hns = human_normalised(g, float(m[-1]))
        lines.append(
            f"| {g} | {refs[0]} | {refs[1]} | {m[0]:.1f} | {m[-1]:.1f} | "
            f"{'n/a' if hns is None else f'{hns:.3f}'} | {len(games[g])} |"
        )
    return "\n".join(lines), edges, means


def plot(
    edges: np.ndarray, means: dict[str, np.ndarray], curves: dict[str, np.ndarray], png: Path
) -> None:
    """One panel per game (binned return, random score dashed) and one for entropy and KL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from envs.atari_scores import REFERENCE_SCORES

    mid = (edges[:-1] + edges[1:]) / 2 / 1e6
    fig, axes = plt.subplots(1, len(means) + 1, figsize=(3.2 * (len(means) + 1), 3.0))
    for ax, (g, m) in zip(axes, means.items(), strict=False):
        ax.plot(mid, m, marker="o", ms=3)
        if g in REFERENCE_SCORES:
            ax.axhline(REFERENCE_SCORES[g][0], ls="--", c="grey", lw=1, label="random")
        ax.set_title(g)
        ax.set_xlabel("env steps, all games (M)")
    axes[0].set_ylabel("training episode return")
    if any(g in REFERENCE_SCORES for g in means):
        axes[0].legend(fontsize=7)
    ax = axes[-1]
    for tag, pts in curves.items():
        if len(pts):
            ax.plot(pts[:, 0] / 1e6, pts[:, 1], label=tag.split("/")[1])
    ax.set_title("policy terms (nats)")
    ax.set_xlabel("env steps, all games (M)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=2_400_000, help="total env steps over all games")
    p.add_argument(
        "--config", type=Path, help="YAML config to train (default: configs/default.yaml)"
    )
    p.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "atari_default")
    p.add_argument("--from-run", type=Path, help="report on this finished run, no training")
    p.add_argument("--bins", type=int, default=12)
    p.add_argument("--png", type=Path, default=ROOT / "docs" / "atari_default.png")
    p.add_argument("overrides", nargs="*", help="config overrides, as for train.py")
    args = p.parse_args(argv)
    run_dir = args.from_run
    if run_dir is not None and args.config is not None:
        p.error("--from-run reports on a finished run and trains nothing; drop --config")
    if run_dir is None:
        from agents.omp import limit_openmp_spinning

        limit_openmp_spinning()  # before torch loads, as train.py
        import train

        run_dir = args.run_dir
        extra = [f"total_steps={args.steps}", f"run_dir={run_dir}", "progress=false"]
        if args.config is not None:
            extra = ["--config", str(args.config), *extra]
        if (code := train.main([*extra, *args.overrides])) != 0:
            return code
    try:
        games, curves = read_run(run_dir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text, edges, means = table(games, args.bins)
    plot(edges, means, curves, args.png)
    print(text)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
