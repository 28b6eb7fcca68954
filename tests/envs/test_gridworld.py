"""Known-answer tests of the gridworld suite: parsing, BFS, dynamics, autoreset, seeding, state."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.base import EnvError
from envs.gridworld import (
    MAPS_DIR,
    GridworldEnv,
    GridworldVecEnv,
    available_maps,
    load_map,
    parse_map,
)

# Goal 0 top-left, goal 1 bottom-right, one wall block in the middle.
TINY = """\
#####
#0..#
#.#.#
#..1#
#####
"""
UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3


@pytest.fixture
def tiny_path(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TINY)
    return path


def test_parse_tiny_map(tiny_path):
    gmap = load_map(tiny_path)
    assert (gmap.height, gmap.width) == (5, 5)
    assert gmap.goals == {"0": gmap.cell(1, 1), "1": gmap.cell(3, 3)}
    assert gmap.starts == ()
    assert gmap.walls.sum() == 25 - 8
    # Bumping a wall stays; moving onto floor moves.
    c = gmap.cell(1, 1)
    assert gmap.next_cell[c].tolist() == [c, gmap.cell(2, 1), c, gmap.cell(1, 2)]


def test_bfs_distances_tiny(tiny_path):
    env = GridworldVecEnv(tiny_path)
    expected = {
        (1, 1): 0,
        (1, 2): 1,
        (1, 3): 2,
        (2, 1): 1,
        (2, 3): 3,
        (3, 1): 2,
        (3, 2): 3,
        (3, 3): 4,
    }
    for cell, d in expected.items():
        assert env.shortest_path_length("0", cell) == d
        # The map is symmetric under a 180-degree rotation that swaps the goals.
        assert env.shortest_path_length("1", (4 - cell[0], 4 - cell[1])) == d
    assert env.shortest_path_length("0", (0, 0)) == -1  # a wall
    assert env.mean_optimal_length("0") == pytest.approx(16 / 7)
    # a step limit below some distance caps them: no episode is longer than the limit
    capped = GridworldVecEnv(tiny_path, max_episode_steps=3)
    assert capped.mean_optimal_length("0") == pytest.approx(15 / 7)  # the 4 counts as 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#####\n#0..#\n#..#\n#####\n", "ragged lines (line 3"),
        ("#####\n#0.x#\n#####\n", "unknown character 'x' at line 2 col 4"),
        ("#####\n#...#\n#####\n", "no goals"),
        (
            "#######\n#0.#.1#\n#######\n",
            "goal '0' unreachable from the start cell at line 2 col 5 (every floor cell is a start "
            "cell unless the map marks some with 'S'); connect it, wall it off with '#', or mark",
        ),
        ("#####\n#0..#\n\n#..1#\n#####\n", "blank line 3 inside the map"),  # was "ragged"
        ("#####\n#0.0#\n#####\n", "goal '0' appears more than once"),
        ("", "empty"),
        ("###\n#0#\n###\n", "no start cell for goal '0'"),
    ],
)
def test_malformed_maps_raise(text, message):
    with pytest.raises(EnvError, match="map 'bad'") as err:
        parse_map(text, name="bad")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unreachable_goal_from_start_cell():
    with pytest.raises(EnvError, match="unreachable from the start cell at line 2 col 2"):
        parse_map("#######\n#S#0..#\n#######\n", name="bad")


def test_unknown_map_and_task():
    with pytest.raises(EnvError, match="shipped: "):
        load_map("no_such_map")
    with pytest.raises(EnvError, match=r"unknown gridworld task\(s\) \['7'\].*valid: \['0', '1'\]"):
        GridworldVecEnv("corridor", tasks=["0", "7"])
    # a name too long for the file system (or with a NUL) was an OSError (ValueError) traceback
    for name in ("x" * 300, "a\0b"):
        with pytest.raises(EnvError, match="not a file and not a shipped map"):
            load_map(name)


def test_shipped_maps():
    assert {"four_rooms", "corridor", "two_rooms", "far_room"} <= set(available_maps())
    assert len(load_map("four_rooms").goals) >= 4
    far = load_map("far_room")
    assert far.starts and len(far.goals) == 4
    # Shared structure: every goal of far_room is at least 12 steps from every start.
    for task in far.task_names:
        assert far.distances(task)[list(far.starts)].min() >= 12


def test_zero_step_limit_is_refused_not_read_as_the_default():
    for make in (
        lambda: GridworldVecEnv("four_rooms", num_envs_per_task=1, max_episode_steps=0),
        lambda: GridworldEnv("four_rooms", "0", max_episode_steps=0),
    ):
        with pytest.raises(EnvError, match="max_episode_steps must be >= 1, got 0"):
            make()


def test_task_ids_layout_and_spaces():
    env = GridworldVecEnv("four_rooms", tasks=["2", "0"], num_envs_per_task=3)
    assert env.task_names == ["2", "0"]
    assert env.task_ids.tolist() == [0, 0, 0, 1, 1, 1]
    assert env.single_observation_space.shape == (13 * 13,)
    assert env.single_action_space.n == 4
    assert env.max_episode_steps == 4 * (13 + 13)
    obs = env.reset(seed=0)
    assert obs.shape == (6, 169) and obs.dtype == np.float32
    assert (obs.sum(axis=1) == 1).all()


def test_optimal_policy_reaches_goal_in_bfs_length(tiny_path):
    env = GridworldVecEnv(tiny_path, num_envs_per_task=5)
    obs = env.reset(seed=3)
    start = obs.argmax(axis=1)
    bfs = np.array(
        [env.shortest_path_length(t, int(c)) for t, c in zip(["0"] * 5 + ["1"] * 5, start)]
    )
    finished = np.zeros(env.num_envs, dtype=bool)
    for step in range(1, bfs.max() + 1):
        res = env.step(env.optimal_actions())
        ends = ~finished & (bfs == step)
        assert np.array_equal(res.terminated[~finished], ends[~finished])
        assert (res.reward[ends] == 1.0).all() and not res.truncated[~finished].any()
        assert (res.reward[~finished & (bfs > step)] == 0.0).all()
        for ep in res.episodes:
            if not finished[ep.slot]:
                assert (ep.task, ep.ret, ep.length) == (env.task_ids[ep.slot], 1.0, bfs[ep.slot])
        finished |= ends
    assert finished.all()


def test_truncation_at_step_limit(tiny_path):
    env = GridworldVecEnv(tiny_path, tasks=["0"], num_envs_per_task=4, max_episode_steps=3)
    env.reset(seed=0)
    right = np.full(4, RIGHT)  # moving right never reaches goal 0 in column 1
    for _ in range(2):
        res = env.step(right)
        assert not (res.terminated | res.truncated).any()
    res = env.step(right)
    assert res.truncated.all() and not res.terminated.any()
    assert (res.reward == 0).all()
    assert [(e.task, e.ret, e.length, e.slot) for e in res.episodes] == [
        (0, 0.0, 3, i) for i in range(4)
    ]


def test_same_step_autoreset_and_final_obs(tiny_path):
    env = GridworldVecEnv(tiny_path, tasks=["0"], num_envs_per_task=8)
    env.reset(seed=1)
    goal = env.map.goals["0"]
    for _ in range(10):
        res = env.step(env.optimal_actions())
        done = res.terminated | res.truncated
        assert np.array_equal(res.final_obs[~done], res.obs[~done])
        assert (res.final_obs[res.terminated].argmax(axis=1) == goal).all()
        assert (res.obs[done].argmax(axis=1) != goal).all()  # already the next episode's start
        assert np.array_equal(res.obs.argmax(axis=1), env.positions)


def _rollout(env, seed, steps=60, action_seed=0):
    rng = np.random.default_rng(action_seed)
    out = [env.reset(seed=seed)]
    for _ in range(steps):
        res = env.step(rng.integers(0, 4, env.num_envs))
        out += [res.obs, res.reward]
    return out


def test_seeding_determinism():
    env = GridworldVecEnv("four_rooms", num_envs_per_task=2, max_episode_steps=10)
    a, b, c = _rollout(env, 5), _rollout(env, 5), _rollout(env, 6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    unseeded = [env.reset(seed=None).argmax(axis=1) for _ in range(5)]
    assert any(not np.array_equal(unseeded[0], u) for u in unseeded[1:])


def test_slot_seed_convention():
    # far_room tasks share the S start cells, so slot (k=1, e=0) at seed 0 starts like slot (0, 0)
    # at seed 1000: each slot's starts depend only on seed + 1000*k + e.
    env = GridworldVecEnv("far_room", tasks=["0", "1"], num_envs_per_task=2, max_episode_steps=1)
    starts_a, starts_b = [env.reset(seed=0)[2].argmax()], [env.reset(seed=1000)[0].argmax()]
    env.reset(seed=0)
    starts_a += [env.step(np.zeros(4, np.int64)).obs[2].argmax() for _ in range(5)]
    env.reset(seed=1000)
    starts_b += [env.step(np.zeros(4, np.int64)).obs[0].argmax() for _ in range(5)]
    assert starts_a == starts_b


def test_state_round_trip():
    env = GridworldVecEnv("four_rooms", num_envs_per_task=3, max_episode_steps=7)
    rng = np.random.default_rng(0)
    env.reset(seed=2)
    for _ in range(13):
        env.step(rng.integers(0, 4, env.num_envs))
    state = pickle.loads(pickle.dumps(env.get_state()))
    actions = rng.integers(0, 4, (40, env.num_envs))
    first = [env.step(a) for a in actions]
    env.set_state(state)
    second = [env.step(a) for a in actions]
    for r1, r2 in zip(first, second, strict=True):
        assert np.array_equal(r1.obs, r2.obs) and np.array_equal(r1.reward, r2.reward)
        assert np.array_equal(r1.truncated, r2.truncated)
        assert r1.episodes == r2.episodes
    assert sum(len(r.episodes) for r in first) > 0


def test_bad_actions_raise():
    env = GridworldVecEnv("corridor", num_envs_per_task=1)
    with pytest.raises(EnvError, match="reset"):
        env.step(np.zeros(2, np.int64))
    env.reset(seed=0)
    with pytest.raises(EnvError, match=r"in \[0, 4\)"):
        env.step(np.array([0, 4]))


def test_single_task_env_check_env_and_optimal():
    env = GridworldEnv("two_rooms", task="1")
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    table = env.map.optimal_actions("1")
    steps, cell = 0, int(obs.argmax())
    expected = int(env.map.distances("1")[cell])
    while True:
        obs, reward, terminated, truncated, _ = env.step(table[cell])
        cell, steps = int(obs.argmax()), steps + 1
        if terminated or truncated:
            break
    assert (steps, reward, terminated, truncated) == (expected, 1.0, True, False)


def test_start_distribution_matches_mean_optimal_length():
    env = GridworldVecEnv("four_rooms", tasks=["3"], num_envs_per_task=4000)
    starts = env.reset(seed=0).argmax(axis=1)
    valid = env.map.start_cells("3")
    assert set(starts.tolist()) == set(valid.tolist())  # uniform over all floor cells but the goal
    lengths = env.map.distances("3")[starts]
    expected = env.mean_optimal_length("3")
    assert abs(lengths.mean() - expected) < 4 * lengths.std() / np.sqrt(len(lengths))
    # Following BFS, the first episodes end exactly at their BFS lengths.
    got = np.zeros(env.num_envs, int)
    for _ in range(lengths.max()):
        res = env.step(env.optimal_actions())
        for ep in res.episodes:
            if got[ep.slot] == 0:
                got[ep.slot] = ep.length
    assert np.array_equal(got, lengths)


def test_goal_reached_on_the_last_allowed_step_terminates_not_truncates(tiny_path):
    env = GridworldVecEnv(tiny_path, tasks=["0"], num_envs_per_task=16, max_episode_steps=1)
    start = env.reset(seed=0).argmax(axis=1)
    one_away = env.map.distances("0")[start] == 1
    assert one_away.any() and not one_away.all()  # both kinds of slot in this draw
    res = env.step(env.optimal_actions())
    assert np.array_equal(res.terminated, one_away)
    assert np.array_equal(res.truncated, ~one_away)
    assert np.array_equal(res.reward, one_away.astype(np.float32))


def test_slot_seeds_with_more_envs_than_tasks():
    # K=2 tasks x E=3 envs: slot (k, e) at seed 0 draws the starts of a one-slot env seeded
    # 1000*k + e (far_room's tasks share the S start cells); a K/E mix-up swaps the seeds.
    def starts(env, seed, slot):
        seq = [env.reset(seed=seed)[slot].argmax()]
        seq += [env.step(np.zeros(env.num_envs, np.int64)).obs[slot].argmax() for _ in range(6)]
        return seq

    env = GridworldVecEnv("far_room", tasks=["0", "1"], num_envs_per_task=3, max_episode_steps=1)
    one = GridworldVecEnv("far_room", tasks=["0"], num_envs_per_task=1, max_episode_steps=1)
    for k in range(2):
        for e in range(3):
            assert starts(env, 0, 3 * k + e) == starts(one, 1000 * k + e, 0), (k, e)


def test_each_episode_redraws_the_start_and_restarts_the_return(tiny_path):
    env = GridworldVecEnv(tiny_path, tasks=["1", "0"], num_envs_per_task=3)
    obs = env.reset(seed=4)
    start = obs.argmax(axis=1)
    starts_seen = [set() for _ in range(env.num_envs)]
    n_eps = 0
    for _ in range(40):
        for i, c in enumerate(start):
            starts_seen[i].add(int(c))
        bfs = [
            env.shortest_path_length(env.task_names[k], int(c))
            for k, c in zip(env.task_ids, start, strict=True)
        ]
        res = env.step(env.optimal_actions())
        for ep in res.episodes:
            # every episode (not only the first) is worth exactly 1 and takes its BFS length
            assert (ep.ret, ep.length) == (1.0, bfs[ep.slot])
            goal = env.map.goals[env.task_names[ep.task]]
            assert res.final_obs[ep.slot].argmax() == goal
            n_eps += 1
        done = res.terminated | res.truncated
        start = np.where(done, res.obs.argmax(axis=1), start)
    assert n_eps >= 2 * env.num_envs
    # a slot's start changes between episodes (7 possible starts per goal)
    assert all(len(s) > 1 for s in starts_seen)


def test_task_order_sets_each_slot_goal_and_start_cells(tiny_path):
    # Tasks given out of sorted order: slot k's goal and starts are those of task_names[k].
    env = GridworldVecEnv(tiny_path, tasks=["1", "0"], num_envs_per_task=3)
    goals = np.array([env.map.goals[env.task_names[k]] for k in env.task_ids])
    for seed in range(10):
        start = env.reset(seed=seed).argmax(axis=1)
        assert (start != goals).all()
        for k, t in enumerate(env.task_names):
            assert set(start[env.task_ids == k]) <= set(env.map.start_cells(t).tolist())
    finished = np.zeros(env.num_envs, bool)
    for _ in range(4):  # the BFS diameter of TINY
        res = env.step(env.optimal_actions())
        first = res.terminated & ~finished
        assert np.array_equal(res.final_obs[first].argmax(axis=1), goals[first])
        finished |= res.terminated
    assert finished.all()


def test_actions_must_be_in_range_ints_and_groups_are_refused():
    env = GridworldVecEnv("corridor", num_envs_per_task=1)
    env.reset(seed=0)
    with pytest.raises(EnvError, match=r"in \[0, 4\)"):
        env.step(np.array([-1, 0]))
    with pytest.raises(EnvError, match=r"actions must be \(2,\) ints, got float64"):
        env.step(np.array([0.0, 1.0]))
    with pytest.raises(EnvError, match=r"actions must be \(2,\) ints"):
        env.step(np.zeros(3, np.int64))
    with pytest.raises(EnvError, match="steps all tasks together"):
        env.step_async(np.zeros(1, np.int64), tasks=slice(0, 1))


def test_single_task_env_truncation_terminal_step_and_seeding(tiny_path):
    assert GridworldEnv(tiny_path).max_episode_steps == GridworldVecEnv(tiny_path).max_episode_steps
    env = GridworldEnv(tiny_path, task="0", max_episode_steps=2)
    env.reset(seed=0)
    # moving right never enters goal 0's column
    assert env.step(RIGHT)[2:4] == (False, False)
    assert env.step(RIGHT)[2:4] == (False, True)
    # reaching the goal on the last allowed step is a termination, not a truncation
    env = GridworldEnv(tiny_path, task="0", max_episode_steps=1)
    dist = env.map.distances("0")
    table = env.map.optimal_actions("0")
    outcomes = set()
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        cell = int(obs.argmax())
        _, reward, terminated, truncated, _ = env.step(int(table[cell]))
        assert (reward, terminated, truncated) == (
            (1.0, True, False) if dist[cell] == 1 else (0.0, False, True)
        )
        outcomes.add(terminated)
    assert outcomes == {True, False}
    # seeded starts: reproducible per seed, and not always the same cell
    starts = [int(env.reset(seed=s)[0].argmax()) for s in range(20)]
    assert starts == [int(env.reset(seed=s)[0].argmax()) for s in range(20)]
    assert len(set(starts)) > 1


def _write(path, text):
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.mark.parametrize(
    "text",
    [
        TINY.replace("\n", "\r\n") + "\r\n",  # CRLF with a blank last line (was "ragged lines")
        TINY.replace("\n", "\r"),  # old Mac line ends (was "unknown character '\\r'")
        "\ufeff" + TINY,  # byte-order mark of Notepad's UTF-8 (was "unknown character")
    ],
)
def test_map_line_endings_and_byte_order_mark(text, tmp_path):
    want = parse_map(TINY)
    for got in (parse_map(text), load_map(_write(tmp_path / "m.txt", text))):
        assert got.goals == want.goals and np.array_equal(got.walls, want.walls)


def test_reset_without_seed_continues_the_seeded_starts():
    # as gymnasium's reset(): seed=None keeps the streams going instead of drawing OS entropy
    env = GridworldVecEnv("four_rooms", num_envs_per_task=3)
    runs = []
    for _ in range(2):
        env.reset(seed=4)
        runs.append(np.stack([env.reset().argmax(axis=1) for _ in range(6)]))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert len({r.tobytes() for r in runs[0]}) > 1  # and each reset still starts new episodes


def test_a_pending_step_is_dropped_by_reset_and_cannot_be_doubled():
    env = GridworldVecEnv("corridor", num_envs_per_task=1)
    env.reset(seed=0)
    env.step_async(np.array([3, 2]))
    with pytest.raises(EnvError, match="already pending; call step_wait"):
        env.step_async(np.array([2, 3]))  # was silently replacing the first actions
    env.reset(seed=0)
    with pytest.raises(EnvError, match="without step_async"):
        env.step_wait()  # was applying the actions sent before the reset


def test_single_task_env_refuses_actions_outside_its_space():
    env = GridworldEnv("corridor", task="1")
    env.reset(seed=0)
    for bad in (-1, 4, 1.7, True, np.array([1])):  # -1 moved right, 1.7 moved down
        with pytest.raises(EnvError, match=r"action must be an int in \[0, 4\)"):
            env.step(bad)
    assert env.step(np.int64(3))[1] in (0.0, 1.0)


@pytest.mark.parametrize("value", [2.5, "2", True, None])
def test_counts_must_be_whole_numbers(value):
    with pytest.raises(EnvError, match="num_envs_per_task must be an integer"):
        GridworldVecEnv("corridor", num_envs_per_task=value)  # 2.5 gave 2, "2" a TypeError
    if value is not None:  # None is the documented default step limit
        with pytest.raises(EnvError, match="max_episode_steps must be an integer"):
            GridworldVecEnv("corridor", max_episode_steps=value)
    assert GridworldVecEnv("corridor", num_envs_per_task=np.int64(2)).num_envs == 4
    with pytest.raises(EnvError, match=r"no gridworld tasks given on map 'corridor'"):
        GridworldVecEnv("corridor", tasks=[])


def test_a_snapshot_from_before_the_layout_was_recorded_is_restored():
    env = GridworldVecEnv("four_rooms", num_envs_per_task=2)
    env.reset(seed=5)
    env.step(np.array([RIGHT, DOWN, LEFT, UP] * 2))
    state = env.get_state()
    del state["layout"]  # as saved by older runs
    after = env.step(np.array([DOWN] * 8)).obs
    env.set_state(state)
    np.testing.assert_array_equal(env.step(np.array([DOWN] * 8)).obs, after)


def test_one_goal_string_is_one_task_not_its_digits():
    with pytest.raises(EnvError, match=r"unknown gridworld task\(s\) \['12'\]"):
        GridworldVecEnv("four_rooms", tasks="12")  # not the goals 1 and 2
    assert GridworldVecEnv("four_rooms", tasks=2).task_names == ["2"]


def test_a_snapshot_is_refused_on_a_map_whose_goals_were_swapped(tmp_path):
    # same walls and start cells, goals 0 and 1 exchanged: each slot would chase the other goal
    path = tmp_path / "pair.txt"
    path.write_text("#####\n#0S1#\n#####\n")
    env = GridworldVecEnv(path)
    env.reset(seed=0)
    state = env.get_state()
    path.write_text("#####\n#1S0#\n#####\n")
    with pytest.raises(EnvError, match="gridworld map 'pair' changed since this snapshot"):
        GridworldVecEnv(path).set_state(state)


def test_a_map_file_that_cannot_be_read_is_one_env_error(tiny_path, monkeypatch):
    def refuse(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(EnvError, match=r"map file '.*tiny\.txt' cannot be read: Permission denied"):
        load_map(tiny_path)


def test_a_shipped_map_name_wins_over_a_file_of_that_name(tmp_path, monkeypatch):
    (tmp_path / "corridor").write_text(TINY)
    monkeypatch.chdir(tmp_path)
    assert load_map("corridor").goals == parse_map((MAPS_DIR / "corridor.txt").read_text()).goals
    assert load_map(tmp_path / "corridor").goals == {"0": 6, "1": 18}  # the file, by its path
