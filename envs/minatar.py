"""MinAtar games (Young and Tian 2019, arXiv:1903.03176) with a common observation and action space.

Every game has 6 actions; states are (10, 10, C) bool with C in 4..10 per game. We return uint8
channel-first (10, 10, 10) observations with each game's channels first and the rest zero, so one
network can play every game. Episode ends are MinAtar's own: Freeway's 2,500-frame timer ends
its episodes as ``terminated`` (not bootstrapped), though no channel shows the timer, as in
MinAtar's baselines (Pardo et al. 2018 would call it a time limit, i.e. truncation).
"""

from __future__ import annotations

import copy
import difflib
from typing import Any

import gymnasium as gym
import numpy as np

from envs.base import (
    EnvError,
    EpisodeStat,
    MultiTaskVecEnv,
    StepResult,
    check_action,
    check_actions,
    check_count,
    check_probability,
    require_all_tasks,
    slot_seeds,
    unique_tasks,
)

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
NUM_CHANNELS = 10
NUM_ACTIONS = 6
MINATAR_DEFAULTS: dict[str, Any] = {
    "sticky_action_prob": 0.1,
    "difficulty_ramping": True,
    "max_episode_steps": 10_000,
}


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def canonical_game(name: str) -> str:
    """MinAtar module name of ``name``, case-insensitive ("SpaceInvaders", "space-invaders", ...)."""
    key = _norm(str(name)).removeprefix("minatar")
    for game in GAMES:
        if _norm(game) == key:
            return game
    close = difflib.get_close_matches(str(name).lower(), GAMES, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise EnvError(f"unknown MinAtar game {name!r} (valid: {', '.join(GAMES)}){hint}")


def _check_options(sticky_action_prob: float, max_episode_steps: int) -> int:
    """Validate the options both MinAtar envs share; returns ``max_episode_steps`` as an int."""
    check_probability("sticky_action_prob", sticky_action_prob)
    return check_count("max_episode_steps", max_episode_steps)


def _make_game(game: str, sticky_action_prob: float, difficulty_ramping: bool) -> Any:
    from minatar import Environment  # lazy: keep `import envs` cheap

    return Environment(
        game, sticky_action_prob=sticky_action_prob, difficulty_ramping=difficulty_ramping
    )


def _fresh_seed() -> int:
    return int(np.random.SeedSequence().generate_state(1)[0])


def _to_obs(state: np.ndarray, out: np.ndarray) -> None:
    """Write a (10, 10, C) bool state into ``out`` (10, 10, 10) uint8 channel-first, zero-padded."""
    c = state.shape[2]
    out[:c] = state.transpose(2, 0, 1)  # np.moveaxis's axis checks cost 4x the copy here
    out[c:] = 0


class MinAtarVecEnv(MultiTaskVecEnv):
    """K MinAtar games x E envs; obs (N, 10, 10, 10) uint8 (channels zero-padded), 6 actions.

    The learning reward is the raw game reward. Episodes end on game over (terminated) or after
    ``max_episode_steps`` agent steps (truncated). Each slot owns a ``minatar.Environment`` with its
    own RandomState (seeded ``seed + 1000*k + e``), so state snapshots are plain pickles.
    """

    def __init__(
        self,
        games: list[str],
        num_envs_per_task: int = 1,
        sticky_action_prob: float = MINATAR_DEFAULTS["sticky_action_prob"],
        difficulty_ramping: bool = MINATAR_DEFAULTS["difficulty_ramping"],
        max_episode_steps: int = MINATAR_DEFAULTS["max_episode_steps"],
    ) -> None:
        if isinstance(games, str):
            games = [games]
        if not games:
            raise EnvError(f"no MinAtar games given (valid: {', '.join(GAMES)})")
        self.num_envs_per_task = check_count("num_envs_per_task", num_envs_per_task)
        self.max_episode_steps = _check_options(sticky_action_prob, max_episode_steps)
        self.task_names = unique_tasks([canonical_game(g) for g in games])
        self.single_observation_space = gym.spaces.Box(0, 1, (NUM_CHANNELS, 10, 10), np.uint8)
        self.single_action_space = gym.spaces.Discrete(NUM_ACTIONS)
        self._envs = [
            _make_game(g, sticky_action_prob, difficulty_ramping)
            for g in self.task_names
            for _ in range(self.num_envs_per_task)
        ]
        self._slot_task = self.task_ids
        n = self.num_envs
        self._obs = np.zeros((n, NUM_CHANNELS, 10, 10), np.uint8)
        self._t = np.zeros(n, np.int64)
        self._ret = np.zeros(n, np.float64)
        self._actions: np.ndarray | None = None
        self._was_reset = False

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset all slots; returns obs (N, 10, 10, 10). Slot (k, e) seeded ``seed + 1000*k + e``.

        ``seed=None`` keeps each slot's RNG going (as gymnasium's ``reset()``), so ``reset(seed=s)``
        followed by ``reset()`` is reproducible; only an env that was never reset draws fresh
        seeds from the OS. A pending :meth:`step_async` is discarded.
        """
        if seed is not None:
            seeds: list[int] | None = [
                int(s) for s in slot_seeds(seed, self.num_tasks, self.num_envs_per_task)
            ]
        elif not self._was_reset:
            seeds = [_fresh_seed() for _ in range(self.num_envs)]
        else:
            seeds = None
        for i, env in enumerate(self._envs):
            if seeds is not None:
                env.seed(seeds[i] % 2**32)  # RandomState needs [0, 2**32)
            env.last_action = 0
            env.reset()
            _to_obs(env.state(), self._obs[i])
        self._t[:] = 0
        self._ret[:] = 0.0
        self._actions = None
        self._was_reset = True
        return self._obs.copy()

    def step_async(self, actions: np.ndarray, tasks: slice | None = None) -> None:
        require_all_tasks(tasks)
        if not self._was_reset:
            raise EnvError("call reset() before step()")
        if self._actions is not None:
            raise EnvError("a step is already pending; call step_wait() first")
        self._actions = check_actions(actions, self.num_envs, NUM_ACTIONS)

    def step_wait(self, tasks: slice | None = None) -> StepResult:
        require_all_tasks(tasks)
        if self._actions is None:
            raise EnvError("step_wait() without step_async()")
        actions, self._actions = self._actions, None
        n = self.num_envs
        reward = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        for i, env in enumerate(self._envs):
            r, term = env.act(int(actions[i]))
            reward[i] = r
            terminated[i] = term
            _to_obs(env.state(), self._obs[i])
        self._t += 1
        self._ret += reward
        truncated = ~terminated & (self._t >= self.max_episode_steps)
        done = np.flatnonzero(terminated | truncated)
        final_obs = self._obs.copy()
        episodes = []
        for i in done.tolist():
            env = self._envs[i]
            episodes.append(
                EpisodeStat(int(self._slot_task[i]), float(self._ret[i]), int(self._t[i]), i)
            )
            env.last_action = 0
            env.reset()
            _to_obs(env.state(), self._obs[i])
            self._t[i] = 0
            self._ret[i] = 0.0
        return StepResult(self._obs.copy(), reward, terminated, truncated, final_obs, episodes)

    def get_state(self) -> dict[str, Any]:
        """Picklable deep copy of every slot: game objects (with their RNGs), obs and accumulators."""
        return copy.deepcopy(
            {
                "games": self.task_names,
                "envs": self._envs,
                "obs": self._obs,
                "t": self._t,
                "ret": self._ret,
                "was_reset": self._was_reset,
            }
        )

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a snapshot from :meth:`get_state` (same games and slot count)."""
        if list(state["games"]) != self.task_names or len(state["envs"]) != self.num_envs:
            raise EnvError(
                f"state is for games {state['games']} x {len(state['envs'])} slots, env has "
                f"{self.task_names} x {self.num_envs}"
            )
        state = copy.deepcopy(state)
        self._envs = state["envs"]
        self._obs = state["obs"]
        self._t = state["t"]
        self._ret = state["ret"]
        self._was_reset = bool(state["was_reset"])


class MinAtarEnv(gym.Env):
    """Single-game gymnasium env with the padded (10, 10, 10) uint8 observation and 6 actions."""

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        game: str,
        sticky_action_prob: float = MINATAR_DEFAULTS["sticky_action_prob"],
        difficulty_ramping: bool = MINATAR_DEFAULTS["difficulty_ramping"],
        max_episode_steps: int = MINATAR_DEFAULTS["max_episode_steps"],
    ) -> None:
        self.game = canonical_game(game)
        self.max_episode_steps = _check_options(sticky_action_prob, max_episode_steps)
        self.observation_space = gym.spaces.Box(0, 1, (NUM_CHANNELS, 10, 10), np.uint8)
        self.action_space = gym.spaces.Discrete(NUM_ACTIONS)
        self._env = _make_game(self.game, sticky_action_prob, difficulty_ramping)
        self._obs = np.zeros((NUM_CHANNELS, 10, 10), np.uint8)
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        # Derive the game's RandomState from gymnasium's np_random so seeding is reproducible.
        self._env.seed(int(self.np_random.integers(2**31 - 1)))
        self._env.last_action = 0
        self._env.reset()
        self._t = 0
        _to_obs(self._env.state(), self._obs)
        return self._obs.copy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward, terminated = self._env.act(check_action(action, NUM_ACTIONS))
        self._t += 1
        _to_obs(self._env.state(), self._obs)
        truncated = not terminated and self._t >= self.max_episode_steps
        return self._obs.copy(), float(reward), bool(terminated), bool(truncated), {}
