"""agents.runner: the TensorBoard scalars of a log interval (means over its pending updates)."""

from types import SimpleNamespace

from agents.runner import Runner


def test_log_writes_the_means_of_the_pending_updates_at_the_global_step(writer):
    runner = SimpleNamespace(
        writer=writer, global_step=400, update=4, nonfinite_total=2, env=SimpleNamespace(restarts=1)
    )
    pending = [{"losses/a": 1.0, "losses/b": 10.0}, {"losses/a": 3.0, "losses/b": 20.0}]
    Runner._log(runner, pending, 2.0)
    assert writer.scalars == [
        ("losses/a", 2.0, 400),
        ("losses/b", 15.0, 400),
        ("charts/sps", 200.0, 400),  # environment steps (not updates) per second
        ("charts/nonfinite_updates", 2, 400),
        ("charts/env_restarts", 1, 400),
    ]


def test_log_without_pending_updates_or_writer_writes_nothing(writer):
    runner = SimpleNamespace(writer=writer, global_step=1, update=1, nonfinite_total=0, env=None)
    Runner._log(runner, [], 1.0)
    assert writer.scalars == []
    Runner._log(SimpleNamespace(writer=None), [{"x": 1.0}], 1.0)  # no TensorBoard: no error


def test_log_means_leave_out_skipped_non_finite_updates(writer):
    # one skipped update (NaN losses and weights) used to turn the whole interval's mean into NaN
    runner = SimpleNamespace(
        writer=writer, global_step=300, update=3, nonfinite_total=1, env=SimpleNamespace()
    )
    nan, inf = float("nan"), float("inf")
    pending = [
        {"losses/a": 1.0, "weights/t": 1.0},
        {"losses/a": nan, "weights/t": inf},
        {"losses/a": 5.0, "weights/t": nan},
    ]
    Runner._log(runner, pending, 1.0)
    assert writer.scalars[:2] == [("losses/a", 3.0, 300), ("weights/t", 1.0, 300)]
    writer.scalars.clear()
    Runner._log(runner, [{"losses/a": nan}], 1.0)  # nothing finite: NaN, not an error
    key, value, _ = writer.scalars[0]
    assert key == "losses/a" and value != value


def test_an_update_reads_its_logged_scalars_from_the_device_in_one_copy(
    tmp_path, device_traffic, monkeypatch
):
    # float() of every term's mean and .cpu() of every per-task term were one CUDA sync each
    # (19 per update for Distral, now 4 syncs); values and order are unchanged
    from pathlib import Path

    import torch

    import agents.runner
    import train
    from agents.config import load_config

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(
        str(root / "configs" / "gridworld_distral.yaml"),
        ["progress=false", "eval.episodes=0", "env.num_envs_per_task=2", "agent.hidden=[8]"],
    )
    runner = train.build(cfg, tmp_path / "run")
    seen = []
    task_losses = runner.agent.task_losses
    runner.agent.task_losses = lambda ro: seen.append(task_losses(ro)) or seen[-1]
    backward = runner.weighting.backward
    weights = torch.arange(1.0, 1.0 + runner.num_tasks) / 8  # the method's, logged as they are
    runner.weighting.backward = lambda *a: backward(*a) * 0 + weights
    clip, norms = agents.runner.clip_and_check, []
    monkeypatch.setattr(
        agents.runner, "clip_and_check", lambda *a: norms.append(clip(*a)) or norms[-1]
    )
    try:
        runner.collect(runner.reset())
        with device_traffic() as traffic:
            logged = runner.train_step()
    finally:
        runner.env.close()
    assert traffic.reads["float"] == 0  # the gradient norm comes back a Python float
    assert traffic.reads["tolist"] == 2  # the gradient norms; the logged scalars
    assert traffic.reads["cpu"] == 1  # the regularised rewards with `done`
    losses, terms = seen[0]
    names = runner.env.task_names
    expected = {}
    for key, value in terms.items():
        expected[f"losses/{key}"] = float(value.mean())
        if value.ndim == 1:
            expected |= {f"task/{n}/{key}": v for n, v in zip(names, value.tolist(), strict=True)}
    expected["losses/total"] = float(losses.detach().sum())
    expected["losses/grad_norm"] = float(norms[0][0])  # the joint norm before clipping
    assert expected["losses/grad_norm"] > 0
    expected |= {f"weights/{n}": w for n, w in zip(names, weights.tolist(), strict=True)}
    assert list(logged.items()) == list(expected.items())


def test_a_resumed_writer_drops_only_the_events_after_its_checkpoint(tmp_path):
    """A new run's writer records the config at step 0; one resumed at step 40 hides what the
    stopped session logged after step 40, and keeps step 40 itself (logged before the
    checkpoint, never logged again)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from agents.config_schema import Config
    from agents.run_log import open_writer

    first = open_writer(tmp_path, Config(), None)
    for step in (20, 40, 50):
        first.add_scalar("losses/a", float(step), step)
    first.close()
    resumed = open_writer(tmp_path, Config(), 40)
    resumed.add_scalar("losses/a", 60.0, 60)
    resumed.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    assert [e.step for e in events.Scalars("losses/a")] == [20, 40, 60]
    assert [e.step for e in events.Tensors("config/text_summary")] == [0]


def test_the_loss_log_is_cut_to_the_checkpoints_records(tmp_path):
    """losses.jsonl on resume: cut to ``keep_bytes`` (0: a checkpoint before the first update),
    a last kept record missing its newline completed before new records follow."""
    from agents.run_log import open_loss_log

    path = tmp_path / "losses.jsonl"
    for keep, kept in ((0, ""), (7, '{"a":1}\n'), (8, '{"a":1}\n')):
        path.write_text('{"a":1}\n{"a":2}\n')
        with open_loss_log(path, keep) as f:
            f.write('{"a":3}\n')
        assert path.read_text() == kept + '{"a":3}\n'
    with open_loss_log(path, None) as f:  # a new run: a new file
        f.write("{}\n")
    assert path.read_text() == "{}\n"


def test_a_run_has_total_steps_rounded_up_to_whole_rollouts():
    def updates(total_steps: int) -> int:
        cfg = SimpleNamespace(total_steps=total_steps, agent=SimpleNamespace(n_steps=5))
        return Runner.num_updates(SimpleNamespace(cfg=cfg, env=SimpleNamespace(num_envs=8)))

    assert [updates(n) for n in (1, 40, 41, 80, 81)] == [1, 1, 2, 2, 3]


def test_the_progress_bar_shows_each_tasks_recent_return(tmp_path, capsys):
    import re
    from pathlib import Path

    import train
    from agents.config import load_config

    root = Path(__file__).resolve().parents[2]
    overrides = ["progress=true", "eval.episodes=0", "total_steps=320", "agent.hidden=[8]"]
    cfg = load_config(str(root / "configs" / "gridworld_a2c.yaml"), overrides)
    runner = train.build(cfg, tmp_path / "run")
    try:
        runner.run()
    finally:
        runner.env.close()
    final = capsys.readouterr().err.strip().splitlines()[-1].split("\r")[-1]
    # the last refresh: the steps, then name=mean return (or -) of every task
    assert final.startswith("100%") and re.search(r", 0=\S+ 1=\S+ 2=\S+ 3=\S+\]$", final), final
