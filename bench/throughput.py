"""Atari throughput: env-only steps/s, our agents end to end, and SB3 A2C in the same invocation.

    python bench/throughput.py                      # 4 games x 4 envs, every agent, SB3 reference
    python bench/throughput.py --agents a2c_multitask distral_klent_2col --rounds 9

All rates are environment steps per second summed over all envs, measured after a warm-up (the
first reset of ALE is slow and is excluded for every row alike). SB3's A2C (CnnPolicy) runs the
same total number of envs, the same n_steps and the same torch threads, on the first game.
Every row is built once, then timed in ``--rounds`` interleaved rounds of ``--updates`` updates,
so that drift in a shared machine's speed shows up as spread, not as a bias between rows; each
ratio is taken within a round. Paste the printed table into docs/benchmarks.md with the command.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.omp import limit_openmp_spinning  # noqa: E402

# Before torch loads, as train.py does; SB3 runs in this process with the same setting.
limit_openmp_spinning()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench._machine import cpu_count, cpu_name  # noqa: E402
from bench._ratios import ratio_cell  # noqa: E402
from bench._zoo import ZOO_A2C, ZOO_RMSPROP_EPS  # noqa: E402

# FTZ/DAZ as Runner.run sets it while training (agents.seeding.flushing_denormals); the rows here
# call collect/train_step directly. SB3 in this process gets the same mode.
torch.set_flush_denormal(True)

GAMES = ["Pong", "Breakout", "SpaceInvaders", "BeamRider"]
AGENTS = [
    "a2c_multitask",
    "a2c_independent",
    "a2c_2col",
    "distral_kl_1col",
    "distral_klent_1col",
    "distral_kl_2col",
    "distral_klent_2col",
]


def env_only(games: list[str], envs_per_task: int, backend: str, steps: int) -> float:
    """Random-action steps/s of the multi-task Atari vector env alone."""
    from envs.atari import AtariVecEnv

    env = AtariVecEnv(games, envs_per_task, backend=backend)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    n = env.num_envs
    for _ in range(20):
        env.step(rng.integers(0, 18, n))
    start = time.perf_counter()
    for _ in range(steps):
        env.step(rng.integers(0, 18, n))
    rate = steps * n / (time.perf_counter() - start)
    env.close()
    return rate


class Ours:
    """One of our agents, built once and warmed up; :meth:`rate` times further updates."""

    def __init__(
        self, agent: str, games: list[str], envs_per_task: int, extra: list[str], tmp: Path
    ):
        import train
        from agents.config import load_config

        overrides = [
            f"agent.name={agent}",
            f"env.tasks=[{','.join(games)}]",
            f"env.num_envs_per_task={envs_per_task}",
            "progress=false",
            "eval.episodes=0",
            *extra,
        ]
        cfg = load_config(ROOT / "configs" / "atari_a2c.yaml", overrides)
        self.runner = train.build(cfg, tmp / "-".join([agent, *extra]).replace("=", "_"))
        self.frames = cfg.agent.n_steps * self.runner.env.num_envs
        self.obs = self.runner.reset()
        self.rate(5)  # warm-up: ALE's first reset, allocator, oneDNN primitive caches

    def rate(self, updates: int) -> float:
        """End-to-end training steps/s (collect + losses + update) over ``updates`` updates."""
        start = time.perf_counter()
        for _ in range(updates):
            self.obs = self.runner.collect(self.obs)
            self.runner.train_step()
        return updates * self.frames / (time.perf_counter() - start)

    def close(self) -> None:
        self.runner.env.close()


class SB3:
    """Stable-Baselines3 A2C (CnnPolicy, the zoo's Atari hyperparameters) on one game, built and
    warmed up. Its optimiser is torch's RMSprop, not the zoo's RMSpropTFLike (a per-parameter
    Python loop, so no faster): this row is a speed reference, not a learning one."""

    def __init__(self, env_id: str, num_envs: int, n_steps: int):
        import ale_py
        import gymnasium as gym
        from stable_baselines3 import A2C
        from stable_baselines3.common.env_util import make_atari_env
        from stable_baselines3.common.vec_env import VecFrameStack

        gym.register_envs(ale_py)
        env = make_atari_env(
            env_id,
            n_envs=num_envs,
            seed=0,
            # frameskip=1: SB3's AtariWrapper skips 4 frames itself.
            env_kwargs={
                "frameskip": 1,
                "repeat_action_probability": 0.25,
                "full_action_space": True,
            },
        )
        self.env = VecFrameStack(env, 4)
        self.model = A2C(
            "CnnPolicy",
            self.env,
            **{**ZOO_A2C, "n_steps": n_steps},  # our config's rollout length, for like steps
            policy_kwargs={
                "optimizer_class": torch.optim.RMSprop,
                "optimizer_kwargs": {"alpha": 0.99, "eps": ZOO_RMSPROP_EPS, "weight_decay": 0},
            },
            device="cpu" if not torch.cuda.is_available() else "auto",
            verbose=0,
        )
        self.frames = n_steps * num_envs
        self.rate(5)  # warm-up (first reset)

    def rate(self, updates: int) -> float:
        steps = updates * self.frames
        start = time.perf_counter()
        self.model.learn(steps, reset_num_timesteps=False)
        return steps / (time.perf_counter() - start)

    def close(self) -> None:
        self.env.close()


def main(argv: list[str] | None = None) -> int:
    """CLI: time every row and print the table; exit 2 with one ``error:`` line on bad input."""
    from bench._cli import Parser, fail, input_errors, positive_int, sigint_raises

    p = Parser(
        prog="bench/throughput.py",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--games", nargs="+", default=GAMES)
    p.add_argument("--envs-per-task", type=positive_int, default=4)
    p.add_argument(
        "--updates", type=positive_int, default=4, help="timed updates per row per round"
    )
    p.add_argument(
        "--rounds", type=positive_int, default=15, help="interleaved rounds over every row"
    )
    p.add_argument("--agents", nargs="*", default=AGENTS, choices=AGENTS)
    p.add_argument("--env-steps", type=positive_int, default=400, help="timed steps, env-only rows")
    p.add_argument("--no-sb3", action="store_true")
    p.add_argument("--shared-encoder", action="store_true", help="also 2-col shared-encoder rows")
    args = p.parse_args(argv)
    with sigint_raises():
        try:
            return run(args, sys.argv[1:] if argv is None else argv)
        except input_errors() as e:
            return fail(e)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130


def sb3_env_id(game: str) -> str:
    """Gymnasium id (``ALE/<Game>-v5``) of ``game`` for the SB3 row; EnvError if it has none."""
    from envs.atari import _gym_id, canonical_game
    from envs.base import EnvError

    env_id = _gym_id(canonical_game(game))
    if env_id is None:
        raise EnvError(
            f"{game!r} has no ALE/<Game>-v5 id for the SB3 row; put another game "
            "first in --games or pass --no-sb3"
        )
    return env_id


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Every game checked before any row is timed, then the rows and the table."""
    from envs.atari import canonical_game

    for game in args.games:
        canonical_game(game)  # EnvError naming the unknown game, before minutes of timing
    sb3_id = None if args.no_sb3 else sb3_env_id(args.games[0])
    k, e = len(args.games), args.envs_per_task
    print(f"# {k} games x {e} envs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    env_rows = {
        f"env only ({backend}), random actions": env_only(args.games, e, backend, args.env_steps)
        for backend in ("native", "gymnasium")
    }
    print(env_rows, flush=True)
    variants: list[tuple[str, list[str]]] = [(a, []) for a in args.agents]
    if args.shared_encoder:
        variants += [(a, ["agent.shared_encoder=true"]) for a in args.agents if a.endswith("2col")]
    sb3_label = f"SB3 A2C CnnPolicy ({args.games[0]}, {k * e} envs)"
    timed: dict[str, Ours | SB3] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if sb3_id is not None:
                timed[sb3_label] = SB3(sb3_id, k * e, 5)
            for agent, extra in variants:
                timed[agent + (" (shared_encoder)" if extra else "")] = Ours(
                    agent, args.games, e, extra, Path(tmp)
                )
            # Interleaved rounds, each starting one row later, so that a machine that speeds up
            # or slows down affects every row alike and each ratio compares rows timed side by
            # side. No rows (--agents with no names, --no-sb3): only the env-only rows.
            rates: dict[str, list[float]] = {label: [] for label in timed}
            order = list(timed)
            for r in range(args.rounds if order else 0):
                for label in order[r % len(order) :] + order[: r % len(order)]:
                    rates[label].append(timed[label].rate(args.updates))
                print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.0f}" for n, v in rates.items()))
        finally:
            for row in timed.values():
                row.close()

    sb3_rates = rates.get(sb3_label)
    base = rates.get("a2c_multitask")
    print()
    print(
        f"Machine: {cpu_name()}, {cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}; command: python bench/throughput.py {' '.join(argv)}"
    )
    print(
        f"Steps/s: median over {args.rounds} interleaved rounds of {args.updates} updates; "
        "ratios: median (range) of the per-round ratios."
    )
    print()
    print("| run | steps/s | vs SB3 A2C | vs a2c_multitask |")
    print("|---|---:|---:|---:|")
    for label, rate in env_rows.items():
        vs_sb3 = f"{rate / np.median(sb3_rates):.2f}x" if sb3_rates else "-"
        print(f"| {label} | {rate:,.0f} | {vs_sb3} | - |")
    for label, values in rates.items():
        mt = base if label != sb3_label else None
        print(
            f"| {label} | {np.median(values):,.0f} | {ratio_cell(values, sb3_rates)} "
            f"| {ratio_cell(values, mt)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
