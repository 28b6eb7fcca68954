"""Divergence guard, env worker restarts and interrupted checkpoint writes."""

import copy
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from relkit import COMMON, ROOT, SUITES, make_cfg, snapshot

import train
from agents.a2c import A2CAgent
from agents.checkpoint import load_checkpoint, save_checkpoint, save_rotating
from agents.config import ConfigError
from agents.signals import DivergenceError
from envs.workers import WorkerVecEnv


def _poison(monkeypatch, bad_updates: set[int], kind: str = "loss") -> list[int]:
    """Make A2C's losses non-finite (value or gradient) on the given 1-based update calls."""
    orig, calls = A2CAgent.task_losses, [0]

    def task_losses(self, rollout):
        losses, terms = orig(self, rollout)
        calls[0] += 1
        if calls[0] in bad_updates:
            if kind == "loss":
                losses = losses * float("nan")
            else:  # finite value, NaN gradient: d sqrt(x)/dx at 0 is inf, times 0 -> nan
                p = next(self.parameters())
                losses = losses + torch.sqrt((p - p.detach()).sum()) * 0.0
        return losses, terms

    monkeypatch.setattr(A2CAgent, "task_losses", task_losses)
    return calls


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_non_finite_updates_are_skipped_and_counted(tmp_path, monkeypatch, kind):
    _poison(monkeypatch, {3, 4, 9}, kind)
    cfg = make_cfg("gridworld", tmp_path / "run")
    runner = train.build(cfg, tmp_path / "run")
    params = []
    orig = runner.train_step

    def train_step():
        out = orig()
        params.append([p.detach().clone() for p in runner.agent.parameters()])
        return out

    runner.train_step = train_step
    runner.run()
    runner.env.close()
    assert runner.nonfinite_total == 3 and runner.nonfinite_streak == 0
    for u in (3, 4, 9):  # a skipped update leaves every parameter as it was
        assert all(torch.equal(a, b) for a, b in zip(params[u - 2], params[u - 1]))
    assert not all(torch.equal(a, b) for a, b in zip(params[0], params[1]))
    assert all(torch.isfinite(p).all() for p in runner.agent.parameters())
    records = runner.loss_records()
    assert math.isnan(records[2]["losses/total"]) == (kind == "loss")
    # a non-finite loss reaches no weighting: its weights are logged NaN, not made up
    weights = [v for k, v in records[2].items() if k.startswith("weights/")]
    assert weights and all(math.isnan(w) == (kind == "loss") for w in weights)


def test_a_run_ending_inside_a_streak_of_skipped_updates_says_so(tmp_path, monkeypatch, capsys):
    # 30 updates, the last 5 non-finite: below max_nonfinite_updates (10), so the run ends with
    # exit 0 and the parameters from before them; it said so only at the streak's start
    _poison(monkeypatch, set(range(26, 31)))
    runner = train.build(make_cfg("gridworld", tmp_path / "run"), tmp_path / "run")
    runner.run()
    runner.env.close()
    assert runner.update == 30 and runner.nonfinite_streak == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "warning: non-finite loss or gradient at step 1040; update skipped (1 so far)",
        "warning: the run's last 5 updates were non-finite and skipped, so it ended with the "
        "parameters from before them; lower agent.lr or agent.max_grad_norm",
    ]


def test_a_run_whose_last_update_alone_was_skipped_says_so(tmp_path, monkeypatch, capsys):
    runner = train.build(
        make_cfg("gridworld", tmp_path / "run", "total_steps=48"), tmp_path / "run"
    )
    last = runner.num_updates()
    _poison(monkeypatch, {last})
    runner.run()
    runner.env.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert runner.update == last and err[-1] == (
        "warning: the run's last 1 updates were non-finite and skipped, so it ended with the "
        "parameters from before them; lower agent.lr or agent.max_grad_norm"
    )


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    _poison(monkeypatch, set(range(10, 100)))
    run_dir = tmp_path / "run"
    cfg = make_cfg("gridworld", run_dir, "max_nonfinite_updates=4", "checkpoint_interval=100")
    runner = train.build(cfg, run_dir)
    with pytest.raises(DivergenceError, match="4 non-finite updates in a row"):
        runner.run()
    runner.env.close()
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["counters"]["update"] == 9  # the last update before the streak
    assert state["counters"]["nonfinite_streak"] == 0


def test_divergence_exit_code_via_cli(tmp_path, monkeypatch, capsys):
    _poison(monkeypatch, set(range(2, 100)))
    run_dir = tmp_path / "run"
    name, over = SUITES["gridworld"]
    args = ["--config", str(ROOT / "configs" / name), *over, *COMMON, f"run_dir={run_dir}"]
    code = train.main([*args, "max_nonfinite_updates=3"])
    err = capsys.readouterr().err
    assert code == 3
    assert "error: training diverged: 3 non-finite updates in a row" in err
    assert "Traceback" not in err


def test_killed_worker_is_restarted_and_the_run_continues(tmp_path, capsys):
    cfg = make_cfg("minatar", tmp_path / "run", "env.workers=true")
    runner = train.build(cfg, tmp_path / "run")
    assert isinstance(runner.env, WorkerVecEnv)
    orig, killed = runner.train_step, []

    def train_step():
        out = orig()
        if runner.update == 2:
            pid = runner.env._procs[1].pid
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        return out

    runner.train_step = train_step
    summary = runner.run()
    runner.env.close()
    assert killed and runner.env.restarts == 1 and runner.env.restart_count == [0, 1]
    assert summary["total_steps"] == runner.global_step >= 600
    err = capsys.readouterr().err
    assert "env worker for task 'freeway' died (exit code -9)" in err
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["env"]["state"]


def test_worker_death_and_raise_truncate_only_that_task():
    env = WorkerVecEnv("minatar", ["breakout", "freeway"], 2, {}, seed=5)
    ref = WorkerVecEnv("minatar", ["breakout", "freeway"], 2, {}, seed=5)
    try:
        obs, ref_obs = env.reset(seed=5), ref.reset(seed=5)
        np.testing.assert_array_equal(obs, ref_obs)
        a = np.array([1, 2, 3, 4])
        env.kill_worker(0)
        res, want = env.step(a), ref.step(a)
        assert res.truncated[:2].all() and not res.terminated[:2].any()
        np.testing.assert_array_equal(res.final_obs[:2], obs[:2])
        np.testing.assert_array_equal(res.obs[2:], want.obs[2:])  # other task unaffected
        env.inject_fault(1)
        res = env.step(a)
        assert res.truncated[2:].all() and env.restarts == 2
        assert [e.split(";")[0] for e in env.drain_events()] == [
            "env worker for task 'breakout' died (exit code -9)",
            "env worker for task 'freeway' raised RuntimeError: injected fault",
        ]
        env.step(a)  # both restarted workers step normally
    finally:
        env.close()
        ref.close()


def test_worker_episodes_fault_final_obs_and_restart_seed_per_task():
    from envs import make_multitask_env

    kwargs = {"map": "corridor", "max_episode_steps": 2}
    env = WorkerVecEnv("gridworld", ["0", "1"], 2, kwargs, seed=0)
    ref = make_multitask_env("gridworld", ["0", "1"], 2, **kwargs)
    try:
        obs0 = env.reset(seed=0)
        np.testing.assert_array_equal(obs0, ref.reset(seed=0))
        a = np.array([3, 3, 2, 2])  # away from each task's goal: nobody terminates
        for _ in range(2):
            res, want = env.step(a), ref.step(a)
            np.testing.assert_array_equal(res.obs, want.obs)
            np.testing.assert_array_equal(res.final_obs, want.final_obs)
            # EpisodeStat task and slot are global indices, as in-process
            assert res.episodes == want.episodes
        assert [(e.task, e.slot) for e in res.episodes] == [(0, 0), (0, 1), (1, 2), (1, 3)]
        assert not np.array_equal(res.final_obs, res.obs)  # truncated: next episode started
        last = env.step(np.array([2, 2, 3, 3])).obs  # towards the goals (t=1: no truncation)
        assert not np.array_equal(last[2:], res.obs[2:]) and not np.array_equal(last, obs0)
        env.inject_fault(1)
        res = env.step(a)
        # the faulted task's final_obs is the observation its last action was taken in
        np.testing.assert_array_equal(res.final_obs[2:], last[2:])
        env.kill_worker(1)
        res = env.step(a)
        (event,) = env.drain_events()[-1:]
        seed = 0 + 1000 * 1 + 2 * 1_000_000  # task 1, its 2nd restart
        assert f"restarted with seed {seed}," in event
        one = make_multitask_env("gridworld", ["1"], 2, **kwargs)
        np.testing.assert_array_equal(res.obs[2:], one.reset(seed=seed))
    finally:
        env.close()


@pytest.mark.parametrize(
    "seed",
    [
        2**31 - 2**20 - 1,  # the largest seed the config accepts
        2**31 - 500 - 2_000_000,  # its 2nd restart seed, taken modulo 2**31, was 2**31 - 500
    ],
)
def test_restart_seeds_stay_below_2_31_for_large_allowed_seeds(seed):
    # base + 1000k + 1e6 * restarts overflowed the native ALE's C int at the second restart;
    # then, wrapped modulo 2**31, it could land so close below 2**31 that the slot seeds
    # (restart seed + env index, up to 999) overflowed it
    env = WorkerVecEnv("minatar", ["breakout"], 1, {}, seed=seed)
    try:
        env.reset(seed=seed)
        seeds = []
        for _ in range(2):
            env.kill_worker(0)
            env.step(np.zeros(1, np.int64))
            (event,) = env.drain_events()
            seeds.append(int(event.split("restarted with seed ")[1].split(",")[0]))
        from agents.config_schema import SEED_LIMIT as schema_limit
        from envs.base import SEED_LIMIT as wrap  # the run seeds' range, as eval/resume wrap

        assert wrap == schema_limit == 2**31 - 2**20
        assert seeds == [(seed + 1_000_000) % wrap, (seed + 2_000_000) % wrap]
        # a restart seed just below 2**31 left no room for the slot seeds (+ env index)
        assert all(0 <= s + 999 < 2**31 for s in seeds)
    finally:
        env.close()


def test_worker_step_protocol_errors_match_in_process(monkeypatch):
    # step_wait without step_async waited REPLY_TIMEOUT (300 s) per task, then restarted every
    # worker; a second step_async queued a reply that answered the next call (reset crashed)
    from envs import EnvError, make_multitask_env, workers

    monkeypatch.setattr(workers, "REPLY_TIMEOUT", 2.0)
    env = WorkerVecEnv("gridworld", ["0", "1"], 2, {"map": "corridor"}, seed=0)
    ref = make_multitask_env("gridworld", ["0", "1"], 2, map="corridor")
    try:
        a = np.array([3, 2, 2, 3])
        env.reset(seed=1)
        with pytest.raises(EnvError, match="without step_async"):
            env.step_wait()
        env.step_async(a)
        with pytest.raises(EnvError, match="already pending; call step_wait"):
            env.step_async(a)
        with pytest.raises(EnvError, match="a step is pending"):
            env.get_state()
        np.testing.assert_array_equal(env.reset(seed=1), ref.reset(seed=1))  # drops the step
        for _ in range(3):
            res, want = env.step(a), ref.step(a)
            np.testing.assert_array_equal(res.obs, want.obs)
            assert res.episodes == want.episodes
        assert env.restarts == 0
    finally:
        env.close()
    env.close()
    for use in (lambda: env.reset(seed=0), lambda: env.step(a)):
        with pytest.raises(EnvError, match="this env is closed"):
            use()


def _state(value: float) -> dict:
    state = {"agent": {"w": torch.full((3,), value)}, "config": {}}
    state.update(version=1, agent_name="x", optimizers=[], weighting={}, counters={})
    return state


def test_interrupted_checkpoint_write_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint(_state(1.0), path)
    before = snapshot(path.parent)

    def boom(fd):
        raise KeyboardInterrupt  # a second Ctrl-C in the middle of the write

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_state(0.0), path)
    monkeypatch.undo()
    assert snapshot(path.parent) == before  # no temp file left, last.pt untouched
    assert torch.equal(load_checkpoint(path)["agent"]["w"], torch.ones(3))
    # a string path reads the same file (docs/extending.md's recipe passed one: AttributeError)
    assert torch.equal(load_checkpoint(str(path))["agent"]["w"], torch.ones(3))
    with pytest.raises(ConfigError, match="not found"):
        load_checkpoint(str(path.parent / "missing.pt"))


def test_rotating_checkpoints_copy_last_pt_where_hard_links_fail(tmp_path, monkeypatch):
    # a file system without hard links (FAT, some network mounts): last.pt becomes a copy
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()

    def no_links(src, dst):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    for step in (10, 20, 30):
        save_rotating(_state(step), ckpt_dir, step, keep=2)
    last, newest = ckpt_dir / "last.pt", ckpt_dir / "step_30.pt"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.pt", "step_20.pt", "step_30.pt"]
    assert last.read_bytes() == newest.read_bytes() and last.stat().st_nlink == 1
    assert torch.equal(load_checkpoint(last)["agent"]["w"], torch.full((3,), 30.0))


def test_a_failed_last_pt_swap_leaves_the_old_one_and_no_temporary(tmp_path, monkeypatch):
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    save_rotating(_state(1.0), ckpt_dir, 1, keep=3)

    replace = os.replace

    def full_disk(src, dst):  # step_2.pt is written; putting last.pt in place fails
        if Path(dst).name == "last.pt":
            raise OSError(28, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_rotating(_state(2.0), ckpt_dir, 2, keep=3)
    monkeypatch.undo()
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.pt", "step_1.pt", "step_2.pt"]
    assert torch.equal(load_checkpoint(ckpt_dir / "last.pt")["agent"]["w"], torch.ones(3))


def test_sigterm_checkpoints_and_exits_143(tmp_path, capsys, monkeypatch):
    name, over = SUITES["gridworld"]
    orig = A2CAgent.task_losses

    def task_losses(self, rollout):
        os.kill(os.getpid(), signal.SIGTERM)
        return orig(self, rollout)

    monkeypatch.setattr(A2CAgent, "task_losses", task_losses)
    run_dir = tmp_path / "run"
    code = train.main(
        ["--config", str(ROOT / "configs" / name), *over, *COMMON, f"run_dir={run_dir}"]
    )
    assert code == 143
    err = capsys.readouterr().err
    assert "--resume" in err and "Traceback" not in err
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["counters"]["update"] == 1


def test_signal_while_no_checkpoint_can_be_written_says_so(tmp_path, capsys, monkeypatch):
    # it used to print "checkpoint written" although the checkpoint had been skipped
    from envs.gridworld import GridworldVecEnv

    name, over = SUITES["gridworld"]
    orig, calls = A2CAgent.task_losses, [0]

    def task_losses(self, rollout):
        calls[0] += 1
        if calls[0] == 3:
            monkeypatch.setattr(GridworldVecEnv, "healthy", lambda self: False, raising=False)
            os.kill(os.getpid(), signal.SIGTERM)
        return orig(self, rollout)

    monkeypatch.setattr(A2CAgent, "task_losses", task_losses)
    run_dir = tmp_path / "run"
    args = ["--config", str(ROOT / "configs" / name), *over, *COMMON, "checkpoint_interval=1"]
    assert train.main([*args, f"run_dir={run_dir}"]) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "interrupted by SIGTERM at step 120; no checkpoint at this step (an env worker had died); "
        f"continue from step 80 with: python train.py --resume {run_dir}"
    )
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["counters"]["update"] == 2


def test_checkpoint_waits_for_a_dead_worker_to_be_restarted(tmp_path, capsys):
    cfg = make_cfg("minatar", tmp_path / "run", "env.workers=true", "checkpoint_interval=1")
    runner = train.build(cfg, tmp_path / "run")
    orig = runner.train_step

    def train_step():
        out = orig()
        if runner.update == 2:
            runner.env.kill_worker(0)  # dies after the update, before its checkpoint
        return out

    runner.train_step = train_step
    runner.run()
    runner.env.close()
    err = capsys.readouterr().err
    assert (
        "warning: checkpoint at step 40 skipped: an env worker died (last.pt stays at step 20)"
        in err
    )
    assert runner.env.restarts == 1
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["counters"]["update"] == runner.update


@pytest.mark.parametrize("seed", [-1, 1.5])
def test_worker_env_refuses_a_bad_seed_before_starting_workers(seed):
    from envs import EnvError

    with pytest.raises(EnvError, match="seed must be a non-negative integer or None"):
        WorkerVecEnv("gridworld", ["0"], 1, {"map": "corridor"}, seed=seed)


def test_a_worker_dying_during_set_state_is_an_env_error():
    from envs import EnvError

    env = WorkerVecEnv("gridworld", ["0", "1"], 1, {"map": "corridor"}, seed=0)
    try:
        env.reset(seed=1)
        state = env.get_state()
        env.kill_worker(1)
        with pytest.raises(EnvError, match=r"env worker for task '1' died \(exit code -9\)"):
            env.set_state(state)
    finally:
        env.close()


def test_a_skipped_update_leaves_the_weighting_methods_state_as_it_was(
    tmp_path, monkeypatch, same_state
):
    # GradNorm learns its weights (and takes its initial losses) inside backward(): a step skipped
    # for a non-finite gradient must not keep what it learned from that batch
    _poison(monkeypatch, {1}, "grad")
    cfg = make_cfg("gridworld", tmp_path / "run", "agent.weighting=gradnorm", "total_steps=48")
    runner = train.build(cfg, tmp_path / "run")
    before = copy.deepcopy(runner.weighting.state_dict())
    states = []
    orig = runner.train_step

    def train_step():
        out = orig()
        states.append(copy.deepcopy(runner.weighting.state_dict()))
        return out

    runner.train_step = train_step
    runner.run()
    runner.env.close()
    assert runner.nonfinite_total == 1 and len(states) >= 2
    assert same_state(states[0], before)
    assert not same_state(states[1], before)  # the next update learns
