"""Does our A2C learn like Stable-Baselines3's? One Atari game, SB3's environment protocol and the
SB3 zoo's A2C hyperparameters on both sides; training returns against environment steps.

    python bench/sb3_parity.py --out runs/parity                          # SpaceInvaders, 1M steps
    python bench/sb3_parity.py --out runs/parity --seeds 0 1 --workers 2  # two seeds, 2 at a time
    python bench/sb3_parity.py --from-dir runs/parity                     # report only
    python bench/sb3_parity.py --out runs/parity --sb3-on-our-env         # + SB3 on our env

Ours: ``train.py --config configs/atari_a2c.yaml`` with one game (``a2c_multitask`` on one task
is plain A2C: one Nature CNN with a policy and a value head) and the environment set to SB3's
``make_atari_env`` on ``<Game>NoFrameskip-v4``: 16 envs, no sticky actions, the game's minimal
action set, a lost life ends the learning episode; frame skip 4 with max-pooling, up to 30 no-ops,
84x84 grey frames, 4 stacked, rewards clipped, as both do by default. SB3: ``A2C("CnnPolicy")``
with the zoo's Atari hyperparameters (n_steps 5, lr 7e-4, ent_coef 0.01, vf_coef 0.25, RMSpropTFLike
with eps 1e-5). Both use one torch thread, so two runs fit 2 cores. What still differs: SB3 presses
FIRE after every reset and lost life (``FireResetEnv``) and ours does not (hence Space Invaders by
default, where FIRE only fires a shot; in Breakout it launches the ball), after a lost life SB3
also steps NOOP and action 2 unasked and restarts its frame stack from zeros, the frames are resized
by ale-py (ours) and OpenCV (SB3), the no-op starts draw 0-29 (ale-py's native draw) or 1-30,
RMSprop's eps sits outside the square root (ours, 0.00316) or inside it (1e-5: the same floor),
and an episode is cut at 27,000 agent steps (ours) or 100,000 (v4's 400,000 frames), which early
training does not reach. ``--sb3-on-our-env`` adds a third side, SB3's A2C trained on our env
(as ours gets it, behind SB3's ``VecEnv`` interface), which tells a gap the environments make from
one the agents make (tests/agents/test_sb3_a2c.py pins our update to SB3's on the same rollouts).

Writes ``OUT/ours_s<seed>/`` (a train.py run; an unfinished one is resumed),
``OUT/sb3_s<seed>.json`` (every finished training episode: steps, raw score) and with
``--sb3-on-our-env`` ``OUT/sb3_our_env_s<seed>.json``, skipping runs that are done; prints a
markdown table of the mean training return per bin of ``--bin`` steps (mean over seeds; with
several seeds, their range) and draws ``OUT/parity.png`` (or ``--png``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._zoo import ZOO_A2C, ZOO_RMSPROP_EPS  # noqa: E402
from bench.atari_learning import binned, read_run, save_png  # noqa: E402

# the side of SB3's A2C on our env (--sb3-on-our-env): its results' file prefix and table key
OUR_ENV = "sb3_our_env"

# SB3's make_atari_env on <Game>NoFrameskip-v4, in our config's terms
PROTOCOL = [
    "env.num_envs_per_task=16",
    "env.atari.repeat_action_probability=0",
    "env.atari.full_action_space=false",
    "env.atari.terminal_on_life_loss=true",
]


def ours_argv(game: str, steps: int, seed: int, run_dir: Path) -> list[str]:
    """train.py's arguments for our run: the A2C preset, one game, SB3's protocol; ``--resume``
    when ``run_dir`` holds an unfinished run."""
    if run_dir.is_dir() and any(run_dir.iterdir()):
        return ["--resume", str(run_dir)]
    return [
        "--config", str(ROOT / "configs" / "atari_a2c.yaml"), f"env.tasks=[{game}]", *PROTOCOL,
        f"total_steps={steps}", f"seed={seed}", "torch_threads=1", "eval.episodes=0",
        "progress=false", "log_interval=10000", f"run_dir={run_dir}",
    ]  # fmt: skip


def our_env_for_sb3(game: str, seed: int) -> Any:
    """Our Atari env as train.py builds it for our side of the check (the preset's settings and
    :data:`PROTOCOL`), behind SB3's ``VecEnv`` interface; ``episodes`` lists every finished game
    as (steps so far, raw score)."""
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv

    from agents.config import load_config, to_dict
    from envs.factory import make_multitask_env

    cfg = load_config(ROOT / "configs" / "atari_a2c.yaml", PROTOCOL)
    env = make_multitask_env(
        "atari", [game], cfg.env.num_envs_per_task, **to_dict(cfg)["env"]["atari"]
    )

    class OurEnv(VecEnv):
        def __init__(self) -> None:
            super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
            self.steps = 0
            self.episodes: list[tuple[int, float]] = []

        def reset(self) -> np.ndarray:
            return env.reset(seed=seed)

        def step_async(self, actions: np.ndarray) -> None:
            env.step_async(np.asarray(actions).reshape(-1))

        def step_wait(self) -> tuple:
            res = env.step_wait()
            self.steps += self.num_envs
            self.episodes += [(self.steps, float(ep.ret)) for ep in res.episodes]
            done = res.terminated | res.truncated
            infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
            for i in np.flatnonzero(done):  # SB3 bootstraps a truncated episode from this
                infos[i]["terminal_observation"] = res.final_obs[i]
                infos[i]["TimeLimit.truncated"] = bool(res.truncated[i] and not res.terminated[i])
            return res.obs, res.reward, done, infos

        def close(self) -> None:
            env.close()

        def get_attr(self, name: str, indices: Any = None) -> list[Any]:
            return [None] * self.num_envs

        def set_attr(self, name: str, value: Any, indices: Any = None) -> None:
            pass

        def env_method(
            self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any
        ) -> list[Any]:
            return [None] * self.num_envs

        def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
            return [False] * self.num_envs

    return OurEnv()


def sb3_run(env_id: str, steps: int, seed: int, out: Path, our_env: str | None = None) -> None:
    """Train SB3's zoo A2C on ``env_id`` (a NoFrameskip-v4 id), or on our env of the game
    ``our_env`` (:func:`our_env_for_sb3`), and write its episodes to ``out``."""
    import torch

    torch.set_num_threads(1)
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    episodes: list[tuple[int, float]] = []
    if our_env is not None:
        env = our_env_for_sb3(our_env, seed)
        episodes = env.episodes  # the env counts whole games itself (no Monitor in it)
    else:
        env = VecFrameStack(make_atari_env(env_id, n_envs=16, seed=seed), 4)

    class Episodes(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:  # Monitor's whole-game score (outside the life-loss end)
                    episodes.append((self.num_timesteps, float(info["episode"]["r"])))
            return True

    optimizer = {"optimizer_class": RMSpropTFLike, "optimizer_kwargs": {"eps": ZOO_RMSPROP_EPS}}
    model = A2C("CnnPolicy", env, **ZOO_A2C, seed=seed, device="cpu", policy_kwargs=optimizer)
    model.learn(steps, callback=Episodes())
    env.close()
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps({"env_id": env_id, "steps": steps, "episodes": episodes}))
    os.replace(tmp, out)  # a run cut short leaves no result that looks finished


def sb3_env_id(game: str) -> str:
    """``<Game>NoFrameskip-v4`` for any spelling our envs accept ("space_invaders", "Pong")."""
    from envs.atari import _gym_id, canonical_game

    v5 = _gym_id(canonical_game(game))
    if v5 is None:
        raise ValueError(f"{game!r} has no gymnasium id for SB3; pick another game")
    return v5.removeprefix("ALE/").removesuffix("-v5") + "NoFrameskip-v4"


def run_all(
    game: str, steps: int, seeds: list[int], out: Path, workers: int, our_env: bool = False
) -> None:
    """Every (side, seed) run not yet done, ``workers`` at a time, each its own process;
    ``our_env`` adds SB3's A2C on our env."""
    env_id = sb3_env_id(game)
    jobs: list[list[str]] = []  # each a script and its arguments
    sb3_sides: list[tuple[str, list[str]]] = [("sb3", [])]  # file prefix, worker's extra args
    if our_env:
        sb3_sides.append((OUR_ENV, ["--our-env", game]))
    for seed in seeds:
        for prefix, extra in sb3_sides:
            result = out / f"{prefix}_s{seed}.json"
            if not result.is_file():
                sb3 = ["--sb3-run", env_id, str(steps), str(seed), str(result), *extra]
                jobs.append([__file__, *sb3])
        run = out / f"ours_s{seed}"
        if not (run / "summary.json").is_file():
            jobs.append([str(ROOT / "train.py"), *ours_argv(game, steps, seed, run)])
    out.mkdir(parents=True, exist_ok=True)

    def go(job: list[str]) -> None:
        code = subprocess.run([sys.executable, *job], cwd=ROOT).returncode
        if code != 0:
            raise RuntimeError(f"{Path(job[0]).name} {job[1]} ... exited with {code}")

    with ThreadPoolExecutor(workers) as pool:
        for fut in [pool.submit(go, j) for j in jobs]:
            fut.result()


def load(out: Path) -> tuple[dict[str, dict[int, np.ndarray]], str]:
    """{"ours"|"sb3"|OUR_ENV: {seed: (n, 2) array of (steps, return)}} of the finished runs in
    ``out`` (OUR_ENV only when it has runs), and the game (ours' name for it)."""
    sides: dict[str, dict[int, np.ndarray]] = {"ours": {}, "sb3": {}, OUR_ENV: {}}
    games: set[str] = set()
    for side in ("sb3", OUR_ENV):
        for path in sorted(out.glob(f"{side}_s*.json")):
            eps = json.loads(path.read_text())["episodes"]
            if not eps:
                raise ValueError(f"{path} holds no finished episode; train for more --steps")
            seed = int(path.stem.removeprefix(f"{side}_s"))
            sides[side][seed] = np.array(eps, dtype=float).reshape(-1, 2)
    for run in sorted(out.glob("ours_s*")):
        if (run / "summary.json").is_file():
            try:
                returns = read_run(run)[0]
            except ValueError:  # a finished run without task/<game>/return: no episode ended
                returns = {}
            if not any(len(p) for p in returns.values()):
                raise ValueError(f"{run} finished no episode; train for more --steps")
            if len(returns) > 1:
                raise ValueError(f"{run} trained {len(returns)} games; a parity run has one")
            ((game, points),) = returns.items()
            sides["ours"][int(run.name[6:])] = points
            games.add(game)
    if not sides["ours"] or not sides["sb3"]:
        raise ValueError(
            f"{out} needs finished runs of both sides (ours_s<seed>/ and sb3_s<seed>.json); "
            "run with --out to train them"
        )
    if len(games) > 1:
        raise ValueError(f"{out} holds runs of several games ({', '.join(sorted(games))})")
    if not sides[OUR_ENV]:
        del sides[OUR_ENV]
    return sides, games.pop()


def report(sides: dict[str, dict[int, np.ndarray]], bin_steps: int) -> tuple[str, dict]:
    """Markdown table of binned mean returns (over seeds; their range with several), and the
    per-side (edges, per-seed means) it was made from."""
    last = min(float(p[:, 0].max()) for runs in sides.values() for p in runs.values())
    edges = np.arange(0.0, last + bin_steps, bin_steps)
    if len(edges) < 2:
        edges = np.array([0.0, last])
    per = {s: np.stack([binned(p, edges) for p in runs.values()]) for s, runs in sides.items()}

    def cell(m: np.ndarray) -> str:
        if np.isnan(m).all():
            return "-"
        mean = f"{np.nanmean(m):.1f}"
        return mean if len(m) == 1 else f"{mean} ({np.nanmin(m):.1f}-{np.nanmax(m):.1f})"

    n = {s: len(r) for s, r in sides.items()}
    third = OUR_ENV in sides
    lines = [
        f"| steps | ours ({n['ours']} seeds) | SB3 A2C ({n['sb3']} seeds) | ours / SB3 |"
        + (f" SB3 A2C on our env ({n[OUR_ENV]} seeds) |" if third else ""),
        "|---|---:|---:|---:|" + ("---:|" if third else ""),
    ]
    for b in range(len(edges) - 1):
        o, s = per["ours"][:, b], per["sb3"][:, b]
        ratio = np.nanmean(o) / np.nanmean(s) if not np.isnan(s).all() else float("nan")
        lines.append(
            f"| {edges[b]:,.0f}-{edges[b + 1]:,.0f} | {cell(o)} | {cell(s)} | {ratio:.2f} |"
            + (f" {cell(per[OUR_ENV][:, b])} |" if third else "")
        )
    return "\n".join(lines), {"edges": edges, **per}


def plot(data: dict, png: Path, game: str) -> None:
    """Each side's binned returns (mean over seeds, shaded range) against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = data["edges"]
    mid = (edges[:-1] + edges[1:]) / 2 / 1e6
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for side, label in (
        ("ours", "ours (a2c_multitask, 1 game)"),
        ("sb3", "SB3 A2C (zoo)"),
        (OUR_ENV, "SB3 A2C on our env"),
    ):
        if side not in data:
            continue
        m = data[side]
        ax.plot(mid, np.nanmean(m, 0), marker="o", ms=3, label=label)
        if len(m) > 1:
            ax.fill_between(mid, np.nanmin(m, 0), np.nanmax(m, 0), alpha=0.2)
    ax.set_xlabel("environment steps (M)")
    ax.set_ylabel("training episode return")
    ax.set_title(f"{game}: A2C, ours vs SB3")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, png)


def main(argv: list[str] | None = None) -> int:
    """CLI: run what is missing (unless ``--from-dir``), then report; exit 2 with one ``error:``
    line on bad input."""
    from bench._cli import Parser, fail, positive_int, sigint_raises

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--sb3-run"]:  # one SB3 run, in its own process (run_all)
        env_id, steps, seed, out = argv[1:5]
        our_env = argv[6] if argv[5:6] == ["--our-env"] else None
        sb3_run(env_id, int(steps), int(seed), Path(out), our_env)
        return 0
    p = Parser(
        prog="bench/sb3_parity.py",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--game", default="SpaceInvaders", help="Atari game (default SpaceInvaders)")
    p.add_argument("--steps", type=positive_int, default=1_000_000, help="env steps per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default 0)")
    p.add_argument("--workers", type=positive_int, default=1, help="runs at a time (default 1)")
    p.add_argument("--bin", type=positive_int, default=100_000, help="steps per table row")
    p.add_argument("--out", type=Path, help="directory of the runs (trains what is missing)")
    p.add_argument("--from-dir", type=Path, help="report on the runs in this directory only")
    p.add_argument("--png", type=Path, help="the figure (default: <dir>/parity.png)")
    p.add_argument(
        "--sb3-on-our-env",
        action="store_true",
        help="also train SB3's A2C on our env (tells the env's share of a gap from the agent's)",
    )
    args = p.parse_args(argv)
    if (args.out is None) == (args.from_dir is None):
        p.error("give --out DIR (train what is missing, then report) or --from-dir DIR (report)")
    if min(args.seeds) < 0:
        p.error(f"argument --seeds: must be >= 0, got {min(args.seeds)}")
    out = args.out or args.from_dir
    with sigint_raises():
        try:
            if args.out is not None:
                run_all(args.game, args.steps, args.seeds, out, args.workers, args.sb3_on_our_env)
            sides, game = load(out)
            text, data = report(sides, args.bin)
        except ValueError as e:  # bad input: ConfigError, EnvError, UnknownNameError included
            return fail(e)
        except RuntimeError as e:  # a run failed: its own output says why
            print(f"error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    png = args.png or out / "parity.png"
    plot(data, png, game)
    print(text)
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
