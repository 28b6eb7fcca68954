"""Forward reuse (agents.replay): the loss pass over recorded acting activations must give the
same losses and gradients as recomputing the forward pass, and must not be used when stale."""

import pytest
import torch

from agents.config_schema import AgentConfig
from agents.factory import build_agent, names
from agents.replay import Tape, tapes
from agents.rollout import Rollout

K, E, T = 3, 2, 3
SUITES = {"atari": ((4, 84, 84), 18), "minatar": ((10, 10, 10), 6), "gridworld": ((2,), 4)}


def _setup(name: str, suite: str, k: int = K, e: int = E, t: int = T, shape=None, **cfg_kw):
    """An agent and a filled rollout (t, k, e); ``shape`` overrides the suite's obs shape."""
    torch.manual_seed(0)
    obs_shape, actions = SUITES[suite]
    shape = shape or obs_shape
    cfg = AgentConfig(name=name, **{"hidden": [16, 16], **cfg_kw})
    agent = build_agent(cfg, suite, shape, actions, k)
    dtype = torch.float32 if suite == "gridworld" else torch.uint8
    ro = Rollout(t, k, e, torch.device("cpu"), shape, dtype)
    if dtype == torch.uint8:
        ro.obs.copy_(torch.randint(0, 256 if suite == "atari" else 2, ro.obs.shape))
    else:
        ro.obs.copy_(torch.rand(ro.obs.shape))
    ro.rewards.normal_()
    ro.terminated[min(1, t - 1), 0, e - 1] = True
    ro.ep_time.copy_(torch.arange(t, dtype=torch.float32).view(t, 1, 1).expand(t, k, e))
    return agent, ro


def _collect(agent, ro: Rollout, groups: list[slice], record: bool) -> None:
    """Act like the runner: per step, each task group in turn (``t`` only when recording)."""
    steps = ro.rewards.shape[0]
    agent.begin_rollout(steps)
    torch.manual_seed(1)
    for t in range(steps):
        for g in groups:
            ro.actions[t, g] = agent.step(ro.obs[g, t], g, t if record else None)


def _losses_and_grads(agent, ro: Rollout):
    losses, _ = agent.task_losses(ro)
    agent.zero_grad(set_to_none=True)
    losses.sum().backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in agent.parameters()]
    return losses.detach(), grads


def _count_replays(monkeypatch) -> dict[str, int]:
    calls = {"get": 0}
    original = Tape.get

    def counting(self, index):
        calls["get"] += 1
        return original(self, index)

    monkeypatch.setattr(Tape, "get", counting)
    return calls


@pytest.mark.parametrize("suite", sorted(SUITES))
@pytest.mark.parametrize("name", names())
def test_replayed_loss_pass_equals_recomputed(name, suite, monkeypatch):
    agent, ro = _setup(name, suite)
    groups = [slice(0, 1), slice(1, K)]  # pipelined task groups, as env.task_groups=2
    _collect(agent, ro, groups, record=False)
    ref_losses, ref_grads = _losses_and_grads(agent, ro)
    calls = _count_replays(monkeypatch)
    _collect(agent, ro, groups, record=True)
    losses, grads = _losses_and_grads(agent, ro)
    # Every encoder that acts replays: input, each layer (1-column Distral's pi0 does not act).
    assert calls["get"] > 0
    torch.testing.assert_close(losses, ref_losses, rtol=1e-5, atol=1e-6)
    for g, ref in zip(grads, ref_grads):  # float32 sums in another order: relative to the scale
        torch.testing.assert_close(g, ref, rtol=0, atol=1e-4 * float(ref.abs().max()) + 1e-8)


def test_one_column_pi0_is_recomputed_and_task_columns_replayed(monkeypatch):
    agent, ro = _setup("distral_kl_1col", "minatar")
    calls = _count_replays(monkeypatch)
    _collect(agent, ro, [slice(0, K)], record=True)
    agent.task_losses(ro)
    assert calls["get"] == 3  # the task encoder's input, conv and fc; pi0's encoder computes


def test_stale_or_partial_tape_is_not_replayed(monkeypatch):
    agent, ro = _setup("a2c_independent", "gridworld")
    calls = _count_replays(monkeypatch)
    # A parameter changed after the rollout began: the recorded activations are stale.
    _collect(agent, ro, [slice(0, K)], record=True)
    with torch.no_grad():
        next(agent.parameters()).add_(0.1)
    stale, _ = agent.task_losses(ro)
    assert calls["get"] == 0
    fresh, _ = agent.task_losses(ro)  # nothing recorded: the plain forward
    torch.testing.assert_close(stale, fresh)
    # One (step, task) group never recorded.
    agent.begin_rollout(T)
    for t in range(T):
        agent.step(ro.obs[:, t], None, t if t else None)
    agent.task_losses(ro)
    assert calls["get"] == 0


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_an_optimiser_step_mid_rollout_makes_the_tape_stale(monkeypatch, optimizer):
    """torch's fused kernels do not bump version counters; make_optimizer's step hook does."""
    agent, ro = _setup("a2c_independent", "minatar", optimizer=optimizer)
    calls = _count_replays(monkeypatch)
    (opt,) = agent.make_optimizers()
    _collect(agent, ro, [slice(0, K)], record=True)
    losses, _ = agent.task_losses(ro)  # replayed; the tape is reset afterwards
    assert calls["get"] > 0
    losses.sum().backward()
    calls["get"] = 0
    _collect(agent, ro, [slice(0, K)], record=True)
    opt.step()  # the weights move after the rollout was recorded
    stale, _ = agent.task_losses(ro)
    assert calls["get"] == 0  # the step was seen: recomputed with the new weights
    torch.testing.assert_close(stale, agent.task_losses(ro)[0])


def test_a_head_change_keeps_the_encoder_record(monkeypatch):
    """Only the encoders are replayed; heads compute in the loss pass, so their weights may move."""
    agent, ro = _setup("a2c_multitask", "gridworld")
    calls = _count_replays(monkeypatch)
    _collect(agent, ro, [slice(0, K)], record=True)
    with torch.no_grad():
        agent.net.policy.weight.add_(0.1)
    replayed, _ = agent.task_losses(ro)
    assert calls["get"] > 0
    torch.testing.assert_close(replayed, agent.task_losses(ro)[0], rtol=1e-6, atol=1e-7)


def test_a_batch_of_another_size_mid_rollout_is_not_replayed(monkeypatch):
    agent, ro = _setup("a2c_independent", "minatar")
    calls = _count_replays(monkeypatch)
    agent.begin_rollout(T)
    agent.step(ro.obs[:, 0, :1], None, 0)  # 1 env per task at t=0, then E
    for t in range(T):
        agent.step(ro.obs[:, t], None, t)
    agent.task_losses(ro)
    assert calls["get"] == 0


def test_replay_can_be_switched_off(monkeypatch):
    agent, ro = _setup("a2c_multitask", "gridworld", replay_forward=False)
    calls = _count_replays(monkeypatch)
    _collect(agent, ro, [slice(0, K)], record=True)
    agent.task_losses(ro)
    assert calls["get"] == 0 and all(not tape.buffers for tape in tapes(agent))


def test_tapes_are_reset_after_the_loss_pass():
    agent, ro = _setup("a2c_multitask", "gridworld")
    _collect(agent, ro, [slice(0, K)], record=True)
    assert all(tape.ready() for tape in tapes(agent))
    agent.task_losses(ro)
    assert not any(tape.ready() or tape.replaying for tape in tapes(agent))


def test_acting_outside_a_rollout_records_nothing():
    agent, ro = _setup("distral_klent_2col", "gridworld")
    agent.act(ro.obs[:, 0])
    agent.step(ro.obs[:, 0])
    assert all(not tape.buffers for tape in tapes(agent))


@pytest.mark.parametrize(
    ("name", "suite", "k", "e", "t", "grouped"),
    [
        ("a2c_independent", "gridworld", 3, 1, 3, False),  # one row per task's GEMM
        ("a2c_multitask", "gridworld", 1, 1, 3, False),  # one row in all (shared layers)
        ("distral_klent_2col", "gridworld", 1, 1, 1, False),  # one row in the loss pass too
        ("a2c_independent", "minatar", 2, 2, 2, True),  # a one-task group of a grouped layer
        ("a2c_multitask", "atari", 1, 1, 2, False),  # one sample through the shared convs
        ("distral_kl_1col", "atari", 3, 1, 1, True),  # both, and a one-sample loss pass per task
    ],
)
def test_replay_is_bit_exact_with_one_env_or_a_one_task_group(name, suite, k, e, t, grouped):
    """agent.replay_forward=true gives the very losses and gradients of false. One env per task
    (or a task group of one task) used to act through other kernels than the loss pass's batch
    (a one-row GEMM, the shared linear kernel, oneDNN's one-sample convolution): the losses
    differed in the last bits, and so did whole runs (gridworld num_envs_per_task=1)."""
    # the four-rooms map's 104 cells, default hidden sizes: a 2-cell input rounds the same on
    # either kernel
    shape = (104,) if suite == "gridworld" else None
    agent, ro = _setup(name, suite, k, e, t, shape, hidden=[])
    groups = [slice(0, 1), slice(1, k)] if grouped else [slice(0, k)]

    def run(record: bool):
        _collect(agent, ro, groups, record)
        return _losses_and_grads(agent, ro)

    ref_losses, ref_grads = run(record=False)
    losses, grads = run(record=True)
    assert torch.equal(losses, ref_losses)
    for g, ref in zip(grads, ref_grads, strict=True):
        assert torch.equal(g, ref)
