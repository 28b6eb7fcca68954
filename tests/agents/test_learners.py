"""Each task's own parameters learn as a separate A2C learner would; shared ones as one learner
on the pooled batch (agents.guards: per-task loss means, 1/K and clipping per learner)."""

import pytest
import torch

from agents.config_schema import AgentConfig
from agents.factory import build_agent
from agents.guards import PER_TASK, POOLED, WHOLE, clip_and_check, learner_kinds
from agents.rollout import Rollout

CPU = torch.device("cpu")
T, E, A = 3, 2, 4
STEP_FIELDS = ("rewards", "terminated", "truncated", "final_values", "actions", "ep_time")


def _rollout(k: int, obs_shape: tuple[int, ...], seed: int) -> Rollout:
    g = torch.Generator().manual_seed(seed)
    ro = Rollout(T, k, E, CPU, obs_shape)
    ro.obs.copy_(torch.rand(ro.obs.shape, generator=g))
    ro.rewards.copy_(torch.randn(ro.rewards.shape, generator=g))
    ro.actions.copy_(torch.randint(0, A, ro.actions.shape, generator=g))
    ro.terminated[1, :, 0] = True
    ro.ep_time.copy_(torch.arange(T).view(T, 1, 1).expand(T, k, E))
    return ro


def _task(ro: Rollout, k: int) -> Rollout:
    """Task k's slice of ``ro`` as a one-task rollout."""
    one = Rollout(T, 1, E, CPU, tuple(ro.obs.shape[3:]))
    one.obs.copy_(ro.obs[k : k + 1])
    for name in STEP_FIELDS:
        getattr(one, name).copy_(getattr(ro, name)[:, k : k + 1])
    return one


def _grads(agent, ro: Rollout, max_norm: float) -> dict[str, torch.Tensor]:
    """The gradients an update steps with: equal-weighted sum, then scaled and clipped."""
    opts = agent.make_optimizers()
    kinds = learner_kinds(opts, agent.shared_parameters(), agent.parameters(), agent.num_tasks)
    losses, _ = agent.task_losses(ro)
    losses.sum().backward()
    clip_and_check(opts, max_norm, kinds, agent.num_tasks)
    return {n: p.grad.clone() for n, p in agent.named_parameters() if p.grad is not None}


def _copy_task(many, one, k: int, shared: set[str]) -> None:
    """Give ``one`` (a one-task agent) task k's weights of ``many`` and all its shared ones."""
    big = dict(many.named_parameters())
    with torch.no_grad():
        for name, p in one.named_parameters():
            src = big[name] if name in shared else big[name].unflatten(0, (many.num_tasks, -1))[k]
            p.copy_(src.reshape(p.shape))


@pytest.mark.parametrize(
    ("name", "suite", "obs_shape"),
    [
        ("a2c_independent", "gridworld", (5,)),
        ("a2c_independent", "minatar", (2, 6, 6)),
        ("distral_klent_2col", "gridworld", (5,)),
        ("distral_kl_1col", "minatar", (2, 6, 6)),
    ],
)
@pytest.mark.parametrize("max_norm", [0.0, 0.05])
def test_each_task_column_gets_what_a_separate_learner_would(name, suite, obs_shape, max_norm):
    """Task 2's rewards are 100x the others': with one loss mean and one clip over all columns
    (the old form) tasks 0 and 1 got 1/K of their gradient and were shrunk by task 2's norm."""
    k = 3
    cfg = AgentConfig(name=name, hidden=[8], gamma=0.9, optimizer="adam")  # clips in .grad
    torch.manual_seed(0)
    agent = build_agent(cfg, suite, obs_shape, A, k)
    shared = {
        n for n, p in agent.named_parameters() if any(p is q for q in agent.shared_parameters())
    }
    ro = _rollout(k, obs_shape, seed=1)
    ro.rewards[:, 2] *= 100.0
    got = _grads(agent, ro, max_norm)
    own = [n for n in got if n not in shared]
    # Distral's pi0 (shared) learns from every task: compared with the pooled batch below
    assert len(own) == len(got) - len(shared) and own
    for task in range(k):
        single = build_agent(cfg, suite, obs_shape, A, 1)
        _copy_task(agent, single, task, shared)
        want = _grads(single, _task(ro, task), max_norm)
        for n in own:
            block = got[n].unflatten(0, (k, -1))[task].reshape(want[n].shape)
            # grouped and single kernels round differently: tolerance relative to the scale
            tol = 1e-6 * float(want[n].abs().max())
            torch.testing.assert_close(block, want[n], rtol=1e-5, atol=tol, msg=f"{n} task {task}")


@pytest.mark.parametrize("max_norm", [0.0, 0.05])
def test_a_shared_network_gets_a_single_learners_gradient_on_the_pooled_batch(max_norm):
    """a2c_multitask with one task-agnostic network: the K tasks' mean, i.e. one A2C learner
    whose K*E envs are all the tasks' envs."""
    k = 2
    cfg = AgentConfig(name="a2c_multitask", hidden=[8], task_heads=False, optimizer="adam")
    torch.manual_seed(0)
    agent = build_agent(cfg, "gridworld", (5,), A, k)
    pooled = build_agent(cfg, "gridworld", (5,), A, 1)
    pooled.load_state_dict(agent.state_dict())
    ro = _rollout(k, (5,), seed=2)
    one = Rollout(T, 1, k * E, CPU, (5,))
    one.obs.copy_(ro.obs.transpose(0, 1).reshape(1, T + 1, k * E, 5))
    for name in STEP_FIELDS:
        getattr(one, name).copy_(getattr(ro, name).reshape(T, 1, k * E))
    got, want = _grads(agent, ro, max_norm), _grads(pooled, one, max_norm)
    assert list(got) == list(want)
    for n in got:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-7, msg=n)


def test_learner_kinds_follow_the_shared_parameters():
    kinds = {}
    for name in ("a2c_independent", "a2c_multitask", "distral_klent_2col"):
        agent = build_agent(AgentConfig(name=name, hidden=[8]), "gridworld", (5,), A, 3)
        opts = agent.make_optimizers()
        kinds[name] = learner_kinds(opts, agent.shared_parameters(), agent.parameters(), 3)
    # Distral: task columns, then pi0; a2c_multitask's one optimiser holds its shared encoder
    assert kinds == {
        "a2c_independent": [PER_TASK],
        "a2c_multitask": [POOLED],
        "distral_klent_2col": [PER_TASK, POOLED],
    }
    weights = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    assert learner_kinds([weights], [], [], 3) == [WHOLE]  # not the agent's: a weighting's
    odd = torch.nn.Parameter(torch.zeros(4))  # not shared, and 4 is no multiple of 3 tasks
    with pytest.raises(ValueError) as e:
        learner_kinds([torch.optim.SGD([odd], lr=0.1)], [], [odd], 3)
    assert str(e.value) == (
        "a parameter of shape (4,) is not in shared_parameters() and has no block per task "
        "along dim 0 (3 tasks); list the parameters several tasks use in shared_parameters() "
        "(docs/extending.md)"
    )
