"""Atari throughput: env-only steps/s, our agents end to end, and SB3 A2C in the same invocation.

    python bench/throughput.py                      # 4 games x 4 envs, every agent, SB3 reference
    python bench/throughput.py --agents a2c_multitask --updates 100

All rates are environment steps per second summed over all envs, measured after a warm-up (the
first reset of ALE is slow and is excluded for every row alike). SB3's A2C (CnnPolicy) runs the
same total number of envs, the same n_steps and the same torch threads, on the first game.
Paste the printed table into docs/benchmarks.md with the command line.
"""

from __future__ import annotations

import argparse
import platform
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


def ours(agent: str, games: list[str], envs_per_task: int, updates: int, extra: list[str]) -> float:
    """End-to-end training steps/s of one of our agents (collect + losses + update)."""
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
    with tempfile.TemporaryDirectory() as tmp:
        runner = train.build(cfg, Path(tmp) / "run")
        obs = runner.reset()
        for _ in range(5):
            obs = runner.collect(obs)
            runner.train_step()
        start = time.perf_counter()
        for _ in range(updates):
            obs = runner.collect(obs)
            runner.train_step()
        elapsed = time.perf_counter() - start
        runner.env.close()
    return updates * cfg.agent.n_steps * runner.env.num_envs / elapsed


def sb3(game: str, num_envs: int, n_steps: int, updates: int) -> float:
    """Stable-Baselines3 A2C (CnnPolicy, zoo Atari settings) steps/s on one game."""
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    env = make_atari_env(
        f"ALE/{game}-v5",
        n_envs=num_envs,
        seed=0,
        # frameskip=1: SB3's AtariWrapper skips 4 frames itself (see DESIGN.md pitfalls).
        env_kwargs={"frameskip": 1, "repeat_action_probability": 0.25, "full_action_space": True},
    )
    env = VecFrameStack(env, 4)
    model = A2C(
        "CnnPolicy",
        env,
        n_steps=n_steps,
        learning_rate=7e-4,
        ent_coef=0.01,
        vf_coef=0.25,
        policy_kwargs={
            "optimizer_class": torch.optim.RMSprop,
            "optimizer_kwargs": {"alpha": 0.99, "eps": 1e-5, "weight_decay": 0},
        },
        device="cpu" if not torch.cuda.is_available() else "auto",
        verbose=0,
    )
    model.learn(5 * n_steps * num_envs)  # warm-up (first reset)
    steps = updates * n_steps * num_envs
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--games", nargs="+", default=GAMES)
    p.add_argument("--envs-per-task", type=int, default=4)
    p.add_argument("--updates", type=int, default=60, help="timed updates per agent")
    p.add_argument("--agents", nargs="*", default=AGENTS)
    p.add_argument("--env-steps", type=int, default=400, help="timed steps for env-only rows")
    p.add_argument("--no-sb3", action="store_true")
    p.add_argument("--shared-encoder", action="store_true", help="also 2-col shared-encoder rows")
    args = p.parse_args()

    k, e = len(args.games), args.envs_per_task
    rows: list[tuple[str, float]] = []
    print(f"# {k} games x {e} envs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for backend in ("native", "gymnasium"):
        rows.append(
            (
                f"env only ({backend}), random actions",
                env_only(args.games, e, backend, args.env_steps),
            )
        )
        print(rows[-1], flush=True)
    sb3_rate = None
    if not args.no_sb3:
        sb3_rate = sb3(args.games[0], k * e, 5, args.updates)
        rows.append((f"SB3 A2C CnnPolicy ({args.games[0]}, {k * e} envs)", sb3_rate))
        print(rows[-1], flush=True)
    own: dict[str, float] = {}
    variants = [(a, []) for a in args.agents]
    if args.shared_encoder:
        variants += [(a, ["agent.shared_encoder=true"]) for a in args.agents if a.endswith("2col")]
    for agent, extra in variants:
        label = agent + (" (shared_encoder)" if extra else "")
        own[label] = ours(agent, args.games, e, args.updates, extra)
        rows.append((label, own[label]))
        print(rows[-1], flush=True)

    base = own.get("a2c_multitask")
    print()
    print(
        f"Machine: {platform.processor() or platform.machine()}, torch threads "
        f"{torch.get_num_threads()}; command: python bench/throughput.py {' '.join(sys.argv[1:])}"
    )
    print()
    print("| run | steps/s | vs SB3 A2C | vs a2c_multitask |")
    print("|---|---:|---:|---:|")
    for label, rate in rows:
        vs_sb3 = f"{rate / sb3_rate:.2f}x" if sb3_rate else "-"
        vs_mt = f"{rate / base:.2f}x" if base and label in own else "-"
        print(f"| {label} | {rate:,.0f} | {vs_sb3} | {vs_mt} |")


if __name__ == "__main__":
    main()
