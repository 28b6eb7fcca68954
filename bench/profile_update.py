"""Where one training update's time goes, per phase, for one agent on 4 Atari games.

    python bench/profile_update.py --agent a2c_multitask
    python bench/profile_update.py --agent distral_klent_2col agent.replay_forward=false
    GOMP_SPINCOUNT=300000 python bench/profile_update.py      # libgomp's default spin count
    python bench/profile_update.py --torch-rmsprop            # torch.optim.RMSprop, clip in place
    python bench/profile_update.py agent.weighting=pcgrad --plain-task-gradients  # one backward per task
    python bench/profile_update.py --mkl-linear               # FC layers on MKL, not oneDNN
    python bench/profile_update.py --strided-first-layer      # no pixel blocks (agents.depth)
    python bench/profile_update.py --kernels                  # the task column's FC product alone

Phases (ms per update, mean over the timed updates): ``collect`` (the whole rollout) split into
``acting`` (agent.step), ``env`` (step_async + step_wait) and the rest; then the train step as
the runner does it: ``losses`` (agent.task_losses: bootstrap value + loss pass), ``backward``
(``Runner.weighting_backward``; ``--plain-task-gradients`` takes a gradient weighting's per-task
gradients one backward per task instead of agents.blocked's one), ``clip``, ``step`` (optimizers). Extra ``key=value`` arguments override the
config (configs/atari_a2c.yaml), e.g. ``env.task_groups=2``. Also printed: minor page faults per
update (fresh pages the allocator had to map). Like train.py, it limits OpenMP
spinning before torch loads unless ``GOMP_SPINCOUNT``/``OMP_WAIT_POLICY`` is set.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.omp import limit_openmp_spinning  # noqa: E402

limit_openmp_spinning()

import torch  # noqa: E402

# FTZ/DAZ as Runner.run sets it while training (agents.seeding.flushing_denormals); the rows here
# call collect/train_step directly.
torch.set_flush_denormal(True)

GAMES = ["Pong", "Breakout", "SpaceInvaders", "BeamRider"]


def _timed(acc: dict[str, float], key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` that adds its wall time to ``acc[key]`` on each call."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[key] += time.perf_counter() - start

    return wrapper


def profile(
    agent: str,
    updates: int,
    overrides: list[str],
    torch_rmsprop: bool,
    plain_task_gradients: bool = False,
) -> dict:
    """Mean ms per update of each phase, and steps/s, after 5 warm-up updates."""
    import train
    from agents.config import load_config

    cfg = load_config(
        ROOT / "configs" / "atari_a2c.yaml",
        [
            f"agent.name={agent}",
            f"env.tasks=[{','.join(GAMES)}]",
            "env.num_envs_per_task=4",
            "progress=false",
            "eval.episodes=0",
            *overrides,
        ],
    )
    acc: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory() as tmp:
        runner = train.build(cfg, Path(tmp) / "run")
        if torch_rmsprop:  # the optimiser before agents.optim: five passes, clipping in place
            runner.optimizers = [
                torch.optim.RMSprop(
                    o.param_groups[0]["params"],
                    lr=o.param_groups[0]["lr"],
                    alpha=cfg.agent.rmsprop_alpha,
                    eps=cfg.agent.eps,
                    foreach=True,
                )
                for o in runner.optimizers
            ]
        if plain_task_gradients:  # the runner's path for an agent that opts out of blocks
            runner.agent.separable_losses = False
        obs = runner.reset()

        def update() -> None:
            nonlocal obs
            t0 = time.perf_counter()
            obs = runner.collect(obs)
            t1 = time.perf_counter()
            losses, _ = runner.agent.task_losses(runner.rollout)
            for opt in runner.optimizers:
                opt.zero_grad(set_to_none=True)
            t2 = time.perf_counter()
            runner.weighting_backward(losses)
            t3 = time.perf_counter()
            runner.clip_gradients()
            t4 = time.perf_counter()
            for opt in runner.optimizers:
                opt.step()
            t5 = time.perf_counter()
            for key, a, b in [
                ("collect", t0, t1),
                ("losses", t1, t2),
                ("backward", t2, t3),
                ("clip", t3, t4),
                ("step", t4, t5),
            ]:
                acc[key] += b - a

        for _ in range(5):
            update()
        acc.clear()
        env, ag = runner.env, runner.agent
        # instance attributes shadow the methods for this profile only
        setattr(env, "step_async", _timed(acc, "env", env.step_async))  # noqa: B010
        setattr(env, "step_wait", _timed(acc, "env", env.step_wait))  # noqa: B010
        setattr(ag, "step", _timed(acc, "acting", ag.step))  # noqa: B010
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for _ in range(updates):
            update()
        elapsed = time.perf_counter() - start
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        frames = updates * cfg.agent.n_steps * runner.env.num_envs
        runner.env.close()
    out = {k: 1000 * v / updates for k, v in acc.items()}
    out["collect other"] = out["collect"] - out["acting"] - out["env"]
    out["total"] = 1000 * elapsed / updates
    out["steps/s"] = frames / elapsed
    out["page faults"] = faults / updates
    return out


def kernels() -> dict[str, float]:
    """ms of the FC products at acting size (4 tasks x 4 envs) and of the input gradient at loss
    size (80 samples), through MKL (torch's matmul) and oneDNN (agents.linear), 2 torch threads."""
    from agents.linear import _mm

    torch.set_num_threads(2)
    x, w, b = torch.randn(4, 4, 3136), torch.randn(4, 3136, 512), torch.zeros(4, 1, 512)
    x16, g80 = x.reshape(16, 3136), torch.randn(80, 512)

    def ms(fn: Callable[[], object], n: int = 200) -> float:
        for _ in range(10):
            fn()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return 1000 * (time.perf_counter() - start) / n

    return {
        "grouped FC baddbmm (4 x (4, 3136) @ (3136, 512))": ms(lambda: torch.baddbmm(b, x, w)),
        "sum of the same 25.7 MB of weights": ms(w.sum),
        "shared FC (16, 3136) @ (3136, 512), MKL": ms(lambda: x16 @ w[0]),
        "shared FC (16, 3136) @ (3136, 512), oneDNN": ms(lambda: _mm(x16, w[0])),
        "input gradient (80, 512) @ (512, 3136), MKL": ms(lambda: g80 @ w[0].t()),
        "input gradient (80, 512) @ (512, 3136), oneDNN": ms(lambda: _mm(g80, w[0].t())),
    }


def main(argv: list[str] | None = None) -> int:
    """CLI: profile one agent (or the FC kernels); exit 2 with one ``error:`` line on bad input."""
    from agents.factory import names
    from bench._cli import Parser, fail, input_errors, positive_int, sigint_raises

    p = Parser(
        prog="bench/profile_update.py",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--agent", default="a2c_multitask", choices=names())
    p.add_argument("--updates", type=positive_int, default=30, help="timed updates (>= 1)")
    p.add_argument("--torch-rmsprop", action="store_true")
    p.add_argument("--mkl-linear", action="store_true")
    p.add_argument("--strided-first-layer", action="store_true")
    p.add_argument("--kernels", action="store_true")
    p.add_argument("--plain-task-gradients", action="store_true")
    p.add_argument("overrides", nargs="*", help="config key=value")
    args = p.parse_args(argv)
    with sigint_raises():
        try:
            if args.kernels:
                for name, value in kernels().items():
                    print(f"{name}: {value:.3f} ms")
                return 0
            if args.mkl_linear:
                import agents.linear

                agents.linear.ENABLED = False
            if args.strided_first_layer:
                import agents.depth

                agents.depth.ENABLED = False
            res = profile(
                args.agent,
                args.updates,
                args.overrides,
                args.torch_rmsprop,
                args.plain_task_gradients,
            )
        except input_errors() as e:
            return fail(e)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    flags = (
        " (torch RMSprop)" * args.torch_rmsprop
        + " (MKL linear)" * args.mkl_linear
        + " (strided first layer)" * args.strided_first_layer
        + " (plain task gradients)" * args.plain_task_gradients
    )
    print(f"# {args.agent} {' '.join(args.overrides)}{flags}")
    print(" | ".join(f"{k} {v:,.1f}" for k, v in res.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
