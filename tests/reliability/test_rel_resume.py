"""Exact resume: a run interrupted anywhere and resumed equals the uninterrupted run."""

import json
import os
import signal
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relkit import (
    ROOT,
    assert_same_training,
    expect_interrupt,
    interrupt_after_update,
    make_cfg,
    resume_full,
    run_full,
    run_interrupted,
    snapshot,
)

import train
from agents.checkpoint import load_checkpoint, save_checkpoint, step_files
from agents.config import load_config
from agents.signals import Interrupted


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs per (suite, extra overrides), computed once."""
    cache = {}

    def get(suite: str, *extra: str):
        key = (suite, extra)
        if key not in cache:
            run_dir = tmp_path_factory.mktemp("ref") / "run"
            cache[key] = run_full(make_cfg(suite, run_dir, *extra))
        return cache[key]

    return get


@pytest.mark.parametrize(
    ("suite", "at_update", "at_env_step"),
    [
        ("gridworld", 3, None),  # between checkpoints (every 250 steps = 6.25 updates)
        ("gridworld", None, 37),  # in the middle of a rollout
        ("gridworld", 1, None),  # before any periodic checkpoint
        ("minatar", 2, None),
        ("minatar", None, 23),
    ],
)
def test_interrupt_anywhere_then_resume_is_exact(
    tmp_path, reference, suite, at_update, at_env_step
):
    ref = reference(suite)
    cfg = make_cfg(suite, tmp_path / "run")
    stop = run_interrupted(cfg, at_update=at_update, at_env_step=at_env_step)
    assert stop.exit_code == 130
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert 0 < state["counters"]["update"] < ref.update
    resumed = resume_full(tmp_path / "run")
    assert_same_training(ref, resumed)
    lines = [json.loads(x) for x in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert lines == ref.loss_records()
    assert resumed.episode_log == ref.episode_log
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["total_steps"] == ref.global_step


def test_twice_interrupted_distral_with_learned_weighting(tmp_path, reference):
    """Distral (two optimisers) + uncertainty weighting (own optimiser): exact after 2 stops."""
    extra = ("agent.name=distral_klent_2col", "agent.weighting=uncertainty")
    ref = reference("gridworld", *extra)
    cfg = make_cfg("gridworld", tmp_path / "run", *extra)
    run_interrupted(cfg, at_update=2)
    info = _resume_and_interrupt(tmp_path / "run", at_update=9, sig=signal.SIGTERM)
    assert info.exit_code == 143
    assert_same_training(ref, resume_full(tmp_path / "run"))
    # each session continues the run's TensorBoard timeline: the config is logged once, at step 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"tensors": 0}).Reload()
    assert [e.step for e in events.Tensors("config/text_summary")] == [0]


def _resume_and_interrupt(run_dir: Path, at_update: int, sig: int) -> Interrupted:
    """Resume ``run_dir`` and send ``sig`` to ourselves after update ``at_update``."""
    runner = train.resume(run_dir, [])
    interrupt_after_update(runner, at_update, sig)
    return expect_interrupt(runner)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # run_dir is no setting that changed
def test_resume_after_a_resume_through_another_spelling_of_the_path(tmp_path, reference):
    """A resume records the path it was given in later checkpoints while config.yaml keeps the
    original spelling; that is not a mismatch (it refused the second resume with exit 2)."""
    ref = reference("gridworld")
    run_interrupted(make_cfg("gridworld", tmp_path / "run"), at_update=2)
    _resume_and_interrupt(Path(os.path.relpath(tmp_path / "run")), 6, signal.SIGINT)
    # config.yaml as an older version left it: the first session's spelling of run_dir
    config = tmp_path / "run" / "config.yaml"
    spelled = f"run_dir: {os.path.relpath(tmp_path / 'run')}\n"
    assert spelled in config.read_text()
    config.write_text(config.read_text().replace(spelled, f"run_dir: {tmp_path / 'run'}\n"))
    assert_same_training(ref, resume_full(tmp_path / "run"))


def test_workers_resume_is_exact_and_equals_in_process(tmp_path, reference):
    ref = reference("minatar")
    cfg = make_cfg("minatar", tmp_path / "run", "env.workers=true")
    run_interrupted(cfg, at_update=3)
    resumed = resume_full(tmp_path / "run")
    assert_same_training(ref, resumed)


def test_runs_record_their_tasks_and_older_runs_without_them_resume(tmp_path, reference):
    """config.yaml and checkpoints list the tasks trained (the gridworld preset leaves
    env.tasks empty: the map's goals); a run from before this, which saved [], still resumes
    exactly and keeps its record."""
    ref = reference("gridworld")
    run_dir = tmp_path / "run"
    run_interrupted(make_cfg("gridworld", run_dir), at_update=3)
    last = run_dir / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    assert state["config"]["env"]["tasks"] == ["0", "1", "2", "3"]
    assert load_config(run_dir / "config.yaml").env.tasks == ["0", "1", "2", "3"]
    state["config"]["env"]["tasks"] = []  # as an older version wrote them
    last.unlink()  # a hard link to step_<N>.pt: write a file of its own
    save_checkpoint(state, last)
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(
        text.replace("tasks:\n  - '0'\n  - '1'\n  - '2'\n  - '3'", "tasks: []")
    )
    assert load_config(run_dir / "config.yaml").env.tasks == []
    assert_same_training(ref, resume_full(run_dir))
    assert load_config(run_dir / "config.yaml").env.tasks == []


MAP = "#######\n#0...1#\n#.....#\n#2...3#\n#######\n"


@pytest.mark.parametrize("workers", ["false", "true"])
@pytest.mark.parametrize(
    "edit", [("#.....#", "#..#..#"), ("#0...1#", "#1...0#"), ("#.....#", "#.S...#")]
)
def test_resume_refuses_a_map_file_edited_since(tmp_path, capsys, workers, edit):
    """A map file changed in place (same size: a wall, the goals or a start cell) would resume
    silently under the old positions: one error line, exit 2, nothing in the run changed."""
    path = tmp_path / "rooms.txt"
    path.write_text(MAP)
    run_dir = tmp_path / "run"
    extra = (f"env.gridworld.map={path}", f"env.workers={workers}")
    run_interrupted(make_cfg("gridworld", run_dir, *extra), at_update=2)
    path.write_text(MAP.replace(*edit, 1))
    before = snapshot(run_dir)
    capsys.readouterr()
    assert train.main(["--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: checkpoint does not fit this run"), err
    assert "map 'rooms' changed since this snapshot" in err[0], err
    assert err[0].endswith("restore the map file or start a new run)"), err
    assert snapshot(run_dir) == before
    path.write_text(MAP)  # put back, it resumes
    assert train.main(["--resume", str(run_dir)]) == 0


@pytest.mark.parametrize("damage", ["later_records", "last_newline_lost"])
def test_resume_cuts_the_loss_log_to_the_checkpoint(tmp_path, reference, damage):
    """A killed session logs updates after its last checkpoint (another timeline) and may die
    mid-line: resume keeps exactly the checkpoint's records, then appends, as the reference."""
    ref = reference("gridworld")
    run_interrupted(make_cfg("gridworld", tmp_path / "run"), at_update=3)
    log = tmp_path / "run" / "losses.jsonl"
    kept = log.read_bytes()
    assert kept.count(b"\n") == 3
    if damage == "later_records":
        log.write_bytes(kept + b'{"losses/total": 1.0}\n{"losses/total": 2.0}\n{"losses/to')
    else:
        log.write_bytes(kept[:-1])
    resumed = resume_full(tmp_path / "run")
    assert log.read_bytes() == (ref.run_dir / "losses.jsonl").read_bytes()
    assert resumed.loss_records() == ref.loss_records()


def test_checkpoints_rotate_and_hold_the_resolved_config(tmp_path):
    cfg = make_cfg("gridworld", tmp_path / "run", "keep_checkpoints=2", "checkpoint_interval=100")
    runner = run_full(cfg)
    files = step_files(tmp_path / "run" / "checkpoints")
    assert len(files) == 2 and files[-1].name == f"step_{runner.global_step}.pt"
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["config"]["keep_checkpoints"] == 2
    assert last["counters"]["global_step"] == runner.global_step
    assert set(last["rng"]) >= {"torch", "numpy", "python"}
    for k, v in runner.agent.state_dict().items():
        assert torch.equal(last["agent"][k], v)


def test_resume_of_a_finished_run_only_re_evaluates(tmp_path, reference):
    ref = reference("gridworld")
    run_full(make_cfg("gridworld", tmp_path / "run"))
    losses = (tmp_path / "run" / "losses.jsonl").read_text()
    ckpts = tmp_path / "run" / "checkpoints"
    kept = [p.name for p in step_files(ckpts)]
    (ckpts / f"step_{ref.global_step + 8}.pt").write_bytes(b"")  # a later session's timeline
    again = resume_full(tmp_path / "run", ["eval.episodes=2"])
    assert_same_training(ref, again)
    # the later file is gone; the checkpoint resumed from, step_<total>.pt, is kept
    assert [p.name for p in step_files(ckpts)] == kept and kept[-1] == f"step_{ref.global_step}.pt"
    assert (tmp_path / "run" / "losses.jsonl").read_text() == losses  # no update was added
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["total_steps"] == ref.global_step
    assert [s["episodes"] for s in summary["tasks"].values()] == [2] * 4  # evaluated anew
    # config.yaml says which eval settings the summary beside it used, and still resumes
    assert load_config(tmp_path / "run" / "config.yaml").eval.episodes == 2
    again = resume_full(tmp_path / "run", ["eval.episodes=1"])
    assert load_config(tmp_path / "run" / "config.yaml").eval.episodes == 1


def test_checkpoint_from_before_a_new_config_key_resumes(tmp_path, reference):
    """A run saved by an older version (its config lacks a key added since) resumes exactly."""
    ref = reference("gridworld")
    cfg = make_cfg("gridworld", tmp_path / "run")
    run_interrupted(cfg, at_update=3)
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    del state["config"]["agent"]["replay_forward"]  # added after the first checkpoints
    save_checkpoint(state, path)
    config_yaml = tmp_path / "run" / "config.yaml"
    lines = config_yaml.read_text().splitlines(keepends=True)
    config_yaml.write_text("".join(x for x in lines if "replay_forward" not in x))
    assert_same_training(ref, resume_full(tmp_path / "run"))


def test_time_based_checkpoints(tmp_path, monkeypatch):
    import agents.runner as runner_mod

    clock = iter(range(0, 10_000, 7)).__next__  # 7 "seconds" per call
    monkeypatch.setattr(runner_mod.time, "monotonic", lambda: float(clock()))
    cfg = make_cfg(
        "gridworld", tmp_path / "run", "checkpoint_interval=100000", "checkpoint_minutes=0.1"
    )
    run_full(cfg)
    assert len(step_files(tmp_path / "run" / "checkpoints")) == 3  # keep_checkpoints default


@pytest.mark.atari
@pytest.mark.slow
def test_atari_resume_resets_the_emulators_and_finishes(tmp_path):
    """ALE has no snapshot in the vector env: model, optimiser and RNGs resume, envs reset."""
    from agents.config import load_config

    args = ["total_steps=200", "env.tasks=[Pong,Breakout]", "env.num_envs_per_task=1"]
    cfg = load_config(
        str(ROOT / "configs" / "atari_a2c.yaml"),
        [*args, "eval.episodes=0", "progress=false", f"run_dir={tmp_path / 'run'}"],
    )
    run_interrupted(cfg, at_update=2)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["env"]["state"] is None
    runner = train.resume(tmp_path / "run", [])
    assert not runner.env_restored and runner.update == 2
    runner.run()
    runner.env.close()
    assert runner.global_step >= 200 and len(runner.loss_records()) == runner.update


@pytest.mark.atari
def test_atari_resume_of_a_large_seed_late_in_the_run(tmp_path):
    """The emulators restart with seed + global_step, wrapped like a run seed: unwrapped, the
    largest allowed seed plus ~1M steps put the slot seeds past ALE's C int, and resuming such a
    valid run failed with exit 2 ("checkpoint does not fit this run: loop state ...")."""
    from agents.config_schema import SEED_LIMIT

    cfg = load_config(
        str(ROOT / "configs" / "atari_a2c.yaml"),
        [
            "env.tasks=[Pong,Breakout]",
            "env.num_envs_per_task=1",
            f"seed={SEED_LIMIT - 1}",
            "progress=false",
            f"run_dir={tmp_path / 'run'}",
        ],
    )
    runner = train.build(cfg, tmp_path / "run")
    try:
        state = runner.state_dict()  # before any reset: no env snapshot, as Atari's
        state["counters"]["global_step"] = 2_000_000
        seeds, reset = [], runner.reset
        runner.reset = lambda seed=None: seeds.append(seed) or reset(seed=seed)
        runner.load_state_dict(state)
        assert not runner.env_restored and runner.global_step == 2_000_000
        assert seeds == [1_999_999]  # seed + global_step, wrapped into [0, SEED_LIMIT)
        assert tuple(runner.obs.shape[:2]) == (2, 1)
    finally:
        runner.env.close()


def test_deterministic_flag_is_bit_identical_on_cpu(tmp_path, reference):
    """``deterministic=true`` changes no CPU kernel here: same losses as the default run."""
    try:
        runner = run_full(make_cfg("gridworld", tmp_path / "run", "deterministic=true"))
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    assert runner.loss_records() == reference("gridworld").loss_records()


@settings(
    max_examples=int(os.environ.get("MTRL_RESUME_EXAMPLES", "8")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(suite=st.sampled_from(["gridworld", "minatar"]), frac=st.floats(0.0, 0.97))
def test_interrupt_at_a_random_env_step_is_exact(reference, suite, frac):
    """Property: SIGINT at any env step of the run (drawn by hypothesis) resumes exactly."""
    ref = reference(suite)
    steps = ref.update * ref.cfg.agent.n_steps
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_cfg(suite, Path(tmp) / "run")
        run_interrupted(cfg, at_env_step=1 + int(frac * steps))
        assert_same_training(ref, resume_full(Path(tmp) / "run"))
