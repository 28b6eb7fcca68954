"""Each task's own parameters learn as a separate A2C learner would; shared ones as one learner
on the pooled batch (agents.guards: per-task loss means, 1/K and clipping per learner)."""

import pytest
import torch

from agents.config_schema import AgentConfig
from agents.factory import build_agent
from agents.guards import PER_TASK, POOLED, WHOLE, clip_and_check, learner_kinds
from agents.networks import GroupedLinear
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


def _grads(agent, ro: Rollout, max_norm: float, reference: bool = False) -> dict[str, torch.Tensor]:
    """The gradients an update steps with: equal-weighted sum, scaled and clipped by
    agents.guards, read after the optimiser's step (the fused RMSprop divides inside its step
    and leaves the divided gradient in ``.grad``). ``reference``: a plain single learner
    instead, each optimiser clipped whole by torch's clip_grad_norm_."""
    opts = agent.make_optimizers()
    kinds = learner_kinds(opts, agent.shared_parameters(), agent, agent.num_tasks)
    losses, _ = agent.task_losses(ro)
    losses.sum().backward()
    if not reference:
        clip_and_check(opts, max_norm, kinds, agent.num_tasks)
    elif max_norm > 0:
        for opt in opts:
            torch.nn.utils.clip_grad_norm_(
                [q for g in opt.param_groups for q in g["params"]], max_norm
            )
    for opt in opts:
        opt.step()
    return {n: p.grad.clone() for n, p in agent.named_parameters() if p.grad is not None}


def _config(name: str, optimizer: str, **kw) -> AgentConfig:
    return AgentConfig(name=name, hidden=[8], gamma=0.9, optimizer=optimizer, **kw)


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
@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])  # RMSprop: 1/K and clip in its step
def test_each_task_column_gets_what_a_separate_learner_would(
    name, suite, obs_shape, max_norm, optimizer
):
    """Task 2's rewards are 100x the others': with one loss mean and one clip over all columns
    (the old form) tasks 0 and 1 got 1/K of their gradient and were shrunk by task 2's norm."""
    k = 3
    cfg = _config(name, optimizer)
    torch.manual_seed(0)
    agent = build_agent(cfg, suite, obs_shape, A, k)
    shared = {
        n for n, p in agent.named_parameters() if any(p is q for q in agent.shared_parameters())
    }
    ro = _rollout(k, obs_shape, seed=1)
    ro.rewards[:, 2] *= 100.0
    singles = [build_agent(cfg, suite, obs_shape, A, 1) for _ in range(k)]
    for task, single in enumerate(singles):  # before the update moves the weights
        _copy_task(agent, single, task, shared)
    got = _grads(agent, ro, max_norm)
    own = [n for n in got if n not in shared]
    # Distral's pi0 (shared) learns from every task: compared with the pooled batch below
    assert len(own) == len(got) - len(shared) and own
    for task, single in enumerate(singles):
        want = _grads(single, _task(ro, task), max_norm, reference=True)
        for n in own:
            block = got[n].unflatten(0, (k, -1))[task].reshape(want[n].shape)
            # grouped and single kernels round differently: tolerance relative to the scale
            tol = 1e-6 * float(want[n].abs().max())
            torch.testing.assert_close(block, want[n], rtol=1e-5, atol=tol, msg=f"{n} task {task}")


@pytest.mark.parametrize("max_norm", [0.0, 0.05])
@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_a_shared_network_gets_a_single_learners_gradient_on_the_pooled_batch(max_norm, optimizer):
    """a2c_multitask with one task-agnostic network: the K tasks' mean, i.e. one A2C learner
    whose K*E envs are all the tasks' envs."""
    k = 2
    cfg = _config("a2c_multitask", optimizer, task_heads=False)
    torch.manual_seed(0)
    agent = build_agent(cfg, "gridworld", (5,), A, k)
    pooled = build_agent(cfg, "gridworld", (5,), A, 1)
    pooled.load_state_dict(agent.state_dict())
    ro = _rollout(k, (5,), seed=2)
    one = Rollout(T, 1, k * E, CPU, (5,))
    one.obs.copy_(ro.obs.transpose(0, 1).reshape(1, T + 1, k * E, 5))
    for name in STEP_FIELDS:
        getattr(one, name).copy_(getattr(ro, name).reshape(T, 1, k * E))
    got, want = _grads(agent, ro, max_norm), _grads(pooled, one, max_norm, reference=True)
    assert list(got) == list(want)
    for n in got:
        tol = 1e-6 * float(want[n].abs().max())
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=tol, msg=n)


def test_learner_kinds_follow_the_shared_parameters():
    kinds = {}
    for name in ("a2c_independent", "a2c_multitask", "distral_klent_2col"):
        agent = build_agent(AgentConfig(name=name, hidden=[8]), "gridworld", (5,), A, 3)
        opts = agent.make_optimizers()
        kinds[name] = learner_kinds(opts, agent.shared_parameters(), agent, 3)
    # Distral: task columns, then pi0; a2c_multitask's one optimiser holds its shared encoder
    assert kinds == {
        "a2c_independent": [PER_TASK],
        "a2c_multitask": [POOLED],
        "distral_klent_2col": [PER_TASK, POOLED],
    }
    weights = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    assert learner_kinds([weights], [], torch.nn.Module(), 3) == [WHOLE]  # a weighting's


@pytest.mark.parametrize("k", [2, 4])
def test_an_unlisted_shared_parameter_stops_the_run(k):
    """A custom agent whose plain Linear serves every task but is not in shared_parameters():
    its rows would be cut into K blocks clipped apart and never averaged. 64 rows split into 2
    or 4 blocks as evenly as a grouped layer's, so the shape alone cannot tell."""
    agent = torch.nn.Module()
    agent.encoder = torch.nn.Linear(5, 64)
    agent.heads = GroupedLinear(k, 64, A)  # one block per task: fine
    opt = torch.optim.SGD(agent.parameters(), lr=0.1)
    with pytest.raises(ValueError) as e:
        learner_kinds([opt], [], agent, k)
    assert str(e.value) == (
        f"a parameter of shape (64, 5) is neither in shared_parameters() nor in a module grouped "
        f"by task (groups={k}, e.g. GroupedLinear); list the parameters several tasks use in "
        "shared_parameters() (docs/extending.md)"
    )
    assert learner_kinds([opt], list(agent.encoder.parameters()), agent, k) == [POOLED]
    heads = torch.optim.SGD(agent.heads.parameters(), lr=0.1)
    assert learner_kinds([heads], [], agent, k) == [PER_TASK]
    # one task: any layout is one learner's, a scalar parameter included
    agent.scale = torch.nn.Parameter(torch.ones(()))
    assert learner_kinds([torch.optim.SGD(agent.parameters(), lr=0.1)], [], agent, 1) == [PER_TASK]


def test_a_scale_invariant_weighting_is_not_averaged_over_tasks(tmp_path):
    """Nash-MTL's update has norm sqrt(K) whatever the losses' scale (Navon et al. 2022, with
    the exact equation): there is no sum over tasks for the pooled 1/K to average, so the
    shared network steps with it as it is; with normalize=True it grows with the gradients and
    is averaged like the others."""
    import train
    from agents.config import load_config

    for kwargs, pool in (([], 1), (["agent.weighting_kwargs.normalize=true"], 4)):
        cfg = load_config(
            "configs/gridworld_distral.yaml",
            [
                "agent.name=a2c_multitask",
                "agent.weighting=nash_mtl",
                "agent.max_grad_norm=0",
                "progress=false",
                "eval.episodes=0",
                *kwargs,
            ],
        )
        runner = train.build(cfg, tmp_path / str(pool))
        try:
            assert runner.num_tasks == 4 and runner.pool == pool
            runner.collect(runner.reset())
            runner.train_step()
        finally:
            runner.env.close()
        if pool == 1:  # the fused RMSprop leaves the gradient it stepped with in .grad
            shared = [p.grad for p in runner.agent.shared_parameters()]
            norm = float(torch.nn.utils.get_total_norm(shared))
            assert norm == pytest.approx(4**0.5, rel=1e-3)
