"""Build a multi-task vector env of any suite by name; heavy suite imports stay lazy."""

from __future__ import annotations

from typing import Any

from envs.base import EnvError, MultiTaskVecEnv

SUITES = ("atari", "minatar", "gridworld")
# Tasks used when none are given (gridworld: every goal on the map, resolved by the env).
DEFAULT_TASKS: dict[str, list[str] | None] = {
    "atari": ["pong", "breakout", "space_invaders", "seaquest"],
    "minatar": ["asterix", "breakout", "freeway", "seaquest", "space_invaders"],
    "gridworld": None,
}


def suite_defaults(suite: str) -> dict[str, Any]:
    """The default keyword arguments of ``suite`` (what ``make_multitask_env`` uses when omitted)."""
    suite = _check_suite(suite)
    if suite == "atari":
        from envs.atari import ATARI_DEFAULTS

        return dict(ATARI_DEFAULTS)
    if suite == "minatar":
        from envs.minatar import MINATAR_DEFAULTS

        return dict(MINATAR_DEFAULTS)
    return {"map": "four_rooms", "max_episode_steps": None}


def make_multitask_env(
    suite: str, tasks: list[str] | str | int | None, num_envs_per_task: int, **suite_kwargs: Any
) -> MultiTaskVecEnv:
    """K tasks x ``num_envs_per_task`` slots of ``suite`` ("atari", "minatar" or "gridworld").

    ``tasks`` are game names (atari, minatar) or goal digits (gridworld); one name (or goal
    number) means a list of one, and None or empty means :data:`DEFAULT_TASKS` (every MinAtar
    game, four classic Atari games, every goal on the map). Unknown suite, task or keyword ->
    :class:`EnvError` naming the valid choices.
    """
    suite = _check_suite(suite)
    unknown = sorted(set(suite_kwargs) - set(suite_defaults(suite)))
    if unknown:
        raise EnvError(
            f"unknown {suite} option(s) {unknown} (valid: {sorted(suite_defaults(suite))})"
        )
    if isinstance(tasks, str | int):  # one task: list("pong") would be the tasks p, o, n, g
        tasks = [str(tasks)]
    names = list(tasks or DEFAULT_TASKS[suite] or [])  # [] only on the gridworld: every goal
    if suite == "atari":
        from envs.atari import AtariVecEnv

        return AtariVecEnv(names, num_envs_per_task, **suite_kwargs)
    if suite == "minatar":
        from envs.minatar import MinAtarVecEnv

        return MinAtarVecEnv(names, num_envs_per_task, **suite_kwargs)
    from envs.gridworld import GridworldVecEnv

    kwargs = {**suite_defaults("gridworld"), **suite_kwargs}
    return GridworldVecEnv(
        kwargs["map"],
        names or None,
        num_envs_per_task,
        max_episode_steps=kwargs["max_episode_steps"],
    )


def _check_suite(suite: str) -> str:
    key = str(suite).lower()
    if key not in SUITES:
        raise EnvError(f"unknown env suite {suite!r} (valid: {', '.join(SUITES)})")
    return key
