"""The batched multi-task environment interface shared by every suite.

A multi-task vector env steps K tasks x E envs per task as one batch of N = K*E slots. Slot ``i``
belongs to task ``task_ids[i]``; slots are laid out task-major (task 0's E slots first). All tasks of
a suite share one observation space and one discrete action space, so one network can act in all.

Gymnasium 1.x same-step autoreset: when a slot's episode ends, the returned observation is already
the first observation of the next episode and the last observation of the finished one is in
``StepResult.final_obs``. Termination and truncation are kept separate so learners can bootstrap on
truncation and not on termination.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np


class EnvError(ValueError):
    """A user's mistake in an environment setting (unknown game, bad map, bad value)."""


@dataclass
class EpisodeStat:
    """One finished episode: raw (unclipped) return and length in agent steps, and its slot."""

    task: int
    ret: float
    length: int
    slot: int = -1


@dataclass
class StepResult:
    """What :meth:`MultiTaskVecEnv.step` returns; arrays have leading dimension N = K*E.

    - ``obs`` (N, *obs_shape): observation after the step (reset obs where an episode ended).
    - ``reward`` (N,) float32: the learning reward (clipped if the suite clips rewards).
    - ``terminated`` / ``truncated`` (N,) bool.
    - ``final_obs`` (N, *obs_shape): equal to ``obs`` except where ``terminated | truncated``,
      where it holds the last observation of the finished episode (needed to bootstrap truncation).
    - ``episodes``: raw statistics of every episode that finished this step.
    """

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray
    episodes: list[EpisodeStat] = field(default_factory=list)


class MultiTaskVecEnv:
    """Base class: K tasks x E envs per task as one batch. Subclasses implement the abstract parts.

    Attributes set by subclasses: ``task_names`` (K,), ``num_envs_per_task`` (E),
    ``single_observation_space`` (uint8/float Box), ``single_action_space`` (Discrete).
    """

    task_names: list[str]
    num_envs_per_task: int
    single_observation_space: gym.spaces.Box
    single_action_space: gym.spaces.Discrete
    #: True when ``step_async``/``step_wait`` accept ``tasks=slice(a, b)`` to step a contiguous
    #: group of tasks on its own, so a learner can overlap one group's emulation with another
    #: group's forward pass.
    supports_task_groups: bool = False

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def num_envs(self) -> int:
        return self.num_tasks * self.num_envs_per_task

    @property
    def task_ids(self) -> np.ndarray:
        """(N,) int64 task index of each slot, task-major."""
        return np.repeat(np.arange(self.num_tasks, dtype=np.int64), self.num_envs_per_task)

    def reference_scores(self, task: int) -> tuple[float, float] | None:
        """Published (random, human) scores of task ``task`` (Atari), else None."""
        return None

    def human_normalised(self, task: int, score: float) -> float | None:
        """Human-normalised value of a raw episode return in task ``task``, for tasks with
        :meth:`reference_scores`; None otherwise."""
        return normalise_score(score, self.reference_scores(task))

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every slot; slot (task k, env e) is seeded with ``seed + 1000*k + e``.

        ``seed=None`` continues each slot's random stream (gymnasium's ``reset()``; only a never
        seeded env starts from OS entropy). A step sent by :meth:`step_async` and not yet
        received is dropped.
        """
        raise NotImplementedError

    def step_async(self, actions: np.ndarray, tasks: slice | None = None) -> None:
        """Start stepping all slots (or, if supported, the slots of ``tasks``) with ``actions``.

        ``actions`` is (n,) int for the n slots stepped; pair with :meth:`step_wait` (stepping
        slots that are already being stepped is an :class:`EnvError`).
        """
        raise NotImplementedError

    def step_wait(self, tasks: slice | None = None) -> StepResult:
        """Finish the step started by :meth:`step_async` (same ``tasks``); arrays cover those
        slots only, while ``EpisodeStat.task``/``slot`` stay global indices."""
        raise NotImplementedError

    def step(self, actions: np.ndarray) -> StepResult:
        """Step all slots at once."""
        self.step_async(actions)
        return self.step_wait()

    def close(self) -> None:
        """Release emulator threads/processes."""

    def __enter__(self) -> MultiTaskVecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def normalise_score(score: float, reference: tuple[float, float] | None) -> float | None:
    """``(score - random) / (human - random)`` for ``reference = (random, human)``: 0 is a uniformly
    random policy, 1 a human tester; None without a reference or for a non-finite score."""
    if reference is None or not math.isfinite(score):
        return None
    random, human = reference
    return (score - random) / (human - random)


#: Run seeds lie in [0, SEED_LIMIT): a slot seed (seed + 1000 * task + env) then stays below
#: 2**31, which the native ALE (a C int) needs; derived seeds (eval, resume, worker restarts) wrap
#: into it. agents/config_schema.py holds the same value (it stays free of this module's imports).
SEED_LIMIT = 2**31 - 2**20


def check_seed(seed: object) -> int:
    """``seed`` as an int, or an :class:`EnvError`: like gymnasium's ``reset(seed=...)`` a seed is
    a non-negative integer (numpy integers too); ``int()`` would quietly turn 1.5 into 1."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise EnvError(f"seed must be a non-negative integer or None, got {seed!r}")
    if seed < 0:
        raise EnvError(f"seed must be a non-negative integer or None, got {seed}")
    return int(seed)


def slot_seeds(seed: int, num_tasks: int, num_envs_per_task: int) -> np.ndarray:
    """(K*E,) seeds ``seed + 1000*task + env_index`` in task-major slot order.

    With several tasks, more than 1000 envs per task would give two slots one seed (task k's env
    1000 is task k+1's env 0), so that is an :class:`EnvError`, as is a seed :func:`check_seed`
    refuses.
    """
    seed = check_seed(seed)
    if num_tasks > 1 and num_envs_per_task > 1000:
        raise EnvError(
            f"seeded reset of {num_envs_per_task} envs per task: slot seeds are seed + 1000*task "
            "+ env, so at most 1000 envs per task get distinct seeds; use fewer envs per task"
        )
    k = np.arange(num_tasks)[:, None]
    e = np.arange(num_envs_per_task)[None, :]
    return (seed + 1000 * k + e).reshape(-1).astype(np.int64)


def unique_tasks(names: list[str]) -> list[str]:
    """``names`` unchanged if no task appears twice; else an :class:`EnvError` naming the repeat.

    Two tasks of one name would share their TensorBoard keys and one ``summary.json`` entry (the
    second evaluation silently replacing the first), so a repeated task is a user's mistake.
    """
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise EnvError(f"task {name!r} is given more than once in {names}; list each task once")
        seen.add(name)
    return names


def require_all_tasks(tasks: slice | None) -> None:
    """Guard for envs that step every task together (``supports_task_groups`` is False)."""
    if tasks is not None:
        raise EnvError("this env steps all tasks together; call step_async/step_wait without tasks")


def check_count(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int if it is a whole number >= ``minimum``; else an :class:`EnvError`.

    Refuses what ``int()`` would silently change or crash on (``2.5``, ``"8"``, ``True``).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise EnvError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise EnvError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_probability(name: str, value: object) -> float:
    """``value`` as a float if it is a number in [0, 1]; else an :class:`EnvError` naming it."""
    try:
        ok = 0.0 <= float(value) <= 1.0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise EnvError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_action(action: object, num_actions: int) -> int:
    """One action of a single env's Discrete(num_actions) space as an int; else an
    :class:`EnvError` (``-1`` would index the last action and ``1.7`` would become 1)."""
    a = np.asarray(action)
    if a.shape != () or not np.issubdtype(a.dtype, np.integer) or not 0 <= a < num_actions:
        raise EnvError(f"action must be an int in [0, {num_actions}), got {action!r}")
    return int(a)


def check_actions(actions: np.ndarray, num_slots: int, num_actions: int) -> np.ndarray:
    """Validate ``actions`` for ``num_slots`` slots of a Discrete(num_actions) space; int64 copy."""
    a = np.asarray(actions)
    if a.shape != (num_slots,) or not np.issubdtype(a.dtype, np.integer):
        raise EnvError(f"actions must be ({num_slots},) ints, got {a.dtype} {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= num_actions):
        raise EnvError(f"actions must be in [0, {num_actions}), got [{a.min()}, {a.max()}]")
    return a.astype(np.int64)
