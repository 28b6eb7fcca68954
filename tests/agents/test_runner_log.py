"""agents.runner: the TensorBoard scalars of a log interval (means over its pending updates)."""

import copy
import math
from types import SimpleNamespace

import torch

from agents.runner import Runner


class _Writer:
    def __init__(self):
        self.scalars = []

    def add_scalar(self, key, value, step):
        self.scalars.append((key, value, step))


def test_log_writes_the_means_of_the_pending_updates_at_the_global_step():
    writer = _Writer()
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


def test_log_without_pending_updates_or_writer_writes_nothing():
    writer = _Writer()
    runner = SimpleNamespace(writer=writer, global_step=1, update=1, nonfinite_total=0, env=None)
    Runner._log(runner, [], 1.0)
    assert writer.scalars == []
    Runner._log(SimpleNamespace(writer=None), [{"x": 1.0}], 1.0)  # no TensorBoard: no error


def test_log_means_leave_out_skipped_non_finite_updates():
    # one skipped update (NaN losses and weights) used to turn the whole interval's mean into NaN
    writer = _Writer()
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


def test_an_update_reads_its_logged_scalars_from_the_device_in_one_copy(tmp_path, device_traffic):
    # float() of every term's mean and .cpu() of every per-task term were one CUDA sync each
    # (19 per update for Distral, now 4 syncs); values and order are unchanged
    from pathlib import Path

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
    try:
        runner.collect(runner.reset())
        with device_traffic() as traffic:
            logged = runner.train_step()
    finally:
        runner.env.close()
    assert traffic.reads["float"] <= 1  # the gradient norm, already on the host
    assert traffic.reads["tolist"] == 1
    assert traffic.reads["cpu"] == 2  # the gradient norms; the regularised rewards with `done`
    losses, terms = seen[0]
    names = runner.env.task_names
    expected = {}
    for key, value in terms.items():
        expected[f"losses/{key}"] = float(value.mean())
        if value.ndim == 1:
            expected |= {f"task/{n}/{key}": v for n, v in zip(names, value.tolist(), strict=True)}
    expected["losses/total"] = float(losses.detach().sum())
    expected["losses/grad_norm"] = logged["losses/grad_norm"]
    expected |= {f"weights/{n}": 1.0 for n in names}  # equal weighting
    assert list(logged.items()) == list(expected.items())


def test_an_update_skipped_for_a_non_finite_gradient_undoes_the_weightings_step(
    tmp_path, monkeypatch
):
    # GradNorm updates its weights inside backward(); when the clipped gradient then turns out
    # non-finite the update is skipped, and what the weighting learned from the batch is undone
    from pathlib import Path

    import agents.runner as runner_module
    import train
    from agents.config import load_config

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(
        str(root / "configs" / "gridworld_a2c.yaml"),
        [
            "progress=false",
            "eval.episodes=0",
            "env.num_envs_per_task=2",
            "agent.hidden=[8]",
            "agent.weighting=gradnorm",
        ],
    )
    runner = train.build(cfg, tmp_path / "run")
    try:
        runner.collect(runner.reset())
        before = copy.deepcopy(runner.weighting.state_dict())  # weights, L_i(0), Adam's moments
        params = [p.detach().clone() for p in runner.agent.parameters()]
        runner.train_step()  # a taken step moves GradNorm's weights: the test can see a change
        assert not torch.equal(
            runner.weighting.state_dict()["task_weights"], before["task_weights"]
        )
        runner.weighting.load_state_dict(copy.deepcopy(before))
        for p, saved in zip(runner.agent.parameters(), params, strict=True):
            p.data.copy_(saved)
        monkeypatch.setattr(
            runner_module, "clip_and_check", lambda opts, max_norm: (torch.tensor(math.nan), False)
        )
        logged = runner.train_step()
    finally:
        runner.env.close()
    assert _same(runner.weighting.state_dict(), before)
    assert all(torch.equal(p, q) for p, q in zip(runner.agent.parameters(), params, strict=True))
    assert runner.nonfinite_streak == 1 and math.isnan(logged["losses/grad_norm"])


def _same(a, b) -> bool:
    """Equal nested states: tensors exactly (dtype and values), everything else by ==."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a == b
