"""Atari suite on both backends: shapes, action space, raw vs clipped rewards, life loss, names."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.atari import ATARI_DEFAULTS, AtariVecEnv, atari_config, canonical_game, make_atari_env
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
    # gym's v4 ids: the game is named, the frame skip is a setting (no suggestion before)
    with pytest.raises(EnvError, match=r"'PongNoFrameskip-v4': did you mean pong\? \(the frame"):
        canonical_game("PongNoFrameskip-v4")
    with pytest.raises(EnvError, match=r"did you mean space_invaders\? \(the frame skip is env"):
        canonical_game("SpaceInvadersDeterministic-v4")
    with pytest.raises(EnvError, match=r"unknown Atari backend 'envpool' \(valid"):
        AtariVecEnv(["pong"], backend="envpool")
    with pytest.raises(EnvError, match=r"unknown Atari option\(s\) \['frame_skip'\]"):
        AtariVecEnv(["pong"], frame_skip=4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_minimal_action_sets_must_match(backend):
    with pytest.raises(EnvError, match=r"different minimal .*env.atari.full_action_space=true"):
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


@pytest.mark.parametrize("backend", BACKENDS)
def test_episode_counters_restart_per_game_and_on_reset(backend):
    limit = 100
    with AtariVecEnv(
        ["space_invaders"], 1, backend=backend, clip_rewards=False, max_episode_steps=limit
    ) as env:
        env.reset(seed=0)
        rng = np.random.default_rng(1)
        scored = any(env.step(rng.integers(0, 18, 1)).reward[0] > 0 for _ in range(limit - 1))
        assert scored  # mid-game, before the step limit
        env.reset(seed=0)  # a reset mid-game starts the step and return counters again
        rng = np.random.default_rng(1)
        ret, stats, rewards = 0.0, [], set()
        for t in range(1, 2 * limit + 1):
            res = env.step(rng.integers(0, 18, 1))
            ret += float(res.reward[0])
            rewards.add(float(res.reward[0]))
            assert bool(res.truncated[0]) == (t % limit == 0), t
            for ep in res.episodes:
                stats.append((t, ep.length, ep.ret, ret))
                ret = 0.0
    assert max(rewards) > 1  # clip_rewards=False: the learning reward is the raw game score
    assert [s[:2] for s in stats] == [(limit, limit), (2 * limit, limit)]
    assert all(ep_ret == want for _, _, ep_ret, want in stats)
    assert stats[0][2] > 0  # the first game scores, so a return carried over would show


def test_game_over_final_obs_matches_across_backends():
    # Deterministic emulators: both backends end the same Breakout game on the same step, with
    # final_obs the game's last frame and obs the next game's first frame.
    out = {}
    for backend in BACKENDS:
        kwargs = {"noop_max": 0, "repeat_action_probability": 0.0}
        with AtariVecEnv(["breakout"], 1, backend=backend, **kwargs) as env:
            first = env.reset(seed=0)
            rng = np.random.default_rng(0)
            t, res = 1, env.step(rng.integers(0, 18, 1))
            while not res.episodes and t < 1000:
                t, res = t + 1, env.step(rng.integers(0, 18, 1))
            assert res.terminated[0] and not res.truncated[0]
            assert np.array_equal(res.obs, first)  # no no-ops: every game starts alike
            assert not np.array_equal(res.final_obs, res.obs)
            out[backend] = (t, res.final_obs, res.episodes)
    (t1, fin1, e1), (t2, fin2, e2) = out.values()
    assert t1 == t2 and np.array_equal(fin1, fin2) and e1 == e2 and e1[0].length == t1


@pytest.mark.parametrize("backend", BACKENDS)
def test_sticky_actions_and_noop_starts_reach_the_emulator(backend):
    rng = np.random.default_rng(0)
    moves = rng.integers(0, 18, (20, 3))
    moves[:, 2] = 0  # slot 2 plays NOOP
    # repeat_action_probability=1 repeats the reset action (NOOP) forever: the slots playing
    # random actions (which move the paddle without sticky actions) play exactly like NOOP.
    with AtariVecEnv(
        ["pong"], 3, backend=backend, noop_max=0, repeat_action_probability=1.0
    ) as env:
        env.reset(seed=0)
        obs = [env.step(a).obs for a in moves][-1]
    assert np.array_equal(obs[0], obs[2]) and np.array_equal(obs[1], obs[2])
    # No-op starts: the seeded slots start after different numbers of no-ops, so NOOP play
    # diverges between slots (above, without no-ops, the slots stayed identical).
    with AtariVecEnv(["pong"], 3, backend=backend, repeat_action_probability=0.0) as env:
        env.reset(seed=0)
        obs = [env.step(np.zeros(3, np.int64)).obs for _ in range(20)][-1]
    assert len({o.tobytes() for o in obs}) > 1


def test_task_groups_step_like_the_full_batch():
    # The native backend steps contiguous task groups on their own; slots and episode stats
    # keep their global indices.
    kwargs = {"noop_max": 0, "repeat_action_probability": 0.0, "max_episode_steps": 3}
    games = ["breakout", "pong"]
    with (
        AtariVecEnv(games, 2, backend="native", **kwargs) as full,
        AtariVecEnv(games, 2, backend="native", **kwargs) as grouped,
    ):
        assert grouped.supports_task_groups
        np.testing.assert_array_equal(full.reset(seed=0), grouped.reset(seed=0))
        rng = np.random.default_rng(0)
        episodes = []
        for _ in range(4):
            a = rng.integers(0, 18, 4)
            want = full.step(a)
            grouped.step_async(a[:2], tasks=slice(0, 1))
            grouped.step_async(a[2:], tasks=slice(1, 2))
            second = grouped.step_wait(tasks=slice(1, 2))
            first = grouped.step_wait(tasks=slice(0, 1))
            for name in ("obs", "reward", "terminated", "truncated", "final_obs"):
                got = np.concatenate([getattr(first, name), getattr(second, name)])
                np.testing.assert_array_equal(got, getattr(want, name), err_msg=name)
            assert first.episodes + second.episodes == want.episodes
            episodes += want.episodes
        assert [(e.task, e.slot, e.length) for e in episodes] == [
            (k, s, 3) for k, s in ((0, 0), (0, 1), (1, 2), (1, 3))
        ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_screen_size_and_frame_stack_options(backend):
    with AtariVecEnv(["pong"], 1, backend=backend, screen_size=42, frame_stack=2) as env:
        assert env.single_observation_space.shape == (2, 42, 42)
        assert env.reset(seed=0).shape == (1, 2, 42, 42)
        assert env.step(np.zeros(1, np.int64)).obs.shape == (1, 2, 42, 42)


def test_single_game_env_checks_its_options():
    # a misspelt option was silently ignored (the env ran with the default frameskip)
    with pytest.raises(EnvError, match=r"unknown Atari option\(s\) \['frame_skip'\]"):
        make_atari_env("pong", frame_skip=2)
    with pytest.raises(EnvError, match="frameskip must be >= 1, got 0"):
        make_atari_env("pong", frameskip=0)
    with pytest.raises(EnvError, match="noop_max must be an integer"):
        AtariVecEnv(["pong"], 1, noop_max=2.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeds_outside_ale_range_are_refused(backend):
    # the native ALE read a negative seed as "unseeded": reset(seed=-5) gave new games each time
    with AtariVecEnv(["pong", "breakout"], 2, backend=backend) as env:
        top = 2**31 - 1001  # slot seeds reach seed + 1000 + 1
        with pytest.raises(EnvError, match="seed must be a non-negative integer or None, got -5"):
            env.reset(seed=-5)
        with pytest.raises(EnvError, match=rf"Atari seed must be in \[0, {top}\)"):
            env.reset(seed=top)
        assert env.reset(seed=top - 1).shape == (4, 4, 84, 84)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_drops_a_pending_step(backend):
    # the step's results stayed queued: the native reset returned stale frames and every later
    # step raised "already being stepped"
    with AtariVecEnv(["breakout", "pong"], 1, backend=backend) as env:
        actions = np.random.default_rng(0).integers(0, 18, (30, 2))
        clean = [env.reset(seed=3)] + [env.step(a).obs for a in actions]
        groups = [None] + ([slice(1, 2)] if backend == "native" else [])
        for tasks in groups:
            env.step_async(actions[0] if tasks is None else actions[0][tasks], tasks=tasks)
            got = [env.reset(seed=3)] + [env.step(a).obs for a in actions]
            np.testing.assert_array_equal(np.stack(got), np.stack(clean))


def test_bad_task_groups_and_use_after_close_raise_env_errors():
    env = AtariVecEnv(["breakout", "pong"], 1)
    env.reset(seed=0)
    for tasks in (0, [0]):  # AttributeError / TypeError before
        with pytest.raises(EnvError, match="tasks must be a slice of task indices or None"):
            env.step_async(np.zeros(1, np.int64), tasks=tasks)
    env.step_async(np.zeros(2, np.int64))  # closed with a step pending: no AttributeError
    env.close()
    env.close()
    uses = (env.step_wait, lambda: env.reset(seed=0), lambda: env.step(np.zeros(2, np.int64)))
    for use in uses:
        with pytest.raises(EnvError, match="this Atari env is closed"):
            use()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("frameskip", 0, "frameskip must be >= 1, got 0"),
        ("frame_stack", 0, "frame_stack must be >= 1, got 0"),
        ("screen_size", 0, "screen_size must be >= 1, got 0"),
        ("screen_size", 84.0, "screen_size must be an integer, got float 84.0"),
        ("max_episode_steps", 0, "max_episode_steps must be >= 1, got 0"),
        ("noop_max", -1, "noop_max must be >= 0, got -1"),
        ("repeat_action_probability", 1.5, r"repeat_action_probability must be in \[0, 1\]"),
        ("repeat_action_probability", -0.1, r"repeat_action_probability must be in \[0, 1\]"),
        ("repeat_action_probability", "high", r"repeat_action_probability must be in \[0, 1\]"),
    ],
)
def test_atari_config_refuses_each_bad_option(option, value, message):
    # checked before any emulator starts; screen_size=0 and probabilities outside [0, 1] went on
    with pytest.raises(EnvError, match=message):
        atari_config({option: value})


def test_atari_config_fills_defaults_and_accepts_the_edges():
    assert atari_config({}) == ATARI_DEFAULTS
    cfg = atari_config({"noop_max": 0, "repeat_action_probability": 1, "screen_size": np.int64(42)})
    assert cfg["noop_max"] == 0 and cfg["repeat_action_probability"] == 1
    assert cfg["screen_size"] == 42 and type(cfg["screen_size"]) is int
    assert atari_config({"repeat_action_probability": 0.0})["repeat_action_probability"] == 0.0
