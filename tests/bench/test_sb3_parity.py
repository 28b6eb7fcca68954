"""bench/sb3_parity.py: the protocol it gives train.py, the report by hand, which runs it starts,
and bad input as one error line."""

import json
import subprocess
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

import bench.sb3_parity as sp
from envs.base import EnvError


def write_ours(run_dir, points, game="space_invaders", finished=True):
    """A train.py run's event log of training returns, with summary.json when ``finished``."""
    run_dir.mkdir(parents=True)
    writer = SummaryWriter(str(run_dir))
    for step, ret in points:
        writer.add_scalar(f"task/{game}/return", ret, step)
    writer.close()
    if finished:
        (run_dir / "summary.json").write_text("{}")


def write_sb3(path, points):
    path.write_text(json.dumps({"env_id": "x", "steps": 0, "episodes": points}))


def test_sb3_env_ids_from_any_spelling_and_unknown_games():
    assert sp.sb3_env_id("space_invaders") == "SpaceInvadersNoFrameskip-v4"
    assert sp.sb3_env_id("Pong") == "PongNoFrameskip-v4"
    with pytest.raises(EnvError, match="unknown Atari game 'Pongg'"):
        sp.sb3_env_id("Pongg")


def test_our_run_gets_sb3_protocol_or_resumes(tmp_path):
    run = tmp_path / "ours_s3"
    argv = sp.ours_argv("Breakout", 5000, 3, run)
    assert argv[:2] == ["--config", str(sp.ROOT / "configs" / "atari_a2c.yaml")]
    for item in [
        "env.tasks=[Breakout]",
        "env.num_envs_per_task=16",
        "env.atari.repeat_action_probability=0",
        "env.atari.full_action_space=false",
        "env.atari.terminal_on_life_loss=true",
        "total_steps=5000",
        "seed=3",
        "torch_threads=1",
        f"run_dir={run}",
    ]:
        assert item in argv
    run.mkdir()
    assert sp.ours_argv("Breakout", 5000, 3, run) == [*argv]  # empty: start afresh
    (run / "config.yaml").write_text("seed: 3\n")
    assert sp.ours_argv("Breakout", 5000, 3, run) == ["--resume", str(run)]


def test_report_by_hand():
    sides = {
        "ours": {0: np.array([[10, 100.0], [60, 200.0]]), 1: np.array([[20, 300.0], [90, 100.0]])},
        "sb3": {0: np.array([[30, 100.0], [70, 150.0]])},
    }
    text, data = sp.report(sides, 50)
    # bins end where the shortest run's last episode does (60): [0, 50), [50, 100]
    np.testing.assert_allclose(data["edges"], [0.0, 50.0, 100.0])
    np.testing.assert_allclose(data["ours"], [[100.0, 200.0], [300.0, 100.0]])
    assert text.splitlines()[2:] == [
        "| 0-50 | 200.0 (100.0-300.0) | 100.0 | 2.00 |",
        "| 50-100 | 150.0 (100.0-200.0) | 150.0 | 1.00 |",
    ]
    assert text.splitlines()[0].startswith("| steps | ours (2 seeds) | SB3 A2C (1 seeds) |")


def test_report_with_sb3_on_our_env_by_hand():
    sides = {
        "ours": {0: np.array([[10, 100.0], [60, 200.0], [150, 900.0]])},  # 150: past every bin
        "sb3": {0: np.array([[30, 100.0], [70, 150.0]])},
        sp.OUR_ENV: {0: np.array([[5, 80.0], [55, 40.0]]), 2: np.array([[20, 20.0], [99, 60.0]])},
    }
    text, data = sp.report(sides, 50)
    assert text.splitlines()[0].endswith("| ours / SB3 | SB3 A2C on our env (2 seeds) |")
    assert text.splitlines()[2:] == [
        "| 0-50 | 100.0 | 100.0 | 1.00 | 50.0 (20.0-80.0) |",
        "| 50-100 | 200.0 | 150.0 | 1.33 | 50.0 (40.0-60.0) |",
    ]
    np.testing.assert_allclose(data[sp.OUR_ENV], [[80.0, 40.0], [20.0, 60.0]])


def test_from_dir_reports_and_draws(tmp_path, capsys):
    write_ours(tmp_path / "ours_s0", [(10, 100.0), (60, 200.0)])
    write_ours(tmp_path / "ours_s1", [(10, 5.0)], finished=False)  # unfinished: not read
    write_sb3(tmp_path / "sb3_s0.json", [[30, 50.0], [70, 100.0]])
    png = tmp_path / "fig.png"
    assert sp.main(["--from-dir", str(tmp_path), "--bin", "50", "--png", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "| 0-50 | 100.0 | 50.0 | 2.00 |" in out and "| 50-100 | 200.0 | 100.0 | 2.00 |" in out
    assert png.stat().st_size > 0


def test_run_all_starts_only_what_is_missing(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, cwd):
        calls.append(cmd[1:])
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(sp.subprocess, "run", fake_run)
    write_sb3(tmp_path / "sb3_s0.json", [[1, 1.0]])
    write_ours(tmp_path / "ours_s0", [(1, 1.0)])
    write_ours(tmp_path / "ours_s1", [(1, 1.0)], finished=False)
    sp.run_all("SpaceInvaders", 1000, [0, 1], tmp_path, workers=2)
    assert sorted(c[0].rsplit("/", 1)[-1] for c in calls) == ["sb3_parity.py", "train.py"]
    sb3 = next(c for c in calls if c[0].endswith("sb3_parity.py"))
    out = str(tmp_path / "sb3_s1.json")
    assert sb3[1:] == ["--sb3-run", "SpaceInvadersNoFrameskip-v4", "1000", "1", out]
    ours = next(c for c in calls if c[0].endswith("train.py"))
    assert ours[1:] == ["--resume", str(tmp_path / "ours_s1")]

    calls.clear()
    sp.run_all("SpaceInvaders", 1000, [0], tmp_path, workers=1, our_env=True)
    out = str(tmp_path / "sb3_our_env_s0.json")  # the only run of seed 0 not yet done
    env_id = "SpaceInvadersNoFrameskip-v4"
    assert calls == [
        [sp.__file__, "--sb3-run", env_id, "1000", "0", out, "--our-env", "SpaceInvaders"]
    ]

    monkeypatch.setattr(sp.subprocess, "run", lambda cmd, cwd: subprocess.CompletedProcess(cmd, 3))
    with pytest.raises(RuntimeError, match="exited with 3"):
        sp.run_all("SpaceInvaders", 1000, [2], tmp_path, workers=1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give --out DIR"),
        (["--out", "A", "--from-dir", "B"], "give --out DIR"),
        (["--from-dir", "{tmp}/none"], "needs finished runs of both sides"),
        (["--out", "{tmp}/new", "--game", "Pongg"], "unknown Atari game 'Pongg'"),
        (["--out", "{tmp}/new", "--seeds", "-1"], "--seeds: must be >= 0"),
        (["--out", "{tmp}/new", "--steps", "0"], "--steps: must be an integer >= 1"),
    ],
)
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        code = sp.main(argv)
    except SystemExit as e:
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "new").exists()


def test_runs_without_episodes_are_named(tmp_path, capsys):
    write_ours(tmp_path / "ours_s0", [])
    write_sb3(tmp_path / "sb3_s0.json", [[1, 1.0]])
    assert sp.main(["--from-dir", str(tmp_path)]) == 2
    assert "finished no episode; train for more --steps" in capsys.readouterr().err


@pytest.mark.atari
def test_sb3_side_runs_and_writes_its_episodes(tmp_path, monkeypatch):
    """SB3's zoo A2C through the real APIs, for two updates of 16 envs (no episode ends), with
    the zoo's hyperparameters and optimiser."""
    import stable_baselines3
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

    built = []

    class Recorded(stable_baselines3.A2C):
        def __init__(self, *args, **kwargs):
            built.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(stable_baselines3, "A2C", Recorded)
    out = tmp_path / "sb3_s0.json"
    sp.sb3_run("PongNoFrameskip-v4", 160, 0, out)
    data = json.loads(out.read_text())
    assert data == {"env_id": "PongNoFrameskip-v4", "steps": 160, "episodes": []}
    assert [p.name for p in tmp_path.iterdir()] == ["sb3_s0.json"]
    (kwargs,) = built
    zoo = {"n_steps": 5, "learning_rate": 7e-4, "ent_coef": 0.01, "vf_coef": 0.25, "seed": 0}
    assert {k: kwargs[k] for k in zoo} == zoo
    assert kwargs["policy_kwargs"] == {
        "optimizer_class": RMSpropTFLike,
        "optimizer_kwargs": {"eps": 1e-5},
    }


def test_our_env_behind_sb3s_interface(monkeypatch):
    """The VecEnv SB3 trains on is ours with the preset's settings and SB3's protocol; episode
    ends become SB3's dones and infos, whole games its episode list."""
    from envs.base import EpisodeStat, StepResult

    made = {}

    class Scripted:
        num_envs = 2
        single_observation_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
        single_action_space = gym.spaces.Discrete(6)

        def reset(self, seed=None):
            made["seed"] = seed
            return np.zeros((2, 4, 84, 84), np.uint8)

        def step_async(self, actions):
            made["actions"] = actions

        def step_wait(self):
            obs = np.ones((2, 4, 84, 84), np.uint8)
            final = obs.copy()
            final[1] = 7
            return StepResult(
                obs,
                np.array([1.0, -1.0], np.float32),
                np.array([True, False]),
                np.array([False, True]),
                final,
                [EpisodeStat(0, 250.0, 900, 0)],
            )

    def make(suite, tasks, num_envs_per_task, **kwargs):
        made.update(suite=suite, tasks=tasks, envs=num_envs_per_task, **kwargs)
        return Scripted()

    monkeypatch.setattr("envs.factory.make_multitask_env", make)
    env = sp.our_env_for_sb3("SpaceInvaders", 5)
    assert made["suite"] == "atari" and made["tasks"] == ["SpaceInvaders"] and made["envs"] == 16
    assert made["repeat_action_probability"] == 0 and made["terminal_on_life_loss"] is True
    assert made["full_action_space"] is False and made["clip_rewards"] is True
    assert env.reset().shape == (2, 4, 84, 84) and made["seed"] == 5
    env.step_async(np.array([[3], [4]]))  # SB3 may hand actions as a column
    obs, reward, done, infos = env.step_wait()
    np.testing.assert_array_equal(made["actions"], [3, 4])
    np.testing.assert_array_equal(done, [True, True])
    np.testing.assert_array_equal(reward, [1.0, -1.0])
    assert obs.max() == 1  # the next step's frames (the reset's after an end)
    assert infos[0]["TimeLimit.truncated"] is False and infos[1]["TimeLimit.truncated"] is True
    assert infos[1]["terminal_observation"].max() == 7  # the last frame, not the reset's
    assert env.episodes == [(2, 250.0)]


def test_worker_mode_passes_our_env(monkeypatch):
    got = []
    monkeypatch.setattr(sp, "sb3_run", lambda *a: got.append(a))
    argv = ["--sb3-run", "PongNoFrameskip-v4", "160", "1", "o.json"]
    assert sp.main(argv) == 0 and sp.main([*argv, "--our-env", "Pong"]) == 0
    assert got == [
        ("PongNoFrameskip-v4", 160, 1, Path("o.json"), None),
        ("PongNoFrameskip-v4", 160, 1, Path("o.json"), "Pong"),
    ]


@pytest.mark.atari
def test_sb3_on_our_env_runs_and_writes_its_episodes(tmp_path):
    """SB3's A2C on our real env for two updates of 16 envs (no game ends in 10 steps)."""
    out = tmp_path / "sb3_our_env_s0.json"
    sp.sb3_run("SpaceInvadersNoFrameskip-v4", 160, 0, out, our_env="SpaceInvaders")
    data = json.loads(out.read_text())
    assert data == {"env_id": "SpaceInvadersNoFrameskip-v4", "steps": 160, "episodes": []}
