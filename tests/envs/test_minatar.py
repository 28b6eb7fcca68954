"""MinAtar suite: common padded observation, names, seeding, autoreset and state round-trip."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.base import EnvError
from envs.minatar import GAMES, MinAtarEnv, MinAtarVecEnv, canonical_game

# Channels of each game's raw (10, 10, C) state.
CHANNELS = {"asterix": 4, "breakout": 4, "freeway": 7, "seaquest": 10, "space_invaders": 6}


def _rollout(env, seed, steps=100, action_seed=0):
    rng = np.random.default_rng(action_seed)
    out = [env.reset(seed=seed)]
    for _ in range(steps):
        res = env.step(rng.integers(0, 6, env.num_envs))
        out += [res.obs, res.reward, res.terminated]
    return out


def test_obs_shape_dtype_and_zero_padding():
    env = MinAtarVecEnv(list(GAMES), num_envs_per_task=2)
    assert env.single_observation_space.shape == (10, 10, 10)
    assert env.single_action_space.n == 6
    assert env.task_ids.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    obs = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(50):
        for k, game in enumerate(env.task_names):
            slots = obs[2 * k : 2 * k + 2]
            assert slots.dtype == np.uint8 and slots.max() <= 1
            assert not slots[:, CHANNELS[game] :].any(), game
        obs = env.step(rng.integers(0, 6, env.num_envs)).obs
    assert obs.shape == (10, 10, 10, 10)


@pytest.mark.parametrize(
    ("name", "game"),
    [
        ("SpaceInvaders", "space_invaders"),
        ("space-invaders", "space_invaders"),
        ("BREAKOUT", "breakout"),
        ("MinAtar-Seaquest", "seaquest"),
    ],
)
def test_game_aliases(name, game):
    assert canonical_game(name) == game


def test_unknown_game_suggests_closest():
    with pytest.raises(
        EnvError, match=r"unknown MinAtar game 'SpaceInvader'.*did you mean space_invaders"
    ):
        MinAtarVecEnv(["SpaceInvader"])
    with pytest.raises(
        EnvError, match="valid: asterix, breakout, freeway, seaquest, space_invaders"
    ):
        canonical_game("pong")


def test_seeding_determinism():
    env = MinAtarVecEnv(["breakout", "asterix"], num_envs_per_task=2)
    a, b, c = _rollout(env, 7), _rollout(env, 7), _rollout(env, 8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_episode_stats_and_autoreset():
    env = MinAtarVecEnv(["breakout", "space_invaders"], num_envs_per_task=2, max_episode_steps=40)
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    acc_ret, acc_len, n_eps = np.zeros(4), np.zeros(4, int), 0
    for _ in range(200):
        res = env.step(rng.integers(0, 6, 4))
        acc_ret += res.reward
        acc_len += 1
        done = res.terminated | res.truncated
        assert not (res.terminated & res.truncated).any()
        assert np.array_equal(res.final_obs[~done], res.obs[~done])
        assert (acc_len[res.truncated] == 40).all()
        for ep in res.episodes:
            assert done[ep.slot] and ep.task == env.task_ids[ep.slot]
            assert (ep.ret, ep.length) == (acc_ret[ep.slot], acc_len[ep.slot])
            acc_ret[ep.slot], acc_len[ep.slot] = 0, 0
            n_eps += 1
        assert len(res.episodes) == done.sum()
    assert n_eps > 0


def test_state_round_trip():
    env = MinAtarVecEnv(["seaquest", "freeway", "breakout"], num_envs_per_task=2)
    rng = np.random.default_rng(0)
    env.reset(seed=3)
    for _ in range(30):
        env.step(rng.integers(0, 6, env.num_envs))
    state = pickle.loads(pickle.dumps(env.get_state()))
    actions = rng.integers(0, 6, (80, env.num_envs))
    first = [env.step(a) for a in actions]
    env.set_state(state)
    second = [env.step(a) for a in actions]
    for r1, r2 in zip(first, second, strict=True):
        assert np.array_equal(r1.obs, r2.obs) and np.array_equal(r1.reward, r2.reward)
        assert np.array_equal(r1.terminated, r2.terminated)
        assert r1.episodes == r2.episodes
    with pytest.raises(EnvError, match="state is for games"):
        MinAtarVecEnv(["breakout"]).set_state(state)


def test_single_game_env_check_env():
    env = MinAtarEnv("SpaceInvaders")
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (10, 10, 10) and obs.dtype == np.uint8 and not obs[6:].any()
