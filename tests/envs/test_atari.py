"""Atari suite on both backends: shapes, action space, raw vs clipped rewards, life loss, names."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.atari import AtariVecEnv, canonical_game, make_atari_env
from envs.base import EnvError

pytestmark = pytest.mark.atari
BACKENDS = ["native", "gymnasium"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_shapes_actions_and_raw_vs_clipped(backend):
    # SpaceInvaders scores 5..30 per alien, so raw returns exceed the clipped sum.
    steps = 150
    with AtariVecEnv(["SpaceInvaders", "pong"], 2, backend=backend, max_episode_steps=steps) as env:
        assert env.backend == backend
        assert env.task_names == ["space_invaders", "pong"]
        assert env.single_action_space.n == 18
        obs = env.reset(seed=0)
        assert obs.shape == (4, 4, 84, 84) and obs.dtype == np.uint8
        rng = np.random.default_rng(0)
        clipped = np.zeros(4)
        for t in range(1, steps + 1):
            res = env.step(rng.integers(0, 18, 4))
            assert res.obs.shape == (4, 4, 84, 84) and res.obs.dtype == np.uint8
            assert res.reward.dtype == np.float32 and set(np.unique(res.reward)) <= {-1, 0, 1}
            clipped += res.reward
            if t < steps:
                assert not (res.terminated | res.truncated).any()
        assert res.truncated.all() and not res.terminated.any()
        stats = sorted((e.slot, e.task, e.length, e.ret) for e in res.episodes)
        assert [s[:3] for s in stats] == [
            (0, 0, steps),
            (1, 0, steps),
            (2, 1, steps),
            (3, 1, steps),
        ]
        raw = np.array([s[3] for s in stats])
        assert (raw[:2] > clipped[:2]).all() and (raw[:2] >= 5 * clipped[:2]).all()
        assert np.array_equal(raw[2:], clipped[2:])  # Pong rewards are already +-1
        assert not np.array_equal(res.final_obs, res.obs)  # obs is the next game's first frame


@pytest.mark.parametrize("backend", BACKENDS)
def test_terminal_on_life_loss_counts_whole_games(backend):
    with AtariVecEnv(
        ["breakout"], 2, backend=backend, terminal_on_life_loss=True, repeat_action_probability=0.0
    ) as env:
        env.reset(seed=1)
        rng = np.random.default_rng(1)
        terminations = np.zeros(2, int)
        games = []
        for _ in range(400):
            res = env.step(rng.integers(0, 18, 2))
            terminations += res.terminated
            lost = res.terminated & ~np.isin(np.arange(2), [e.slot for e in res.episodes])
            assert np.array_equal(res.final_obs[lost], res.obs[lost])  # the game goes on
            for ep in res.episodes:
                games.append((ep.length, terminations[ep.slot]))
                terminations[ep.slot] = 0
        assert games
        # Breakout has 5 lives: 4 life-loss terminations then game over, one stat per game.
        assert all(n == 5 for _, n in games)
        assert all(length > 100 for length, _ in games)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeding_determinism(backend):
    # A short limit so the seeded runs also cross truncation resets.
    with AtariVecEnv(["breakout", "pong"], 2, backend=backend, max_episode_steps=10) as env:

        def run(seed):
            out = [env.reset(seed=seed)]
            rng = np.random.default_rng(0)
            for _ in range(25):
                out.append(env.step(rng.integers(0, 18, 4)).obs)
            return np.stack(out)

        a, b, c = run(3), run(3), run(4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_game_names_and_errors():
    assert canonical_game("SpaceInvaders") == "space_invaders"
    assert canonical_game("space_invaders") == "space_invaders"
    assert canonical_game("ALE/MsPacman-v5") == "ms_pacman"
    with pytest.raises(
        EnvError, match=r"unknown Atari game 'SpaceInvader': did you mean space_invaders"
    ):
        canonical_game("SpaceInvader")
    with pytest.raises(EnvError, match="did you mean breakout"):
        AtariVecEnv(["Breakot"])
    with pytest.raises(EnvError, match=r"unknown Atari backend 'envpool' \(valid"):
        AtariVecEnv(["pong"], backend="envpool")
    with pytest.raises(EnvError, match=r"unknown Atari option\(s\) \['frame_skip'\]"):
        AtariVecEnv(["pong"], frame_skip=4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_minimal_action_sets_must_match(backend):
    with pytest.raises(EnvError, match=r"different minimal action sets.*full_action_space=True"):
        AtariVecEnv(["pong", "breakout"], 1, backend=backend, full_action_space=False)
    with AtariVecEnv(["pong"], 1, backend=backend, full_action_space=False) as env:
        assert env.single_action_space.n == 6


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
def test_single_game_env_check_env():
    env = make_atari_env("Pong")
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8 and "lives" in info
    assert env.action_space.n == 18
    env.close()


def test_backends_are_bit_identical_without_randomness():
    # With no no-op starts and no sticky actions the emulators are deterministic, so both
    # backends must agree frame for frame (same preprocessing, stacking, rewards and truncation).
    out = {}
    for backend in BACKENDS:
        kwargs = {"noop_max": 0, "repeat_action_probability": 0.0, "max_episode_steps": 60}
        with AtariVecEnv(["breakout", "space_invaders"], 1, backend=backend, **kwargs) as env:
            frames, rewards = [env.reset(seed=0)], []
            rng = np.random.default_rng(0)
            for _ in range(60):
                res = env.step(rng.integers(0, 18, 2))
                frames.append(res.obs)
                rewards.append(res.reward)
            out[backend] = (np.stack(frames), np.stack(rewards), res.final_obs, res.episodes)
    (f1, r1, fin1, e1), (f2, r2, fin2, e2) = out.values()
    assert np.array_equal(f1, f2) and np.array_equal(r1, r2) and np.array_equal(fin1, fin2)
    assert e1 == e2 and [e.length for e in e1] == [60, 60]
