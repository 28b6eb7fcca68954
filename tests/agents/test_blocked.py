"""Per-task gradients in one backward (agents.blocked): the same (K, P) matrix as one backward per
task, for every agent and suite, replayed or recomputed, taken block by block for the encoders'
shared layers, and the runner's updates with a gradient weighting unchanged by it."""

from pathlib import Path

import pytest
import torch

import agents.blocked as blocked_module
import agents.runner as runner_module
from agents.blocked import BlockedGrads, blocked, blocked_task_gradients, open_blocks
from agents.factory import names
from mtrl.weighting.grads import last_weight, task_gradient_provider, task_gradients
from tests.agents.test_replay import SUITES, _collect, _setup


def _plain_inputs(monkeypatch) -> list[list[torch.Tensor]]:
    """Records the inputs that agents.blocked hands to the one-task-at-a-time path."""
    seen: list[list[torch.Tensor]] = []
    original = blocked_module.task_gradients

    def recording(losses, inputs, **kw):
        seen.append(list(inputs))
        return original(losses, inputs, **kw)

    monkeypatch.setattr(blocked_module, "task_gradients", recording)
    return seen


@pytest.mark.parametrize("replay", [True, False])
@pytest.mark.parametrize("suite", sorted(SUITES))
@pytest.mark.parametrize("name", names())
def test_blocked_gradients_equal_one_backward_per_task(name, suite, replay, monkeypatch):
    agent, ro = _setup(name, suite, replay_forward=replay)
    _collect(agent, ro, [slice(0, 3)], record=True)
    losses, _ = agent.task_losses(ro)
    shared = [p for p in agent.shared_parameters() if p.requires_grad]
    expected = task_gradients(losses, shared)
    plain = _plain_inputs(monkeypatch)
    got = blocked_task_gradients(losses, shared, agent.blockable)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    # no encoder parameter went one task at a time (a 1-column agent's pi0 recomputes in the
    # loss pass, replay_forward=false every encoder); only heads may
    encoder_ids = {id(p) for p in agent.parameters() if id(p) in agent.blockable}
    assert not {id(p) for inputs in plain for p in inputs} & encoder_ids
    if name != "a2c_independent":  # it shares nothing
        assert {id(p) for p in shared} & encoder_ids  # some shared encoder was blocked
    # GradNorm's W alone (the last shared weight)
    layer = last_weight(shared)
    torch.testing.assert_close(
        blocked_task_gradients(losses, layer, agent.blockable), task_gradients(losses, layer)
    )


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("distral_klent_2col", {"shared_encoder": True}),  # one encoder for both columns
        ("a2c_2col", {"shared_encoder": True}),
        ("a2c_multitask", {"task_heads": False}),  # one shared head: one task at a time
    ],
)
@pytest.mark.parametrize("suite", ["atari", "gridworld"])
def test_blocked_gradients_with_the_sharing_options(name, options, suite):
    agent, ro = _setup(name, suite, **options)
    _collect(agent, ro, [slice(0, 3)], record=True)
    losses, _ = agent.task_losses(ro)
    shared = [p for p in agent.shared_parameters() if p.requires_grad]
    torch.testing.assert_close(
        blocked_task_gradients(losses, shared, agent.blockable),
        task_gradients(losses, shared),
        rtol=1e-5,
        atol=1e-7,
    )


def test_outside_a_loss_pass_every_parameter_goes_one_task_at_a_time(monkeypatch):
    """Losses from a forward outside ``agent.replay()`` (no loss pass): nothing is blockable,
    and no blocked backward is even tried."""
    agent, ro = _setup("a2c_multitask", "minatar")
    assert agent.blockable == set()  # before any loss pass
    obs = ro.step_obs()
    logits, _ = agent.net(obs)
    losses = logits.square().mean(dim=(1, 2))  # (K,): each task's own rows
    shared = agent.shared_parameters()
    plain = _plain_inputs(monkeypatch)
    got = blocked_task_gradients(losses, shared, agent.blockable)
    assert plain == [shared]
    torch.testing.assert_close(got, task_gradients(losses, shared))


def test_sink_keeps_a_parameter_only_from_a_single_layer():
    sink = BlockedGrads(2)
    sink.add(1, torch.ones(2, 3))
    sink.add(2, torch.zeros(2, 1))
    sink.add(1, torch.ones(2, 3))  # a second layer with the same weight: its split is unknown
    sink.add(1, torch.ones(2, 3))
    p = torch.zeros(1)
    assert set(sink.grads) == {2} and sink.get(p) is None
    assert open_blocks(4) is None  # nothing open
    with blocked(2) as sink:
        assert open_blocks(4) is sink and open_blocks(3) is None  # 3 rows do not split in two
    with blocked(1):
        assert open_blocks(4) is None  # one task: nothing to split
    assert open_blocks(4) is None


@pytest.mark.parametrize("suite", ["atari", "gridworld"])
def test_layers_write_their_weights_per_task_gradients_into_the_matrix(suite, monkeypatch):
    # the conv and linear layers' (K, *shape) weight gradients are views into the returned
    # (K, P) matrix (no stacked tensor copied into it afterwards), and the matrix is right
    agent, ro = _setup("a2c_multitask", suite)
    _collect(agent, ro, [slice(0, 3)], record=True)
    losses, _ = agent.task_losses(ro)
    recorded = []
    original = BlockedGrads.record

    def spy(self, param_ids, per_task):
        recorded.append(per_task[0])
        return original(self, param_ids, per_task)

    monkeypatch.setattr(BlockedGrads, "record", spy)
    shared = agent.shared_parameters()
    got = blocked_task_gradients(losses, shared, agent.blockable)
    torch.testing.assert_close(got, task_gradients(losses, shared), rtol=1e-5, atol=1e-7)
    weights = [w for w in recorded if w is not None]
    assert len(weights) == (4 if suite == "atari" else 2)  # 3 convs + fc; the MLP's 2 layers
    assert all(w.untyped_storage().data_ptr() == got.untyped_storage().data_ptr() for w in weights)


def test_a_weight_used_by_two_layers_falls_back(monkeypatch):
    """If a shared layer ran twice in the graph, its per-task split is unknown: the parameter
    takes the one-task-at-a-time path (and the matrix is still right)."""
    agent, ro = _setup("a2c_multitask", "gridworld")
    _collect(agent, ro, [slice(0, 3)], record=True)
    losses, _ = agent.task_losses(ro)
    original = BlockedGrads.add

    def twice(self, param_id, grads):
        original(self, param_id, grads)
        original(self, param_id, grads)

    monkeypatch.setattr(BlockedGrads, "add", twice)
    shared = agent.shared_parameters()
    plain = _plain_inputs(monkeypatch)
    got = blocked_task_gradients(losses, shared, agent.blockable)
    assert plain == [shared]
    torch.testing.assert_close(got, task_gradients(losses, shared))


def _minatar_runner(run_dir: Path, name: str, weighting: str):
    """A MinAtar run (conv encoder) of 2 games x 2 envs, built as train.py builds it."""
    import train
    from agents.config import load_config

    cfg = load_config(
        Path(train.__file__).parent / "configs" / "minatar_a2c.yaml",
        [
            f"agent.name={name}",
            f"agent.weighting={weighting}",
            "env.tasks=[breakout,freeway]",
            "env.num_envs_per_task=2",
            "progress=false",
            "eval.episodes=0",
            "torch_threads=1",
        ],
    )
    return train.build(cfg, run_dir)


def _counting_provider(patch) -> list[int]:
    calls: list[int] = []

    def counting(*args, **kwargs):
        calls.append(1)
        return blocked_task_gradients(*args, **kwargs)

    patch.setattr(runner_module, "blocked_task_gradients", counting)
    return calls


@pytest.mark.parametrize(
    ("name", "weighting"), [("a2c_multitask", "pcgrad"), ("distral_klent_2col", "gradnorm")]
)
def test_runner_updates_are_the_same_with_the_blocked_path(tmp_path, monkeypatch, name, weighting):
    """Two updates with and without the provider: the same parameters."""

    def params_after(provider_on: bool) -> list[torch.Tensor]:
        runner = _minatar_runner(tmp_path / f"run_{provider_on}", name, weighting)
        obs = runner.reset()
        with monkeypatch.context() as patch:
            calls = _counting_provider(patch)
            if not provider_on:
                patch.setattr(runner_module, "task_gradient_provider", lambda p: _no_provider())
            for _ in range(2):
                obs = runner.collect(obs)
                runner.train_step()
        assert len(calls) == (2 if provider_on else 0)
        params = [p.detach().clone() for p in runner.agent.parameters()]
        runner.env.close()
        return params

    for a, b in zip(params_after(True), params_after(False), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_an_agent_with_losses_that_mix_tasks_opts_out(tmp_path, monkeypatch):
    runner = _minatar_runner(tmp_path / "run", "a2c_multitask", "pcgrad")
    runner.agent.separable_losses = False
    calls = _counting_provider(monkeypatch)
    runner.collect(runner.reset())
    runner.train_step()
    assert runner.agent.blockable and calls == []  # blockable, but one task at a time
    runner.env.close()


def _no_provider():
    return task_gradient_provider(None)
