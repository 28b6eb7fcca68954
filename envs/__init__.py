"""Vectorised multi-task environment suites: Atari (ale-py), MinAtar and gridworld.

Importing ``envs`` is cheap: ale-py and minatar are imported only when their suite is built.
"""

from envs.base import EnvError, EpisodeStat, MultiTaskVecEnv, StepResult, slot_seeds
from envs.factory import DEFAULT_TASKS, SUITES, make_multitask_env, suite_defaults

__all__ = [
    "DEFAULT_TASKS",
    "SUITES",
    "EnvError",
    "EpisodeStat",
    "MultiTaskVecEnv",
    "StepResult",
    "make_multitask_env",
    "slot_seeds",
    "suite_defaults",
]
