"""bench/profile_update.py's summary arithmetic, on a fake runner and a fake clock (no Atari)."""

from types import SimpleNamespace

import pytest
import torch


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def spend(self, ms):
        self.t += ms / 1000


def fake_runner(clock):
    agent = SimpleNamespace(
        step=lambda: clock.spend(2.0),
        task_losses=lambda rollout: (clock.spend(3.0), None),
        shared_parameters=lambda: [],
    )
    env = SimpleNamespace(
        step_async=lambda: clock.spend(0.5),
        step_wait=lambda: clock.spend(1.5),
        num_envs=16,
        close=lambda: None,
    )
    runner = SimpleNamespace(agent=agent, env=env, rollout=None, reset=lambda: "obs")

    def collect(obs):  # acting 2 ms + env 2 ms + 1 ms of its own
        runner.agent.step()
        runner.env.step_async()
        runner.env.step_wait()
        clock.spend(1.0)
        return obs

    runner.collect = collect
    runner.weighting_backward = lambda losses: clock.spend(4.0)
    opt = SimpleNamespace(zero_grad=lambda set_to_none: None, step=lambda: clock.spend(0.5))
    runner.optimizers = [opt, opt]
    runner.clip_gradients = lambda: clock.spend(0.25)
    return runner


def test_profile_reports_ms_per_update_of_each_phase(monkeypatch):
    import train

    try:
        import bench.profile_update as bp
    finally:
        torch.set_flush_denormal(False)  # the script sets it on import, for itself
    clock = Clock()
    faults = iter([100, 900])
    monkeypatch.setattr(bp, "time", SimpleNamespace(perf_counter=clock))
    monkeypatch.setattr(
        bp,
        "resource",
        SimpleNamespace(RUSAGE_SELF=0, getrusage=lambda _: SimpleNamespace(ru_minflt=next(faults))),
    )
    monkeypatch.setattr(train, "build", lambda cfg, run_dir: fake_runner(clock))
    out = bp.profile("a2c_multitask", 4, ["agent.n_steps=5"], torch_rmsprop=False)
    # the 5 warm-up updates are not counted; total 5 + 3 + 4 + 0.25 + 1 = 13.25 ms per update
    expected = {
        "collect": 5.0,
        "losses": 3.0,
        "backward": 4.0,
        "clip": 0.25,
        "step": 1.0,
        "acting": 2.0,
        "env": 2.0,
        "collect other": 1.0,
        "total": 13.25,
        "steps/s": 4 * 5 * 16 / (4 * 13.25e-3),  # frames (updates x n_steps x envs) / seconds
        "page faults": 200.0,
    }
    assert out == pytest.approx(expected)


def test_plain_task_gradients_take_the_opted_out_path(monkeypatch):
    """--plain-task-gradients: the runner's agent opts out of agents.blocked, as an agent whose
    losses mix tasks would, so the backward phase times one backward per task."""
    import train

    try:
        import bench.profile_update as bp
    finally:
        torch.set_flush_denormal(False)
    clock = Clock()
    built = []

    def build(cfg, run_dir):
        built.append(fake_runner(clock))
        return built[-1]

    monkeypatch.setattr(bp, "time", SimpleNamespace(perf_counter=clock))
    monkeypatch.setattr(train, "build", build)
    bp.profile("a2c_multitask", 1, [], torch_rmsprop=False, plain_task_gradients=True)
    bp.profile("a2c_multitask", 1, [], torch_rmsprop=False)
    assert built[0].agent.separable_losses is False
    assert not hasattr(built[1].agent, "separable_losses")  # left as the agent has it
