"""Multi-game Atari (ale-py) with explicit, DQN-style preprocessing and one shared action space.

Preprocessing follows Mnih et al. 2015 and Machado et al. 2018 ("Revisiting the ALE"): frameskip 4
with a max-pool over the last two frames, 84x84 grayscale, a 4-frame stack, up to 30 no-op starts,
sticky actions 0.25, learning rewards clipped to their sign while episode statistics keep raw game
scores. Multi-game agents need one action space, so ALE's full 18-action set is the default. No
FIRE is pressed at reset (Mnih 2015 and Machado 2018 avoid game-specific knowledge; SB3's
AtariWrapper does press it). The no-op count is redrawn at every reset, from 0..noop_max-1 by the
native backend (ale-py's draw) and from 1..noop_max by the gymnasium one (as DQN's protocol).

Two backends (:mod:`envs.atari_backends`) give the same :class:`StepResult` semantics:

- ``native``: one ``ale_py.vector_env.AtariVectorEnv`` per game (C++ threads; ``step_async`` sends
  to every game before ``step_wait`` receives, so games run in parallel).
- ``gymnasium``: ``ALE/<Game>-v5`` (frameskip=1) + ``AtariPreprocessing`` +
  ``FrameStackObservation`` per slot in a same-step-autoreset ``SyncVectorEnv``.

Life loss: ale-py's native ``episodic_life`` restarts the *whole game* on each life loss, which
would make whole-game scores impossible. We therefore always run full games and derive life-loss
termination from the ``lives`` counter ourselves (DeepMind's EpisodicLife semantics: the learning
signal terminates, the game continues, statistics count whole games).
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from typing import Any

import gymnasium as gym
import numpy as np

from envs.atari_backends import _action_set_error, _GymnasiumBackend, _NativeBackend
from envs.atari_scores import REFERENCE_SCORES
from envs.base import (
    EnvError,
    EpisodeStat,
    MultiTaskVecEnv,
    StepResult,
    check_actions,
    check_count,
    check_probability,
    slot_seeds,
    unique_tasks,
)

ATARI_DEFAULTS: dict[str, Any] = {
    "backend": "auto",
    "frameskip": 4,
    "repeat_action_probability": 0.25,
    "noop_max": 30,
    "frame_stack": 4,
    "screen_size": 84,
    "clip_rewards": True,
    "terminal_on_life_loss": False,
    "full_action_space": True,
    # ALE's max_num_frames_per_episode = 108000 frames = 27000 agent steps at frameskip 4.
    "max_episode_steps": 27_000,
}
BACKENDS = ("auto", "native", "gymnasium")
#: Every slot seed must lie in [0, SEED_BOUND): ALE takes a C int and reads a negative seed as
#: "unseeded" (a negative ``reset(seed=...)`` silently gave a different game on every call).
SEED_BOUND = 2**31


def atari_config(kwargs: dict[str, Any]) -> dict[str, Any]:
    """:data:`ATARI_DEFAULTS` updated by ``kwargs``, validated: an unknown option or a bad value
    raises :class:`EnvError` naming it (counts become ints)."""
    unknown = sorted(set(kwargs) - set(ATARI_DEFAULTS))
    if unknown:
        raise EnvError(f"unknown Atari option(s) {unknown} (valid: {sorted(ATARI_DEFAULTS)})")
    cfg = {**ATARI_DEFAULTS, **kwargs}
    if cfg["backend"] not in BACKENDS:
        raise EnvError(f"unknown Atari backend {cfg['backend']!r} (valid: {list(BACKENDS)})")
    for key in ("frameskip", "frame_stack", "screen_size", "max_episode_steps"):
        cfg[key] = check_count(key, cfg[key])
    cfg["noop_max"] = check_count("noop_max", cfg["noop_max"], minimum=0)
    check_probability("repeat_action_probability", cfg["repeat_action_probability"])
    return cfg


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@lru_cache(maxsize=1)
def rom_ids() -> tuple[str, ...]:
    """All ROM ids bundled with ale-py (snake_case, e.g. ``space_invaders``)."""
    from ale_py import roms

    return tuple(sorted(roms.get_all_rom_ids()))


def canonical_game(name: str) -> str:
    """ROM id of ``name`` ("Pong", "SpaceInvaders", "space_invaders", "ALE/Pong-v5" all work)."""
    stripped = re.sub(r"-v\d+$", "", str(name).removeprefix("ALE/"))
    by_norm = {_norm(r): r for r in rom_ids()}
    if _norm(stripped) in by_norm:
        return by_norm[_norm(stripped)]
    # gym's v4 ids name a frame skip as well as the game (PongNoFrameskip-v4)
    base = re.sub(r"(NoFrameskip|Deterministic)$", "", stripped)
    if base != stripped and _norm(base) in by_norm:
        raise EnvError(
            f"unknown Atari game {name!r}: did you mean {by_norm[_norm(base)]}? (the frame skip "
            "is env.atari.frameskip, not part of the game's name)"
        )
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", stripped).lower()
    close = difflib.get_close_matches(snake, rom_ids(), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see ale_py.roms.get_all_rom_ids()"
    raise EnvError(f"unknown Atari game {name!r}: {hint}")


def _gym_id(rom: str) -> str | None:
    """``ALE/<Game>-v5`` id registered for ``rom`` (None for ROMs without one)."""
    import ale_py

    gym.register_envs(ale_py)
    for env_id in gym.registry:
        m = re.fullmatch(r"ALE/(\w+)-v5", env_id)
        if m and _norm(m.group(1)) == _norm(rom):
            return env_id
    return None


def make_atari_env(game: str, **kwargs: Any) -> gym.Env:
    """Single-game gymnasium env: v5 base (frameskip=1) + AtariPreprocessing + frame stack.

    Observation (frame_stack, screen, screen) uint8; rewards are raw (unclipped); life loss does
    not terminate; truncation after ``max_episode_steps`` agent steps (not counting no-op starts).
    Keyword arguments as in :data:`ATARI_DEFAULTS`, checked as by :class:`AtariVecEnv` (an unknown
    one is an :class:`EnvError`); ``backend``/``clip_rewards``/``terminal_on_life_loss`` are the
    vector env's business and ignored here.
    """
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, TimeLimit

    cfg = atari_config(kwargs)
    rom = canonical_game(game)
    base_kwargs: dict[str, Any] = {
        "frameskip": 1,
        "repeat_action_probability": float(cfg["repeat_action_probability"]),
        "full_action_space": bool(cfg["full_action_space"]),
        # The step limit is enforced by TimeLimit below (in agent steps, after the no-op start, as
        # the native backend counts); the emulator limit only has to leave room for the no-ops.
        "max_num_frames_per_episode": (int(cfg["max_episode_steps"]) + 1) * int(cfg["frameskip"])
        + int(cfg["noop_max"]),
    }
    env_id = _gym_id(rom)
    if env_id is not None:
        env = gym.make(env_id, **base_kwargs)
    else:  # multiplayer ROMs without a registered v5 id
        from ale_py.env import AtariEnv

        env = AtariEnv(game=rom, **base_kwargs)
    env = AtariPreprocessing(
        env,
        noop_max=int(cfg["noop_max"]),
        frame_skip=int(cfg["frameskip"]),
        screen_size=int(cfg["screen_size"]),
        terminal_on_life_loss=False,
        grayscale_obs=True,
        scale_obs=False,
    )
    # Zero padding at reset matches the native backend's frame stack.
    env = FrameStackObservation(env, int(cfg["frame_stack"]), padding_type="zero")
    return TimeLimit(env, int(cfg["max_episode_steps"]))


class AtariVecEnv(MultiTaskVecEnv):
    """K Atari games x E envs; obs (N, frame_stack, screen, screen) uint8, Discrete(18) by default.

    ``reward`` is sign-clipped when ``clip_rewards``; :class:`EpisodeStat` holds raw whole-game
    scores and lengths in agent steps. With ``terminal_on_life_loss`` a lost life sets
    ``terminated`` for learning (the game goes on; ``final_obs == obs`` there) but no episode stat.
    """

    def __init__(self, games: list[str], num_envs_per_task: int = 1, **kwargs: Any) -> None:
        cfg = atari_config(kwargs)
        if isinstance(games, str):
            games = [games]
        if not games:
            raise EnvError("no Atari games given")
        self.num_envs_per_task = check_count("num_envs_per_task", num_envs_per_task)
        self.task_names = unique_tasks([canonical_game(g) for g in games])
        self.config = cfg
        self.backend = "native" if cfg["backend"] == "auto" else cfg["backend"]
        backend_cls = _NativeBackend if self.backend == "native" else _GymnasiumBackend
        self._backend: _NativeBackend | _GymnasiumBackend | None = backend_cls(
            self.task_names, self.num_envs_per_task, cfg
        )
        sets = self._backend.action_sets()
        if any(s != sets[0] for s in sets):
            self.close()
            _action_set_error(self.task_names, sets)
        self.supports_task_groups = self.backend == "native"
        size = int(cfg["screen_size"])
        self.single_observation_space = gym.spaces.Box(
            0, 255, (int(cfg["frame_stack"]), size, size), np.uint8
        )
        self.single_action_space = gym.spaces.Discrete(len(sets[0]))
        n = self.num_envs
        self._slot_task = self.task_ids
        self._t = np.zeros(n, np.int64)
        self._ret = np.zeros(n, np.float64)
        self._lives = np.zeros(n, np.int64)
        self._was_reset = False
        self._pending: set[tuple[int, int]] = set()

    def reference_scores(self, task: int) -> tuple[float, float] | None:
        """The game's (random, human) scores from :mod:`envs.atari_scores` (None if unlisted)."""
        return REFERENCE_SCORES.get(self.task_names[task])

    def _open_backend(self) -> _NativeBackend | _GymnasiumBackend:
        if self._backend is None:
            raise EnvError("this Atari env is closed; make a new one")
        return self._backend

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every slot; returns obs (N, stack, H, W). Slot (k, e) seeded ``seed + 1000*k + e``.

        Every slot seed must lie in [0, 2**31) (ALE's range). ``seed=None`` continues the
        emulators' RNGs. A step started by :meth:`step_async` and not yet waited for is dropped.
        """
        backend = self._open_backend()
        seeds = None
        if seed is not None:
            seeds = slot_seeds(seed, self.num_tasks, self.num_envs_per_task)
            if seeds.min() < 0 or seeds.max() >= SEED_BOUND:
                top = SEED_BOUND - int(seeds.max()) + int(seeds[0])
                raise EnvError(
                    f"Atari seed must be in [0, {top}) so that every slot seed "
                    f"seed + 1000*task + env fits ALE's [0, 2**31); got {seed}"
                )
        for start, stop in sorted(self._pending):  # else their results would answer later steps
            full = stop - start == self.num_tasks
            backend.discard(None if full else range(start, stop))
        self._pending.clear()
        obs, self._lives = backend.reset(seeds)
        self._t[:] = 0
        self._ret[:] = 0.0
        self._was_reset = True
        return obs

    def _task_range(self, tasks: slice | None) -> range:
        if tasks is None:
            return range(self.num_tasks)
        if not isinstance(tasks, slice):
            raise EnvError(f"tasks must be a slice of task indices or None, got {tasks!r}")
        games = range(self.num_tasks)[tasks]
        if games.step != 1 or not games:
            raise EnvError(f"tasks must be a non-empty contiguous slice, got {tasks}")
        if len(games) != self.num_tasks and not self.supports_task_groups:
            raise EnvError(f"the {self.backend} backend steps all games together")
        return games

    def step_async(self, actions: np.ndarray, tasks: slice | None = None) -> None:
        backend = self._open_backend()
        if not self._was_reset:
            raise EnvError("call reset() before step()")
        games = self._task_range(tasks)
        n = len(games) * self.num_envs_per_task
        a = check_actions(actions, n, int(self.single_action_space.n))
        key = (games.start, games.stop)
        if any(g[0] < key[1] and key[0] < g[1] for g in self._pending):
            raise EnvError(f"tasks {tasks} are already being stepped; call step_wait first")
        full = len(games) == self.num_tasks
        backend.send(a, None if full else games)
        self._pending.add(key)

    def step_wait(self, tasks: slice | None = None) -> StepResult:
        backend = self._open_backend()
        games = self._task_range(tasks)
        key = (games.start, games.stop)
        if key not in self._pending:
            raise EnvError("step_wait() without a matching step_async()")
        self._pending.discard(key)
        full = len(games) == self.num_tasks
        obs, raw, game_term, game_trunc, lives, final_obs = backend.recv(None if full else games)
        e = self.num_envs_per_task
        sl = slice(games.start * e, games.stop * e)
        t, ret, slot_task = self._t[sl], self._ret[sl], self._slot_task[sl]  # views
        game_trunc = game_trunc & ~game_term
        game_over = game_term | game_trunc
        t += 1
        ret += raw
        episodes = [
            EpisodeStat(int(slot_task[i]), float(ret[i]), int(t[i]), int(i + sl.start))
            for i in np.flatnonzero(game_over)
        ]
        t[game_over] = 0
        ret[game_over] = 0.0
        terminated = game_term.copy()
        if self.config["terminal_on_life_loss"]:
            terminated |= ~game_over & (lives < self._lives[sl])
        self._lives[sl] = lives
        reward = (np.sign(raw) if self.config["clip_rewards"] else raw).astype(np.float32)
        return StepResult(obs, reward, terminated, game_trunc, final_obs, episodes)

    def close(self) -> None:
        backend = getattr(self, "_backend", None)
        if backend is not None:
            backend.close()
        self._backend = None


def measure_sps(
    games: list[str], num_envs_per_task: int = 4, steps: int = 500, **kwargs: Any
) -> float:
    """Env-only steps/s (agent steps summed over all N slots) under uniformly random actions."""
    import time

    with AtariVecEnv(games, num_envs_per_task, **kwargs) as env:
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        actions = rng.integers(0, env.single_action_space.n, (steps, env.num_envs))
        env.step(actions[0])  # warm-up
        start = time.perf_counter()
        for a in actions[1:]:
            env.step(a)
        return (steps - 1) * env.num_envs / (time.perf_counter() - start)


if __name__ == "__main__":  # python -m envs.atari [steps]: throughput of both backends
    import sys

    n_steps = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    for name in ("native", "gymnasium"):
        games = ["pong", "breakout", "space_invaders", "seaquest"]
        sps = measure_sps(games, 4, n_steps, backend=name)
        print(f"{name:9s} 4 games x 4 envs, {n_steps} steps: {sps:7.0f} env steps/s")
