"""MinAtar suite: common padded observation, names, seeding, autoreset and state round-trip."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs import make_multitask_env, suite_defaults
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


def _raw_game(game, seed, sticky):
    """The minatar library's own env, seeded as the wrapper seeds slot ``seed``."""
    from minatar import Environment

    raw = Environment(game, sticky_action_prob=sticky)
    raw.seed(seed)
    raw.reset()
    return raw


def _layout(raw):
    """The documented observation: (10, 10, C) state channel-first, zero-padded to 10 channels."""
    state = raw.state()
    out = np.zeros((10, 10, 10), np.uint8)
    for c in range(state.shape[2]):
        out[c] = state[:, :, c]
    return out


def test_slots_match_the_minatar_library_per_slot_seed_and_action():
    # slot (k, e) plays game k seeded seed + 1000*k + e, with its own action and sticky actions
    games, e, seed, sticky = ["breakout", "freeway"], 2, 11, 0.5
    env = MinAtarVecEnv(games, num_envs_per_task=e, sticky_action_prob=sticky)
    raws = [
        _raw_game(g, seed + 1000 * k + j, sticky) for k, g in enumerate(games) for j in range(e)
    ]
    obs = env.reset(seed=seed)
    for i, raw in enumerate(raws):
        assert np.array_equal(obs[i], _layout(raw)), i
    rng = np.random.default_rng(0)
    n_ends = 0
    for _ in range(30):
        actions = rng.integers(0, 6, env.num_envs)
        res = env.step(actions)
        for i, raw in enumerate(raws):
            r, term = raw.act(int(actions[i]))
            assert (res.reward[i], res.terminated[i]) == (r, term), i
            assert np.array_equal(res.final_obs[i], _layout(raw)), i
            n_ends += term
            if term:  # same-step autoreset: the game's RNG goes on into the next episode
                raw.last_action = 0
                raw.reset()
            assert np.array_equal(res.obs[i], _layout(raw)), i
    assert n_ends > 0


def test_final_obs_is_the_last_frame_and_the_sticky_memory_resets():
    kwargs = {"num_envs_per_task": 2, "sticky_action_prob": 0.0}
    env = MinAtarVecEnv(["breakout", "space_invaders"], max_episode_steps=5, **kwargs)
    twin = MinAtarVecEnv(["breakout", "space_invaders"], max_episode_steps=100, **kwargs)
    env.reset(seed=2)
    twin.reset(seed=2)
    rng = np.random.default_rng(2)
    for _ in range(5):
        actions = rng.integers(1, 6, 4)
        res, want = env.step(actions), twin.step(actions)
    assert res.truncated.all()
    assert np.array_equal(res.final_obs, want.obs)  # the frame the 5th action led to
    assert not np.array_equal(res.final_obs, res.obs)
    # a new episode starts without a remembered action (the first sticky repeat is NOOP)
    assert [g.last_action for g in env._envs] == [0, 0, 0, 0]
    env.step(np.array([1, 2, 3, 4]))
    env.reset(seed=2)  # so does a seeded reset: the same seed replays the same games
    assert [g.last_action for g in env._envs] == [0, 0, 0, 0]


def test_termination_on_the_last_allowed_step_is_not_a_truncation():
    def run(limit):
        env = MinAtarVecEnv(["breakout"], sticky_action_prob=0.0, max_episode_steps=limit)
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        for t in range(1, 1001):
            res = env.step(rng.integers(0, 6, 1))
            if res.terminated[0] or res.truncated[0]:
                return t, bool(res.terminated[0]), bool(res.truncated[0]), res.episodes
        raise AssertionError("no episode end in 1000 steps")

    t_end, terminated, _, _ = run(10_000)
    assert terminated
    t, terminated, truncated, episodes = run(t_end)
    assert (t, terminated, truncated) == (t_end, True, False)
    assert [e.length for e in episodes] == [t_end]


def test_suite_defaults_reach_the_games():
    defaults = suite_defaults("minatar")
    env = make_multitask_env("minatar", ["asterix", "seaquest"], 1)
    assert env.max_episode_steps == defaults["max_episode_steps"]
    assert [g.sticky_action_prob for g in env._envs] == [defaults["sticky_action_prob"]] * 2
    assert [g.env.ramping for g in env._envs] == [defaults["difficulty_ramping"]] * 2
    env = make_multitask_env("minatar", ["asterix"], 1, difficulty_ramping=False)
    assert env._envs[0].env.ramping is False


def test_single_game_env_truncates_and_seeds():
    env = MinAtarEnv("freeway", sticky_action_prob=0.0, max_episode_steps=3)
    env.reset(seed=0)
    assert [env.step(0)[2:4] for _ in range(3)] == [(False, False), (False, False), (False, True)]

    def run(seed):
        env.reset(seed=seed)
        return np.stack([env.step(0)[0] for _ in range(3)])

    assert np.array_equal(run(1), run(1))
    assert not all(np.array_equal(run(0), run(s)) for s in range(1, 4))


def test_reset_without_seed_continues_the_seeded_games():
    # as gymnasium's reset(): seed=None keeps each slot's RNG going instead of drawing OS entropy
    env = MinAtarVecEnv(["breakout", "asterix"], num_envs_per_task=2)
    runs = []
    for _ in range(2):
        env.reset(seed=9)
        runs.append(_rollout(env, None, steps=60))
    assert all(np.array_equal(x, y) for x, y in zip(*runs, strict=True))


def test_a_pending_step_is_dropped_by_reset_and_cannot_be_doubled():
    env = MinAtarVecEnv(["breakout"], num_envs_per_task=2)
    env.reset(seed=0)
    env.step_async(np.array([1, 1]))
    with pytest.raises(EnvError, match="already pending; call step_wait"):
        env.step_async(np.array([3, 3]))
    env.reset(seed=0)
    with pytest.raises(EnvError, match="without step_async"):
        env.step_wait()


def test_single_game_env_checks_its_options_and_actions():
    # the vector env refused these; the single env truncated every step at max_episode_steps=0
    for kwargs, message in (
        ({"max_episode_steps": 0}, "max_episode_steps must be >= 1, got 0"),
        ({"max_episode_steps": 2.5}, "max_episode_steps must be an integer"),
        ({"sticky_action_prob": 1.5}, r"sticky_action_prob must be in \[0, 1\], got 1.5"),
        ({"sticky_action_prob": "x"}, r"sticky_action_prob must be in \[0, 1\], got 'x'"),
    ):
        with pytest.raises(EnvError, match=message):
            MinAtarEnv("breakout", **kwargs)
        with pytest.raises(EnvError, match=message):
            MinAtarVecEnv(["breakout"], **kwargs)
    with pytest.raises(EnvError, match="num_envs_per_task must be an integer"):
        MinAtarVecEnv(["breakout"], num_envs_per_task="2")
    env = MinAtarEnv("breakout")
    env.reset(seed=0)
    for bad in (-1, 6, 2.5):  # -1 played action 5, 2.5 played action 2
        with pytest.raises(EnvError, match=r"action must be an int in \[0, 6\)"):
            env.step(bad)
