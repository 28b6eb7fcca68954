"""Does the default job learn? Train ``configs/default.yaml`` for a budget a CPU can afford and
report its per-game training returns, policy entropies and KL from the run's TensorBoard log.

    python bench/atari_learning.py --steps 2400000                  # train + report
    python bench/atari_learning.py --from-run runs/atari_default    # report only
    python bench/atari_learning.py --config configs/atari_a2c.yaml  # the A2C preset

Prints a markdown table: each game's mean training-episode return (sampled actions, raw unclipped
score) in the first and the last of ``--bins`` equal step bins, next to the random and human
references (envs/atari_scores.py; "n/a" for a run whose config.yaml says it is not Atari), and
writes a figure. Names follow the job: ``configs/<stem>.yaml`` trains into ``runs/atari_<name>``
and draws ``docs/atari_<name>.png``, where ``<name>`` is the stem without an ``atari_`` prefix
(``configs/default.yaml`` -> runs/atari_default, docs/atari_default.png); ``--from-run DIR``
draws ``docs/atari_<name>.png`` with ``<name>`` the directory's name without that prefix (a run
does not record its config file). ``--run-dir`` and ``--png`` choose other paths. Extra
``key=value`` arguments override the config, as for train.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
    NaN where a bin has none. Points outside the edges are in no bin (a longer run's later
    episodes, compared over a shorter run's span)."""
    inside = (points[:, 0] >= edges[0]) & (points[:, 0] <= edges[-1])
    points = points[inside]
    idx = np.minimum(np.searchsorted(edges, points[:, 0], side="right") - 1, len(edges) - 2)
    out = np.full(len(edges) - 1, np.nan)
    for b in range(len(out)):
        if (idx == b).any():
            out[b] = points[idx == b, 1].mean()
    return out


def run_suite(run_dir: Path) -> str:
    """The env suite in the run's ``config.yaml``; ``atari`` when the directory has none."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return "atari"
    try:
        return str(yaml.safe_load(path.read_text())["env"]["suite"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read env.suite from {path}: {e}") from None


def job_name(stem: str) -> str:
    """``atari_<name>`` from a config file's stem or a run directory's name, ``<name>`` being it
    without an ``atari_`` prefix (``default`` and ``atari_default`` -> ``atari_default``)."""
    return "atari_" + stem.removeprefix("atari_")


def table(
    games: dict[str, np.ndarray], bins: int, atari: bool = True
) -> tuple[str, np.ndarray, dict[str, np.ndarray]]:
    """Markdown table of first- vs last-bin mean returns per game; also the bin edges and means.
    The Atari reference columns say n/a unless ``atari`` (MinAtar has games of the same names)."""
    from envs.atari_scores import REFERENCE_SCORES, human_normalised

    refs_of = REFERENCE_SCORES if atari else {}

    last = max(float(p[:, 0].max()) for p in games.values() if len(p))
    edges = np.linspace(0.0, last, bins + 1)
    means = {g: binned(p, edges) for g, p in games.items()}
    lines = [
        f"| game | random | human | first {edges[1]:,.0f} steps | last {edges[-1] - edges[-2]:,.0f} "
        "steps | last, human-normalised | episodes |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for g, m in means.items():
        refs = [f"{r:g}" for r in refs_of[g]] if g in refs_of else ["n/a"] * 2
        hns = human_normalised(g, float(m[-1])) if atari else None
        lines.append(
            f"| {g} | {refs[0]} | {refs[1]} | {m[0]:.1f} | {m[-1]:.1f} | "
            f"{'n/a' if hns is None else f'{hns:.3f}'} | {len(games[g])} |"
        )
    return "\n".join(lines), edges, means


def plot(
    edges: np.ndarray,
    means: dict[str, np.ndarray],
    curves: dict[str, np.ndarray],
    png: Path,
    atari: bool = True,
) -> None:
    """One panel per game (binned return, Atari's random score dashed) and one for entropy and
    KL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from envs.atari_scores import REFERENCE_SCORES

    refs = REFERENCE_SCORES if atari else {}

    mid = (edges[:-1] + edges[1:]) / 2 / 1e6
    fig, axes = plt.subplots(1, len(means) + 1, figsize=(3.2 * (len(means) + 1), 3.0))
    for ax, (g, m) in zip(axes, means.items(), strict=False):
        ax.plot(mid, m, marker="o", ms=3)
        if g in refs:
            ax.axhline(refs[g][0], ls="--", c="grey", lw=1, label="random")
        ax.set_title(g)
        ax.set_xlabel("env steps, all games (M)")
    axes[0].set_ylabel("training episode return")
    if any(g in refs for g in means):
        axes[0].legend(fontsize=7)
    ax = axes[-1]
    for tag, pts in curves.items():
        if len(pts):
            ax.plot(pts[:, 0] / 1e6, pts[:, 1], label=tag.split("/")[1])
    ax.set_title("policy terms (nats)")
    ax.set_xlabel("env steps, all games (M)")
    if any(len(pts) for pts in curves.values()):
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, png)


def save_png(fig: Figure, png: Path) -> None:
    """Write ``fig`` to ``png`` atomically (an interrupted save leaves the old figure) and close
    it."""
    import matplotlib.pyplot as plt

    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp")
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, png)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """CLI: train (unless ``--from-run``) and report; exit 2 with one ``error:`` line on bad input,
    or train.py's exit code when training fails."""
    from bench._cli import Parser, fail, positive_int

    p = Parser(
        prog="bench/atari_learning.py",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument(
        "--steps", type=positive_int, default=2_400_000, help="total env steps over all games"
    )
    p.add_argument(
        "--config", type=Path, help="YAML config to train (default: configs/default.yaml)"
    )
    p.add_argument(
        "--run-dir", type=Path, help="where to train (default: runs/atari_<name>, see above)"
    )
    p.add_argument("--from-run", type=Path, help="report on this finished run, no training")
    p.add_argument("--bins", type=positive_int, default=12, help="equal step bins (>= 1)")
    p.add_argument("--png", type=Path, help="the figure (default: docs/atari_<name>.png)")
    p.add_argument("overrides", nargs="*", help="config overrides, as for train.py")
    args = p.parse_args(argv)
    run_dir = args.from_run
    if run_dir is not None and (args.config or args.run_dir or args.overrides):
        p.error(
            "--from-run reports on a finished run and trains nothing; drop --config, "
            "--run-dir and config overrides"
        )
    if run_dir is not None:
        job = job_name(Path(os.path.abspath(run_dir)).name)  # "." is the directory's name too
    else:
        job = job_name((args.config or ROOT / "configs" / "default.yaml").stem)
    png = args.png or ROOT / "docs" / f"{job}.png"
    try:
        if run_dir is None:
            from agents.omp import limit_openmp_spinning

            limit_openmp_spinning()  # before torch loads, as train.py
            import train

            run_dir = args.run_dir or ROOT / "runs" / job
            extra = [f"total_steps={args.steps}", f"run_dir={run_dir}", "progress=false"]
            if args.config is not None:
                extra = ["--config", str(args.config), *extra]
            if (code := train.main([*extra, *args.overrides])) != 0:
                return code
        games, curves = read_run(run_dir)
        atari = run_suite(run_dir) == "atari"
    except ValueError as e:
        return fail(e)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    text, edges, means = table(games, args.bins, atari)
    plot(edges, means, curves, png, atari)
    print(text)
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
