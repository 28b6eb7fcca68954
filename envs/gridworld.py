"""Vectorised (numpy) gridworld family for exact transfer tests, after Distral's grid worlds.

Teh et al. 2017 ("Distral", arXiv:1707.04175) use grid worlds whose tasks share a map and differ only
in the goal. Here a task is a goal cell on a shared ASCII map; the agent sees only its own position
(one-hot over the H*W cells), never the task, so a task-agnostic policy cannot solve all tasks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
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

MAPS_DIR = Path(__file__).parent / "maps"
# Row/column offsets of the 4 actions: up, down, left, right.
ACTIONS = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)
ACTION_NAMES = ("up", "down", "left", "right")


def available_maps() -> list[str]:
    """Names of the maps shipped in ``envs/maps``."""
    return sorted(p.stem for p in MAPS_DIR.glob("*.txt"))


@dataclass(frozen=True)
class GridMap:
    """A parsed map: walls (H, W) bool, goal cell index per task name, optional start cells.

    Cells are indexed row-major, ``cell = row * W + col``. ``next_cell`` (H*W, 4) is the transition
    table (bumping a wall or the border stays put).
    """

    name: str
    walls: np.ndarray
    goals: dict[str, int]
    starts: tuple[int, ...]
    next_cell: np.ndarray

    @property
    def height(self) -> int:
        return int(self.walls.shape[0])

    @property
    def width(self) -> int:
        return int(self.walls.shape[1])

    @property
    def num_cells(self) -> int:
        return self.height * self.width

    @property
    def task_names(self) -> list[str]:
        return sorted(self.goals)

    def cell(self, row: int, col: int) -> int:
        """Row-major cell index of (row, col)."""
        return row * self.width + col

    def floor_cells(self) -> np.ndarray:
        """(F,) indices of all non-wall cells."""
        return np.flatnonzero(~self.walls.reshape(-1))

    def start_cells(self, task: str) -> np.ndarray:
        """(S,) possible start cells of ``task``: the ``S`` cells, else every floor cell but its goal."""
        if self.starts:
            return np.array(self.starts, dtype=np.int64)
        floor = self.floor_cells()
        return floor[floor != self.goals[task]]

    def distances(self, task: str) -> np.ndarray:
        """(H*W,) BFS steps from each cell to ``task``'s goal; -1 for walls and unreachable cells.

        Moves are reversible (up/down, left/right), so a BFS outward from the goal gives the
        distance to it.
        """
        return _bfs(self.next_cell, self.walls.reshape(-1), self.goals[task])

    def optimal_actions(self, task: str) -> np.ndarray:
        """(H*W,) int64 an action that decreases the distance to the goal (0 at the goal/walls)."""
        dist = self.distances(task).astype(np.float64)
        dist[dist < 0] = np.inf
        return np.argmin(dist[self.next_cell], axis=1).astype(np.int64)


def _bfs(next_cell: np.ndarray, walls: np.ndarray, source: int) -> np.ndarray:
    dist = np.full(walls.shape[0], -1, dtype=np.int64)
    dist[source] = 0
    queue = deque([source])
    while queue:
        c = queue.popleft()
        for n in next_cell[c]:
            if dist[n] < 0:
                dist[n] = dist[c] + 1
                queue.append(int(n))
    return dist


def parse_map(text: str, name: str = "<string>") -> GridMap:
    """Parse an ASCII map (``#`` wall, ``.`` floor, ``0``-``9`` goal of that task, ``S`` start).

    Any line endings (LF, CRLF, CR) and a leading UTF-8 byte-order mark are accepted; blank lines
    at the start and end are ignored.
    """
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.strip("\n").split("\n")
    if not lines or not lines[0]:
        raise EnvError(f"map {name!r}: empty")
    width = len(lines[0])
    for r, line in enumerate(lines):
        if len(line) != width:
            raise EnvError(
                f"map {name!r}: ragged lines (line {r + 1} has {len(line)} chars, line 1 has {width})"
            )
        for c, ch in enumerate(line):
            if ch not in "#.S0123456789":
                raise EnvError(
                    f"map {name!r}: unknown character {ch!r} at line {r + 1} col {c + 1} "
                    "(valid: '#', '.', 'S', '0'-'9')"
                )
    grid = np.array([list(line) for line in lines])
    walls = grid == "#"
    goals: dict[str, int] = {}
    for r, c in zip(*np.nonzero(np.char.isdigit(grid)), strict=True):
        digit = str(grid[r, c])
        if digit in goals:
            raise EnvError(f"map {name!r}: goal {digit!r} appears more than once")
        goals[digit] = int(r * width + c)
    if not goals:
        raise EnvError(f"map {name!r}: no goals (mark goal cells with digits '0'-'9')")
    starts = tuple(int(i) for i in np.flatnonzero(grid.reshape(-1) == "S"))
    next_cell = _transitions(walls)
    gmap = GridMap(name, walls, dict(sorted(goals.items())), starts, next_cell)
    for task in gmap.task_names:
        if not len(gmap.start_cells(task)):
            raise EnvError(f"map {name!r}: no start cell for goal {task!r} (no other floor cell)")
        dist = gmap.distances(task)
        bad = [int(s) for s in gmap.start_cells(task) if dist[s] < 0]
        if bad:
            r, c = divmod(bad[0], width)
            raise EnvError(
                f"map {name!r}: goal {task!r} unreachable from start cell (row {r}, col {c})"
            )
    return gmap


def _transitions(walls: np.ndarray) -> np.ndarray:
    """(H*W, 4) next cell for each cell and action; moves into walls or off the grid stay."""
    h, w = walls.shape
    rows, cols = np.divmod(np.arange(h * w), w)
    nr = rows[:, None] + ACTIONS[None, :, 0]
    nc = cols[:, None] + ACTIONS[None, :, 1]
    inside = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
    nr_c, nc_c = np.clip(nr, 0, h - 1), np.clip(nc, 0, w - 1)
    ok = inside & ~walls[nr_c, nc_c]
    return np.where(ok, nr_c * w + nc_c, np.arange(h * w)[:, None]).astype(np.int64)


def load_map(name_or_path: str | Path | GridMap) -> GridMap:
    """Load a shipped map by name (e.g. ``"four_rooms"``) or an ASCII map file by path."""
    if isinstance(name_or_path, GridMap):
        return name_or_path
    shipped = MAPS_DIR / f"{name_or_path}.txt"
    path = shipped if shipped.is_file() else Path(name_or_path)
    if not path.is_file():
        raise EnvError(
            f"unknown map {str(name_or_path)!r}: not a file and not a shipped map "
            f"(shipped: {', '.join(available_maps())})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:  # e.g. a map saved as UTF-16 (PowerShell's `>` does)
        raise EnvError(
            f"map file {str(path)!r} is not UTF-8 text (byte {e.start} cannot be decoded); save "
            "it as plain ASCII"
        ) from None
    except OSError as e:
        raise EnvError(f"map file {str(path)!r} cannot be read: {e.strerror or e}") from None
    return parse_map(text, name=path.stem)


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
        self._seed = np.zeros(n, np.uint64)
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
            self._seed = slot_seeds(int(seed), self.num_tasks, self.num_envs_per_task).astype(
                np.uint64
            )
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
        """Exact expected optimal episode length: mean BFS distance over ``task``'s start cells."""
        return float(self.map.distances(str(task))[self.map.start_cells(str(task))].mean())

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
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a snapshot from :meth:`get_state` (same map, tasks and slot count)."""
        if state["pos"].shape != (self.num_envs,):
            raise EnvError(f"state is for {state['pos'].shape[0]} slots, env has {self.num_envs}")
        self._pos = state["pos"].copy()
        self._t = state["t"].copy()
        self._ret = state["ret"].copy()
        self._seed = state["seed"].copy()
        self._episode = state["episode"].copy()
        self._was_reset = bool(state["was_reset"])


class GridworldEnv(gym.Env):
    """Single-task gymnasium env of one goal on a map (same dynamics as :class:`GridworldVecEnv`).

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
