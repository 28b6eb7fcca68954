"""How often gradient clipping binds, per learner (agents/guards.py), over a run's first updates.

    python bench/clip_rate.py --config configs/minatar_distral.yaml --updates 400
    python bench/clip_rate.py --config configs/atari_a2c.yaml --updates 100 agent.name=a2c_independent

Trains ``--updates`` updates of the config (extra ``key=value`` overrides as for train.py; one
torch thread, in a temporary run directory) and prints, for the per-task optimisers, each task's
gradient norm before clipping (median, 90th percentile) and the share of task-updates whose clip
binds, next to the share of updates the joint clip of the form before 2026-12-07 (1/K of the
columns' combined norm) would have bound; for a pooled optimiser, the norm of the tasks' mean
gradient and how often its clip binds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def summarise(
    task_norms: list[list[float]], pooled: list[float], max_norm: float
) -> dict[str, float]:
    """Rates and quantiles from per-update task norms (each a list of K) and pooled norms."""
    out: dict[str, float] = {}
    flat = sorted(v for row in task_norms for v in row)
    if flat:
        out["task_median"] = flat[len(flat) // 2]
        out["task_p90"] = flat[int(len(flat) * 0.9)]
        out["task_clipped"] = sum(v > max_norm for v in flat) / len(flat)
        joint = [sum(v * v for v in row) ** 0.5 / len(row) for row in task_norms]
        out["old_joint_clipped"] = sum(v > max_norm for v in joint) / len(joint)
    if pooled:
        out["pooled_median"] = sorted(pooled)[len(pooled) // 2]
        out["pooled_clipped"] = sum(v > max_norm for v in pooled) / len(pooled)
    return out


def record(runner: Any, updates: int) -> tuple[list[list[float]], list[float]]:
    """Train ``updates`` updates, recording the norms each learner's clip sees."""
    from agents.guards import PER_TASK, POOLED, learner_norms

    task_norms: list[list[float]] = []
    pooled: list[float] = []
    clip = runner.clip_gradients

    def recording_clip() -> tuple[float, bool]:
        for _, kind, _, norms in learner_norms(
            runner.optimizers, runner.learners, runner.num_tasks, runner.pool
        ):
            if kind == PER_TASK:
                task_norms.append(norms)
            elif kind == POOLED:
                pooled.append(norms[0])
        return clip()

    runner.clip_gradients = recording_clip
    obs = runner.reset()
    for _ in range(updates):
        obs = runner.collect(obs)
        runner.train_step()
    return task_norms, pooled


def main(argv: list[str] | None = None) -> int:
    """CLI: train, record and print; exit 2 with one ``error:`` line on bad input."""
    from bench._cli import Parser, fail, input_errors, positive_int

    p = Parser(
        prog="bench/clip_rate.py",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    p.add_argument("--updates", type=positive_int, default=400, help="updates to train (>= 1)")
    p.add_argument("overrides", nargs="*", help="config overrides, as for train.py")
    args = p.parse_args(argv)
    import torch

    import train
    from agents.config import load_config

    torch.set_num_threads(1)
    try:
        cfg = load_config(str(args.config), ["progress=false", "eval.episodes=0", *args.overrides])
        with tempfile.TemporaryDirectory() as tmp:
            runner = train.build(cfg, Path(tmp) / "run")
            try:
                task_norms, pooled = record(runner, args.updates)
            finally:
                runner.env.close()
    except input_errors() as e:
        return fail(e)
    s = summarise(task_norms, pooled, cfg.agent.max_grad_norm)
    head = f"{cfg.agent.name}, {args.updates} updates, max_grad_norm {cfg.agent.max_grad_norm}"
    print(head)
    if task_norms:
        print(
            f"  per task: norm median {s['task_median']:.3g}, 90th percentile "
            f"{s['task_p90']:.3g}; clip bound in {s['task_clipped']:.1%} of task-updates "
            f"(the old joint clip: {s['old_joint_clipped']:.1%} of updates)"
        )
    if pooled:
        print(
            f"  pooled: norm median {s['pooled_median']:.3g}; clip bound in "
            f"{s['pooled_clipped']:.1%} of updates"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
