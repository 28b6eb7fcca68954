"""Suite factory: dispatch, defaults, errors, and that `import envs` stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

from envs import EnvError, make_multitask_env, suite_defaults
from envs.gridworld import GridworldVecEnv
from envs.minatar import MinAtarVecEnv


def test_unknown_suite_lists_valid():
    with pytest.raises(
        EnvError, match=r"unknown env suite 'procgen' \(valid: atari, minatar, gridworld\)"
    ):
        make_multitask_env("procgen", ["x"], 1)


def test_gridworld_and_minatar_dispatch():
    env = make_multitask_env("gridworld", ["1", "0"], 2, map="two_rooms", max_episode_steps=9)
    assert isinstance(env, GridworldVecEnv)
    assert (env.task_names, env.num_envs, env.max_episode_steps) == (["1", "0"], 4, 9)
    assert env.map.name == "two_rooms" and env.single_observation_space.shape == (5 * 9,)
    env = make_multitask_env("gridworld", None, 1)
    assert env.task_names == ["0", "1", "2", "3"]  # every goal of the default four_rooms map
    env = make_multitask_env("MinAtar", ["Breakout", "freeway"], 3, sticky_action_prob=0.0)
    assert isinstance(env, MinAtarVecEnv)
    assert env.task_names == ["breakout", "freeway"] and env.num_envs == 6


def test_unknown_kwarg_and_default_tasks():
    with pytest.raises(EnvError, match=r"unknown minatar option\(s\) \['sticky'\]"):
        make_multitask_env("minatar", ["breakout"], 1, sticky=0.1)
    env = make_multitask_env("minatar", [], 1)  # empty = every MinAtar game
    assert env.task_names == ["asterix", "breakout", "freeway", "seaquest", "space_invaders"]


def test_a_single_task_name_means_a_list_of_one():
    # list("breakout") gave the tasks b, r, e, ... and list("12") the goals 1 and 2
    assert make_multitask_env("minatar", "Breakout", 1).task_names == ["breakout"]
    assert make_multitask_env("gridworld", "1", 1).task_names == ["1"]
    assert make_multitask_env("gridworld", 0, 1).task_names == ["0"]  # 0 meant every goal
    with pytest.raises(EnvError, match=r"unknown gridworld task\(s\) \['12'\]"):
        make_multitask_env("gridworld", "12", 1)
    assert GridworldVecEnv("two_rooms", tasks="1").task_names == ["1"]


def test_suite_defaults():
    assert suite_defaults("atari")["frameskip"] == 4
    assert suite_defaults("atari")["repeat_action_probability"] == 0.25
    assert suite_defaults("atari")["full_action_space"] is True
    assert suite_defaults("minatar")["sticky_action_prob"] == 0.1
    assert suite_defaults("minatar")["difficulty_ramping"] is True  # the MinAtar library default
    assert suite_defaults("gridworld") == {"map": "four_rooms", "max_episode_steps": None}


@pytest.mark.atari
def test_atari_dispatch():
    with make_multitask_env("atari", ["Pong"], 1, backend="native") as env:
        assert env.single_action_space.n == 18 and env.num_envs == 1
    with make_multitask_env("atari", None, 1, backend="native", max_episode_steps=5) as env:
        assert env.task_names == ["pong", "breakout", "space_invaders", "seaquest"]


def test_import_envs_is_lazy():
    code = "import sys, envs; print('ale_py' in sys.modules, 'minatar' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("suite", ["gridworld", "minatar"])
def test_a_seed_that_is_not_a_non_negative_integer_is_refused(suite):
    # int() turned reset(seed=1.5) into seed 1's episodes and reset(seed=True) into seed 1's
    import numpy as np

    env = make_multitask_env(suite, None, 2)
    for bad in (1.5, "3", True, -1):
        with pytest.raises(EnvError, match="seed must be a non-negative integer or None"):
            env.reset(seed=bad)
    first = env.reset(seed=np.int64(3))
    assert (first == env.reset(seed=3)).all()
    env.close()


def test_more_than_1000_envs_per_task_cannot_share_the_slot_seed_scheme():
    from envs.base import slot_seeds

    assert len(set(slot_seeds(7, 3, 1000).tolist())) == 3000
    assert len(set(slot_seeds(7, 1, 4000).tolist())) == 4000  # one task: no neighbour to meet
    with pytest.raises(EnvError, match="at most 1000 envs per task get distinct seeds"):
        slot_seeds(7, 3, 1001)
    env = GridworldVecEnv(tasks=["0", "1"], num_envs_per_task=1001)
    env.reset()  # unseeded: fine
    with pytest.raises(EnvError, match="at most 1000 envs per task"):
        env.reset(seed=0)
