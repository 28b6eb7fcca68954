"""Vectorised (numpy) gridworld family for exact transfer tests, after Distral's grid worlds.

Teh et al. 2017 ("Distral", arXiv:1707.04175) use grid worlds whose tasks share a map and differ only
in the goal. Here a task is a goal cell on a shared ASCII map; the agent sees only its own position
(one-hot over the H*W cells), never the task, so a task-agnostic policy cannot solve all tasks.
"""

from __future__ import annotations

from pathlib import Path
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
    require_all_tasks,
    slot_seeds,
    unique_tasks,
)
from envs.gridworld_maps import (  # noqa: F401  (re-exported: the maps are part of this API)
    ACTION_NAMES,
    ACTIONS,
    MAPS_DIR,
    GridMap,
    available_maps,
    load_map,
    parse_map,
)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays: a counter-based hash giving per-slot random numbers."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _step_limit(gmap: GridMap, max_episode_steps: int | None) -> int:
    """The truncation limit: ``4*(H+W)`` for None; 0 is refused like any bad limit, not "unset"."""
    if max_episode_steps is None:
        return 4 * (gmap.height + gmap.width)
    return check_count("max_episode_steps", max_episode_steps)


class GridworldVecEnv(MultiTaskVecEnv):
    """K goal tasks x E slots on one map, stepped with numpy over all N slots at once.

    Observation (N, H*W) float32: one-hot of the agent's cell (no task identity). Actions 4 (up,
    down, left, right). Reward 1.0 on reaching the goal (terminates); truncation after
    ``max_episode_steps`` (default 4*(H+W)). Start cells come from a counter-based hash of the
    slot's seed and episode count, so each slot's start sequence depends only on its own seed.
    """

    def __init__(
        self,
        map: str | Path | GridMap = "four_rooms",
        tasks: list[str] | str | None = None,
        num_envs_per_task: int = 1,
        max_episode_steps: int | None = None,
    ) -> None:
        self.map = load_map(map)
        valid = self.map.task_names
        if isinstance(tasks, str | int):  # one goal ("12" is not the goals 1 and 2)
            tasks = [tasks]
        tasks = list(valid) if tasks is None else [str(t) for t in tasks]
        if not tasks:
            raise EnvError(f"no gridworld tasks given on map {self.map.name!r} (valid: {valid})")
        unknown = [t for t in tasks if t not in self.map.goals]
        if unknown:
            raise EnvError(
                f"unknown gridworld task(s) {unknown} on map {self.map.name!r} (valid: {valid})"
            )
        self.task_names = unique_tasks(tasks)
        self.num_envs_per_task = check_count("num_envs_per_task", num_envs_per_task)
        self.max_episode_steps = _step_limit(self.map, max_episode_steps)
        self.single_observation_space = gym.spaces.Box(0.0, 1.0, (self.map.num_cells,), np.float32)
        self.single_action_space = gym.spaces.Discrete(4)

        starts = [self.map.start_cells(t) for t in tasks]
        self._start_count = np.array([len(s) for s in starts], dtype=np.uint64)
        self._start_table = np.zeros((len(tasks), max(len(s) for s in starts)), dtype=np.int64)
        for k, s in enumerate(starts):
            self._start_table[k, : len(s)] = s
        self._slot_task = self.task_ids
        self._slot_goal = np.array([self.map.goals[t] for t in tasks], np.int64)[self._slot_task]
        n = self.num_envs
        self._pos = np.zeros(n, np.int64)
        self._t = np.zeros(n, np.int64)
        self._ret = np.zeros(n, np.float64)
        self._seed: np.ndarray = np.zeros(n, np.uint64)
        self._episode = np.zeros(n, np.uint64)
        self._actions: np.ndarray | None = None
        self._optimal: np.ndarray | None = None  # (K, H*W) BFS actions, built on first use
        self._was_reset = False

    # --- helpers -----------------------------------------------------------------------------
    def _obs(self, pos: np.ndarray) -> np.ndarray:
        obs = np.zeros((pos.shape[0], self.map.num_cells), np.float32)
        obs[np.arange(pos.shape[0]), pos] = 1.0
        return obs

    def _draw_starts(self, idx: np.ndarray) -> None:
        """Place slots ``idx`` on a start cell and advance their episode counters."""
        key = self._seed[idx] * np.uint64(0x100000001B3) + self._episode[idx]
        with np.errstate(over="ignore"):
            u = _mix64(key.astype(np.uint64))
        task = self._slot_task[idx]
        col = (u % self._start_count[task]).astype(np.int64)
        self._pos[idx] = self._start_table[task, col]
        self._episode[idx] += np.uint64(1)
        self._t[idx] = 0
        self._ret[idx] = 0.0

    # --- MultiTaskVecEnv ---------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset all slots; returns obs (N, H*W). Slot (k, e) is seeded ``seed + 1000*k + e``.

        ``seed=None`` continues each slot's start sequence (as gymnasium's ``reset()`` keeps the
        RNG), so ``reset(seed=s)`` followed by ``reset()`` is reproducible; only an env that was
        never reset draws fresh seeds from the OS. A pending :meth:`step_async` is discarded.
        """
        n = self.num_envs
        if seed is not None:
            self._seed = slot_seeds(seed, self.num_tasks, self.num_envs_per_task).astype(np.uint64)
            self._episode = np.zeros(n, np.uint64)
        elif not self._was_reset:
            self._seed = np.random.SeedSequence().generate_state(n, dtype=np.uint64)
            self._episode = np.zeros(n, np.uint64)
        self._draw_starts(np.arange(n))
        self._actions = None
        self._was_reset = True
        return self._obs(self._pos)

    def step_async(self, actions: np.ndarray, tasks: slice | None = None) -> None:
        require_all_tasks(tasks)
        if not self._was_reset:
            raise EnvError("call reset() before step()")
        if self._actions is not None:
            raise EnvError("a step is already pending; call step_wait() first")
        self._actions = check_actions(actions, self.num_envs, 4)

    def step_wait(self, tasks: slice | None = None) -> StepResult:
        require_all_tasks(tasks)
        if self._actions is None:
            raise EnvError("step_wait() without step_async()")
        a, self._actions = self._actions, None
        self._pos = self.map.next_cell[self._pos, a]
        self._t += 1
        terminated = self._pos == self._slot_goal
        truncated = ~terminated & (self._t >= self.max_episode_steps)
        reward = terminated.astype(np.float32)
        self._ret += reward
        final_obs = self._obs(self._pos)
        done = np.flatnonzero(terminated | truncated)
        episodes = [
            EpisodeStat(int(self._slot_task[i]), float(self._ret[i]), int(self._t[i]), int(i))
            for i in done
        ]
        obs = final_obs.copy()
        if done.size:
            self._draw_starts(done)
            obs[done] = self._obs(self._pos[done])
        return StepResult(obs, reward, terminated, truncated, final_obs, episodes)

    # --- exact references --------------------------------------------------------------------
    def shortest_path_length(self, task: str, start_cell: int | tuple[int, int]) -> int:
        """BFS steps from ``start_cell`` (index or (row, col)) to ``task``'s goal; -1 if none."""
        cell = self.map.cell(*start_cell) if isinstance(start_cell, tuple) else int(start_cell)
        return int(self.map.distances(str(task))[cell])

    def mean_optimal_length(self, task: str) -> float:
        """Exact expected optimal episode length: the mean over ``task``'s start cells of the BFS
        distance, capped at ``max_episode_steps`` (where a start is farther, every episode ends
        at the limit)."""
        dist = self.map.distances(str(task))[self.map.start_cells(str(task))]
        return float(np.minimum(dist, self.max_episode_steps).mean())

    def optimal_actions(self) -> np.ndarray:
        """(N,) int64 the BFS-optimal action of every slot from its current cell."""
        if self._optimal is None:
            self._optimal = np.stack([self.map.optimal_actions(t) for t in self.task_names])
        return self._optimal[self._slot_task, self._pos]

    @property
    def positions(self) -> np.ndarray:
        """(N,) int64 current cell of every slot."""
        return self._pos.copy()

    # --- checkpointing -----------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Picklable snapshot of every slot (position, step count, return, RNG seed and counter)."""
        return {
            "pos": self._pos.copy(),
            "t": self._t.copy(),
            "ret": self._ret.copy(),
            "seed": self._seed.copy(),
            "episode": self._episode.copy(),
            "was_reset": self._was_reset,
            "layout": self._layout(),
        }

    def _layout(self) -> dict[str, np.ndarray]:
        """What the snapshot's positions mean: walls, the tasks' goal and start cells."""
        goals = np.array([self.map.goals[t] for t in self.task_names], np.int64)
        return {"walls": self.map.walls.copy(), "goals": goals, "starts": self._start_table.copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a snapshot from :meth:`get_state` (same map, tasks and slot count).

        A map file edited since the snapshot (a wall, goal or start cell moved, same size) would
        otherwise go on silently under the old positions: refused (snapshots before the layout
        was recorded are taken as they are)."""
        if state["pos"].shape != (self.num_envs,):
            raise EnvError(f"state is for {state['pos'].shape[0]} slots, env has {self.num_envs}")
        saved = state.get("layout")
        if saved is not None and not all(
            np.array_equal(v, saved.get(k)) for k, v in self._layout().items()
        ):
            raise EnvError(
                f"gridworld map {self.map.name!r} changed since this snapshot (walls, goals or "
                "start cells); restore the map file or start a new run"
            )
        self._pos = state["pos"].copy()
        self._t = state["t"].copy()
        self._ret = state["ret"].copy()
        self._seed = state["seed"].copy()
        self._episode = state["episode"].copy()
        self._was_reset = bool(state["was_reset"])


class GridworldEnv(gym.Env):
    """Single-task gymnasium env of one goal on a map (same dynamics as :class:`GridworldVecEnv`).
    Its start cells are drawn from gymnasium's ``np_random`` (seeded by ``reset(seed=...)``), not
    the vector env's per-slot hash, so the same seed gives other episodes than a vector env slot.

    Observation (H*W,) float32 one-hot of the agent's cell; actions up/down/left/right.
    """

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        map: str | Path | GridMap = "four_rooms",
        task: str = "0",
        max_episode_steps: int | None = None,
    ) -> None:
        self.map = load_map(map)
        if str(task) not in self.map.goals:
            raise EnvError(
                f"unknown gridworld task {task!r} on map {self.map.name!r} "
                f"(valid: {self.map.task_names})"
            )
        self.task = str(task)
        self.max_episode_steps = _step_limit(self.map, max_episode_steps)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.map.num_cells,), np.float32)
        self.action_space = gym.spaces.Discrete(4)
        self._starts = self.map.start_cells(self.task)
        self._goal = self.map.goals[self.task]
        self._pos = int(self._starts[0])
        self._t = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.map.num_cells, np.float32)
        obs[self._pos] = 1.0
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._pos = int(self._starts[self.np_random.integers(len(self._starts))])
        self._t = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._pos = int(self.map.next_cell[self._pos, check_action(action, 4)])
        self._t += 1
        terminated = self._pos == self._goal
        truncated = not terminated and self._t >= self.max_episode_steps
        return self._obs(), float(terminated), bool(terminated), bool(truncated), {}
