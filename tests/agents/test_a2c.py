"""Known-answer tests for the A2C loss (Mnih et al. 2016) and the A2C agents' wiring."""

import math

import pytest
import torch

from agents.a2c import A2CAgent, a2c_terms
from agents.base import log_prob_entropy, sample_actions
from agents.config_schema import AgentConfig
from agents.factory import build_agent
from agents.rollout import Rollout

CPU = torch.device("cpu")


def test_a2c_terms_by_hand():
    """Signs, vf/entropy coefficients and each task's loss as the mean over its own T*E samples."""
    t, k, e = 2, 2, 1
    cfg = AgentConfig(gamma=0.5, gae_lambda=1.0, vf_coef=0.25, ent_coef=0.1)
    ro = Rollout(t, k, e, CPU)
    ro.rewards.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]).view(t, k, e))
    last_values = torch.tensor([[4.0], [0.0]])
    log_prob = torch.full((t, k, e), math.log(0.5), requires_grad=True)
    entropy = torch.full((t, k, e), 0.6, requires_grad=True)
    values = torch.zeros(t, k, e, requires_grad=True)
    losses, terms = a2c_terms(ro, log_prob, entropy, values, last_values, cfg)
    # returns = advantages (V = 0): task 0 [1 + .5*2, 0 + .5*4] = [2, 2]; task 1 [0 + .5*2, 2]
    ret = torch.tensor([[2.0, 1.0], [2.0, 2.0]]).view(t, k, e)
    lp = math.log(0.5)
    expected = [(-4 * lp + 0.25 * 8 - 0.1 * 1.2) / 2, (-3 * lp + 0.25 * 5 - 0.1 * 1.2) / 2]
    assert losses.tolist() == pytest.approx(expected)
    assert terms["advantage"].item() == pytest.approx(7 / 4)
    losses.sum().backward()
    torch.testing.assert_close(log_prob.grad, -ret / 2)
    torch.testing.assert_close(values.grad, -2 * 0.25 * ret / 2)
    torch.testing.assert_close(entropy.grad, torch.full((t, k, e), -0.1 / 2))


@pytest.mark.parametrize(("lam", "a_open"), [(0.5, 0.75), (1.0, 1.0)])
def test_a2c_terms_route_termination_truncation_and_lambda(lam, a_open):
    """Task 0 env 0 terminates at t=0 (no bootstrap), task 1 env 0 is truncated there
    (bootstrap from V(final obs) = 6); env 1 never ends (GAE with ``agent.gae_lambda``)."""
    t, k, e = 2, 2, 2
    cfg = AgentConfig(gamma=0.5, gae_lambda=lam, vf_coef=0.0, ent_coef=0.0)
    ro = Rollout(t, k, e, CPU)
    ro.rewards.fill_(1.0)
    ro.terminated[0, 0, 0] = True
    ro.truncated[0, 1, 0] = True
    ro.final_values[0, 0, 0] = 10.0  # not truncated: must not be read
    ro.final_values[0, 1, 0] = 6.0
    log_prob = torch.zeros(t, k, e, requires_grad=True)
    values = torch.ones(t, k, e)
    losses, _ = a2c_terms(ro, log_prob, torch.zeros(t, k, e), values, torch.full((k, e), 2.0), cfg)
    losses.sum().backward()
    # t=1: 1 + .5*2 - 1 = 1 everywhere; t=0: terminated 1 - 1 = 0, truncated 1 + .5*6 - 1 = 3,
    # open: delta 1 + .5*1 - 1 = .5 plus gamma*lam*A_1
    adv = torch.tensor([[[0.0, a_open], [3.0, a_open]], [[1.0, 1.0], [1.0, 1.0]]])
    torch.testing.assert_close(-log_prob.grad * (t * e), adv)


def test_agent_losses_use_the_rollouts_actions_and_bootstrap_obs():
    torch.manual_seed(0)
    t, k, e, a = 3, 2, 2, 3
    cfg = AgentConfig(name="a2c_independent", hidden=[8], gamma=0.9)
    agent = build_agent(cfg, "gridworld", (5,), a, k)
    assert isinstance(agent, A2CAgent)
    ro = Rollout(t, k, e, CPU, (5,))
    ro.obs.normal_()
    ro.rewards.normal_()
    ro.actions.copy_(torch.randint(0, a, (t, k, e)))
    losses, _ = agent.task_losses(ro)
    # by hand: step t of env e of task k is obs[k, t, e]; the bootstrap is obs[k, T, e]
    logits, values = agent.net(ro.obs[:, :t].reshape(k, t * e, 5))
    logits = logits.view(k, t, e, a).transpose(0, 1)
    values = values.view(k, t, e).transpose(0, 1)
    last = agent.net(ro.obs[:, t])[1]
    log_prob = torch.log_softmax(logits, -1).gather(-1, ro.actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)
    expected, _ = a2c_terms(ro, log_prob, entropy, values, last.detach(), cfg)
    torch.testing.assert_close(losses, expected)


def test_training_step_samples_and_evaluation_is_greedy():
    """``step`` samples from pi (exploration); ``act`` takes the argmax."""
    torch.manual_seed(0)
    agent = build_agent(AgentConfig(name="a2c_multitask", hidden=[8]), "gridworld", (5,), 3, 2)
    with torch.no_grad():  # a uniform policy everywhere
        agent.net.policy.weight.zero_()
        agent.net.policy.bias.zero_()
    obs = torch.randn(2, 300, 5)
    sampled = agent.step(obs)
    assert set(sampled.unique().tolist()) == {0, 1, 2}
    assert agent.act(obs).eq(0).all()


def test_sample_actions_greedy_and_log_prob_entropy_gradient():
    logits = torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, 1.0]], requires_grad=True)
    assert sample_actions(logits, greedy=True).tolist() == [2, 0]
    chosen, entropy = log_prob_entropy(logits, torch.tensor([2, 1]))
    p = torch.softmax(logits.detach(), -1)
    torch.testing.assert_close(chosen, p.log().gather(-1, torch.tensor([[2], [1]])).squeeze(-1))
    entropy.sum().backward()
    # dH/dz_j = -p_j (log p_j + H)
    h = -(p * p.log()).sum(-1, keepdim=True)
    torch.testing.assert_close(logits.grad, -p * (p.log() + h))


def test_one_task_agnostic_head_is_shared():
    cfg = AgentConfig(name="a2c_multitask", hidden=[8], task_heads=False)
    agent = build_agent(cfg, "gridworld", (5,), 3, 2)
    obs = torch.randn(1, 4, 5).expand(2, 4, 5)
    logits, values = agent.net(obs)
    torch.testing.assert_close(logits[0], logits[1])
    torch.testing.assert_close(values[0], values[1])
    assert {id(p) for p in agent.shared_parameters()} == {id(p) for p in agent.parameters()}
    per_task = build_agent(AgentConfig(name="a2c_multitask", hidden=[8]), "gridworld", (5,), 3, 2)
    assert {id(p) for p in per_task.shared_parameters()} == {
        id(p) for p in per_task.net.encoder.parameters()
    }
