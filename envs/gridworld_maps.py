"""Gridworld maps: ASCII files (``#`` wall, ``.`` floor, ``0``-``9`` goals, ``S`` starts) parsed
into a :class:`GridMap` with its transition table and exact BFS distances to every goal (the
optimum the learning tests and benchmarks compare against). Used by :mod:`envs.gridworld`."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from envs.base import EnvError

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
        if not line:
            raise EnvError(
                f"map {name!r}: blank line {r + 1} inside the map (blank lines may only come "
                "before or after it)"
            )
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
                f"map {name!r}: goal {task!r} unreachable from the start cell at line {r + 1} "
                f"col {c + 1} (every floor cell is a start cell unless the map marks some with "
                "'S'); connect it, wall it off with '#', or mark the start cells with 'S'"
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


def map_path(name_or_path: str | Path) -> Path:
    """The file :func:`load_map` reads: the shipped map of that name, else the path itself; an
    :class:`EnvError` if neither is a file."""
    try:
        shipped = MAPS_DIR / f"{name_or_path}.txt"
        path = shipped if shipped.is_file() else Path(name_or_path)
        found = path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL character
        found = False
    if not found:
        raise EnvError(
            f"unknown map {str(name_or_path)!r}: not a file and not a shipped map "
            f"(shipped: {', '.join(available_maps())})"
        )
    return path


def load_map(name_or_path: str | Path | GridMap) -> GridMap:
    """Load a shipped map by name (e.g. ``"four_rooms"``) or an ASCII map file by path."""
    if isinstance(name_or_path, GridMap):
        return name_or_path
    path = map_path(name_or_path)
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
