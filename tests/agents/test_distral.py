"""Known-answer tests for Distral (Teh et al. 2017): rewards, KL, 2-column form, distillation."""

import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from agents.config import ConfigError, load_config
from agents.config_schema import AgentConfig
from agents.distral import DistralAgent, resolve_alpha_beta
from agents.factory import build_agent, names
from agents.rollout import Rollout

K, E, T, A = 2, 1, 2, 3


def _cfg(**kw) -> AgentConfig:
    cfg = AgentConfig(hidden=[8], vf_coef=0.0, ent_coef=0.0, gamma=0.5)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _agent(name: str, **kw) -> DistralAgent:
    cfg = _cfg(name=name, **kw)
    agent = build_agent(cfg, "gridworld", (5,), A, K)
    assert isinstance(agent, DistralAgent)
    return agent


def _rollout(actions: torch.Tensor) -> Rollout:
    """A (T, K, E) rollout with reward 1 everywhere and episode times 0, 1."""
    ro = Rollout(T, K, E, torch.device("cpu"), (5,))
    ro.actions.copy_(actions)
    ro.rewards.fill_(1.0)
    ro.ep_time.copy_(torch.tensor([0.0, 1.0]).view(T, 1, 1).expand(T, K, E))
    return ro


def _losses(agent: DistralAgent, logits, h0, actions):
    """Distral losses from given (T, K, E, A) task logits and h0, zero values."""
    zeros = torch.zeros(T, K, E)
    return agent.losses_from_outputs(_rollout(actions), logits, h0, zeros, torch.zeros(K, E))


def test_seven_agents_are_registered():
    assert names() == sorted(
        [
            "a2c_multitask",
            "a2c_independent",
            "a2c_2col",
            "distral_kl_1col",
            "distral_kl_2col",
            "distral_klent_1col",
            "distral_klent_2col",
        ]
    )


def test_alpha_beta_from_costs_and_checks():
    assert resolve_alpha_beta(_cfg(name="distral_klent_2col", c_kl=1.0, c_ent=3.0), False) == (
        0.25,
        0.25,
    )
    assert resolve_alpha_beta(_cfg(name="distral_kl_2col", beta=7.0), True) == (1.0, 7.0)
    assert resolve_alpha_beta(_cfg(name="distral_klent_1col", alpha=0.5, beta=2.0), False) == (
        0.5,
        2.0,
    )
    with pytest.raises(ConfigError, match="c_ent"):
        resolve_alpha_beta(_cfg(name="distral_kl_1col", c_kl=1.0, c_ent=1.0), True)
    with pytest.raises(ConfigError, match="alpha"):
        resolve_alpha_beta(_cfg(name="distral_klent_1col", alpha=1.0), False)
    # costs with no entropy cost are alpha = 1: refused for a KL+ent agent, as alpha=1 is
    with pytest.raises(ConfigError, match=r"c_ent=0\.0 means no entropy term"):
        resolve_alpha_beta(_cfg(name="distral_klent_2col", c_kl=1.0, c_ent=0.0), False)
    assert resolve_alpha_beta(_cfg(name="distral_kl_2col", c_kl=0.5, c_ent=0.0), True) == (1.0, 2.0)
    # c_ent without c_kl would fall back to alpha/beta unseen: refused
    with pytest.raises(ConfigError, match=r"c_ent=0\.05 is used only together with agent\.c_kl"):
        resolve_alpha_beta(_cfg(name="distral_klent_2col", c_ent=0.05), False)
    # alpha or beta given with the costs would be replaced by them unseen: refused
    with pytest.raises(ConfigError, match=r"agent\.alpha=0\.3 and agent\.c_kl=1\.0 both set"):
        resolve_alpha_beta(_cfg(name="distral_klent_2col", c_kl=1.0, c_ent=1.0, alpha=0.3), False)
    with pytest.raises(ConfigError, match=r"agent\.beta=10\.0 and agent\.c_kl=0\.5 both set"):
        resolve_alpha_beta(_cfg(name="distral_kl_1col", c_kl=0.5, beta=10.0), True)
    # a KL-only agent does not read alpha (build_agent notes it): the costs still apply
    assert resolve_alpha_beta(_cfg(name="distral_kl_2col", c_kl=0.5, alpha=0.3), True) == (1.0, 2.0)


@pytest.mark.parametrize(
    ("name", "ent_coef", "noted"),
    [
        ("distral_kl_1col", 0.01, True),
        ("distral_klent_2col", 0.02, True),
        ("distral_klent_2col", 0.0, False),
        ("a2c_2col", 0.01, False),  # plain A2C: the bonus is its own
        ("a2c_multitask", 0.01, False),
    ],
)
def test_a2c_entropy_bonus_on_distral_is_noted(name, ent_coef, noted):
    agent = build_agent(_cfg(name=name, ent_coef=ent_coef), "gridworld", (5,), A, K)
    assert bool(agent.notes) == noted
    if noted:
        assert f"agent.ent_coef={ent_coef}" in agent.notes[0]
        assert "agent.ent_coef=0" in agent.notes[0]


def test_regularised_reward_by_hand():
    agent = _agent("distral_klent_1col", alpha=0.5, beta=2.0)
    logits = torch.log(torch.tensor([0.5, 0.25, 0.25])).expand(T, K, E, A).clone()
    h0 = torch.log(torch.tensor([0.25, 0.5, 0.25])).expand(T, K, E, A).clone()
    # action 1: pi = 0.25, pi0 = 0.5 (action 0's terms cancel to exactly the raw reward 1)
    actions = torch.ones(T, K, E, dtype=torch.long)
    _, terms = _losses(agent, logits, h0, actions)
    expected = 1.0 + (0.5 / 2.0) * math.log(0.5) - (1 / 2.0) * math.log(0.25)  # 1.5199
    assert expected == pytest.approx(1.5199, abs=1e-4)
    assert terms["regularised_reward"].mean().item() == pytest.approx(expected)
    kl = 0.5 * math.log(0.5 / 0.25) + 0.25 * math.log(0.25 / 0.5) + 0.25 * math.log(1.0)
    assert terms["kl"].mean().item() == pytest.approx(kl)


def test_kl_and_its_gradient_vanish_when_policies_agree():
    agent = _agent("distral_kl_1col", beta=2.0)
    same = torch.randn(T, K, E, A)
    logits = same.clone().requires_grad_(True)
    h0 = same.clone().requires_grad_(True)
    losses, terms = _losses(agent, logits, h0, torch.zeros(T, K, E, dtype=torch.long))
    assert terms["kl"].mean().item() == pytest.approx(0.0, abs=1e-7)
    losses.sum().backward()
    # With pi_i = pi0 the distillation gradient (pi0 - pi_i) is zero everywhere.
    assert h0.grad.abs().max().item() < 1e-7


def test_distillation_gradient_wrt_pi0_logits_is_pi0_minus_pi():
    alpha, beta, gamma = 0.5, 4.0, 0.5
    agent = _agent("distral_klent_1col", alpha=alpha, beta=beta, gamma=gamma)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(T, K, E, A, generator=g).requires_grad_(True)
    h0 = torch.randn(T, K, E, A, generator=g).requires_grad_(True)
    actions = torch.randint(0, A, (T, K, E), generator=g)
    losses, _ = _losses(agent, logits, h0, actions)
    losses.sum().backward()
    n = T * E  # each task's mean (pi0's optimiser then divides the sum over tasks by K)
    discount = torch.tensor([1.0, gamma]).view(T, 1, 1, 1)  # ep_time 0 then 1
    expected = (alpha / beta) * discount * (F.softmax(h0, -1) - F.softmax(logits, -1)) / n
    torch.testing.assert_close(h0.grad, expected.detach())


def test_distillation_discount_can_be_turned_off():
    agent = _agent("distral_kl_1col", beta=1.0, distill_discount=False)
    logits = torch.randn(T, K, E, A)
    h0 = torch.randn(T, K, E, A).requires_grad_(True)
    losses, _ = _losses(agent, logits, h0, torch.zeros(T, K, E, dtype=torch.long))
    losses.sum().backward()
    expected = (F.softmax(h0, -1) - F.softmax(logits, -1)) / (T * E)
    torch.testing.assert_close(h0.grad, expected.detach())


def test_distill_weights_is_the_schedule_a_subclass_overrides():
    """A variant with another distillation schedule overrides distill_weights (docs/extending.md):
    the distillation gradient and the logged term follow it; the regularised reward does not."""

    class Halved(DistralAgent):
        def distill_weights(self, rollout):
            return super().distill_weights(rollout) * torch.tensor([0.0, 0.5]).view(T, 1, 1)

    alpha, beta, gamma = 0.5, 4.0, 0.5
    base = _agent("distral_klent_1col", alpha=alpha, beta=beta, gamma=gamma)
    agent = Halved(base.cfg, "gridworld", (5,), A, K, two_column=False, kl_only=False)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(T, K, E, A, generator=g)
    h0 = torch.randn(T, K, E, A, generator=g).requires_grad_(True)
    actions = torch.randint(0, A, (T, K, E), generator=g)
    ro = _rollout(actions)
    torch.testing.assert_close(base.distill_weights(ro), gamma**ro.ep_time)
    losses, terms = agent.losses_from_outputs(
        ro, logits, h0, torch.zeros(T, K, E), torch.zeros(K, E)
    )
    losses.sum().backward()
    scale = torch.tensor([0.0, 0.5 * gamma]).view(T, 1, 1, 1)
    expected = (alpha / beta) * scale * (F.softmax(h0, -1) - F.softmax(logits, -1)) / (T * E)
    torch.testing.assert_close(h0.grad, expected.detach())
    _, base_terms = _losses(base, logits, h0.detach(), actions)
    assert float(terms["distill"]) < float(base_terms["distill"])
    torch.testing.assert_close(terms["regularised_reward"], base_terms["regularised_reward"])


def test_two_column_composition():
    agent = _agent("distral_klent_2col", alpha=0.5, beta=3.0)
    obs = torch.randn(K, 4, 5)
    logits, h0, _ = agent._forward(obs)
    beta_f = agent.task_policy(agent.task_encoder(obs))  # the task head outputs beta * f_i
    torch.testing.assert_close(logits, 0.5 * h0 + beta_f)
    torch.testing.assert_close(h0, agent.pi0_head(agent.pi0_encoder(obs)))
    # pi0 is task-agnostic: the same state gives the same h0 in every task row.
    same = torch.randn(1, 4, 5).expand(K, 4, 5)
    h = agent._forward(same)[1]
    torch.testing.assert_close(h[0], h[1])


@pytest.mark.parametrize("beta", [3.0, 100.0])
def test_beta_does_not_scale_the_logits(beta):
    """beta weighs the regulariser only: the same weights give the same pi_i whatever beta, so
    beta does not scale how far an optimiser step moves the logits either (a head for f_i times
    beta = 100 moved them 100x as far: on Atari pi_i went from uniform to ~0.2 nats of 2.9 in
    two RMSprop updates and collapsed), and at A2C's head init pi_i starts near uniform."""
    torch.manual_seed(0)
    ref = _agent("distral_klent_2col", alpha=0.5, beta=1.0)
    agent = _agent("distral_klent_2col", alpha=0.5, beta=beta)
    agent.load_state_dict(ref.state_dict())
    obs = torch.randn(K, 64, 5)
    logits = agent._forward(obs)[0].detach()
    torch.testing.assert_close(logits, ref._forward(obs)[0].detach())
    entropy = -(F.softmax(logits, -1) * F.log_softmax(logits, -1)).sum(-1)
    assert float(entropy.min()) > 0.98 * math.log(A)


def test_a2c_2col_composes_without_scaling_or_regulariser():
    agent = _agent("a2c_2col", alpha=0.5, beta=3.0)
    assert (agent.alpha, agent.beta, agent.regularise) == (1.0, 1.0, False)
    obs = torch.randn(K, 4, 5)
    logits, h0, _ = agent._forward(obs)
    torch.testing.assert_close(logits, h0 + agent.task_policy(agent.task_encoder(obs)))


def test_a2c_2col_reports_no_distral_diagnostics_or_pi0():
    # its softmax(h0) is not distilled and its reward is raw: KL, pi0 entropy, "regularised"
    # rewards and a pi0 evaluation used to be reported for it all the same
    actions = torch.zeros(T, K, E, dtype=torch.long)
    logits, h0 = torch.randn(T, K, E, A), torch.randn(T, K, E, A)
    _, terms = _losses(_agent("a2c_2col"), logits, h0, actions)
    assert not {"kl", "entropy_pi0", "regularised_reward", "distill"} & set(terms)
    assert not _agent("a2c_2col").has_pi0
    _, terms = _losses(_agent("distral_klent_2col"), logits, h0, actions)
    assert {"kl", "entropy_pi0", "regularised_reward", "distill"} <= set(terms)
    assert _agent("distral_kl_1col").has_pi0


def test_task_column_gets_only_its_own_task_gradient():
    agent = _agent("distral_klent_2col")
    logits, _, values = agent._forward(torch.randn(K, 4, 5))
    (logits[1].sum() + values[1].sum()).backward()
    w = agent.task_policy.weight.grad
    assert w[0].abs().sum() == 0 and w[1].abs().sum() > 0
    assert agent.pi0_head.weight.grad.abs().sum() > 0  # h0 gets task gradients via alpha*h0


@pytest.mark.parametrize(
    "name", ["distral_kl_1col", "distral_kl_2col", "distral_klent_1col", "distral_klent_2col"]
)
@pytest.mark.parametrize("shared_encoder", [False, True])
def test_optimisers_own_disjoint_parameter_sets(name, shared_encoder):
    agent = _agent(name, shared_encoder=shared_encoder)
    task_opt, pi0_opt = agent.make_optimizers()
    own = [{id(p) for g in opt.param_groups for p in g["params"]} for opt in (task_opt, pi0_opt)]
    assert not own[0] & own[1]
    assert own[0] | own[1] == {id(p) for p in agent.parameters()}
    pi0 = {id(p) for p in [*agent.pi0_encoder.parameters(), *agent.pi0_head.parameters()]}
    assert own[1] == pi0
    shared = shared_encoder and name.endswith("2col")
    # pi0's encoder is never shared with the task policies unless the config says so.
    assert (agent.task_encoder is None) == shared
    if not shared:
        task_enc = {id(p) for p in agent.task_encoder.parameters()}
        assert not task_enc & pi0


def test_distill_lr_sets_pi0_learning_rate():
    agent = _agent("distral_kl_1col", lr=1e-3, distill_lr=5e-4)
    task_opt, pi0_opt = agent.make_optimizers()
    assert task_opt.param_groups[0]["lr"] == 1e-3 and pi0_opt.param_groups[0]["lr"] == 5e-4


def test_config_presets_load():
    root = Path(__file__).resolve().parents[2]
    for path in ["configs/default.yaml", "configs/gridworld_distral.yaml"]:
        cfg = load_config(root / path)
        assert cfg.agent.name.startswith("distral")


def test_kl_diagnostic_is_kl_of_task_policy_from_pi0():
    """terms["kl"] is KL(pi_i || pi0), the direction pi0 minimises, not KL(pi0 || pi_i)."""
    agent = _agent("distral_kl_1col", beta=2.0)
    pi, pi0 = torch.tensor([0.5, 0.25, 0.25]), torch.tensor([0.8, 0.1, 0.1])
    logits = torch.log(pi).expand(T, K, E, A).clone()
    h0 = torch.log(pi0).expand(T, K, E, A).clone()
    _, terms = _losses(agent, logits, h0, torch.zeros(T, K, E, dtype=torch.long))
    expected = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.25 / 0.1)  # 0.2231
    reverse = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.1 / 0.25)  # 0.1927
    assert terms["kl"].tolist() == pytest.approx([expected] * K)
    assert abs(expected - reverse) > 0.02


def test_advantages_and_logged_rewards_are_the_regularised_ones():
    """A2C learns from r + (alpha/beta) log pi0 - (1/beta) log pi_i, and the runner logs it."""
    agent = _agent("distral_klent_1col", alpha=0.5, beta=2.0)
    logits = torch.log(torch.tensor([0.5, 0.25, 0.25])).expand(T, K, E, A).clone()
    h0 = torch.log(torch.tensor([0.25, 0.5, 0.25])).expand(T, K, E, A).clone()
    actions = torch.ones(T, K, E, dtype=torch.long)
    ro = _rollout(actions)
    zeros = torch.zeros(T, K, E)
    _, terms = agent.losses_from_outputs(ro, logits, h0, zeros, torch.zeros(K, E))
    r = 1.0 + 0.25 * math.log(0.5) - 0.5 * math.log(0.25)
    # values 0, no bootstrap, gamma 0.5: A_1 = r, A_0 = r + 0.5 r
    assert terms["advantage"].item() == pytest.approx((1.5 * r + r) / 2)
    torch.testing.assert_close(ro.learning_rewards, torch.full((T, K, E), r))
    # a2c_2col learns from the raw reward 1 and sets no learning rewards
    ro = _rollout(actions)
    _, terms = _agent("a2c_2col").losses_from_outputs(ro, logits, h0, zeros, torch.zeros(K, E))
    assert terms["advantage"].item() == pytest.approx((1.5 + 1.0) / 2)
    assert ro.learning_rewards is None


@pytest.mark.parametrize("name", ["distral_kl_1col", "distral_klent_2col"])
def test_acting_values_and_pi0_use_their_own_columns(name):
    """act = the task policy pi_i, act_pi0 = pi0 (softmax h0), values = the task value head."""
    torch.manual_seed(0)
    agent = _agent(name)
    with torch.no_grad():  # pi0 prefers action 0, every task policy action 2
        agent.pi0_head.bias[..., 0] = 5.0
        agent.task_policy.bias[..., 2] = 10.0
    obs = torch.randn(K, 8, 5)
    logits, h0, values = agent._forward(obs)
    assert agent.act(obs).eq(2).all() and logits.argmax(-1).eq(2).all()
    assert agent.act_pi0(obs).eq(0).all() and h0.argmax(-1).eq(0).all()
    torch.testing.assert_close(agent.values(obs), values)
    torch.testing.assert_close(agent.values(obs[1:], slice(1, 2)), values[1:])


@pytest.mark.parametrize("name", names())
def test_a_batch_of_the_wrong_layout_is_one_clear_error(name):
    """Wrong K, a missing task axis or a wrong observation shape name the expected layout, even
    when the element count fits (a (K, E, 2, 2) batch of a (4,)-obs agent used to be flattened
    and acted on); pi0 is task-agnostic and takes any number of rows."""
    agent = build_agent(_cfg(name=name), "gridworld", (4,), A, K)
    assert agent.act(torch.zeros(K, 3, 4)).shape == (K, 3)
    assert agent.values(torch.zeros(1, 3, 4), tasks=slice(1, 2)).shape == (1, 3)
    for bad in ((K + 1, 3, 4), (3, 4), (K, 3, 2, 2), (K, 3, 5)):
        for call in (agent.act, agent.values):
            with pytest.raises(ValueError, match=r"task-major \(K=2, E, 4\); got"):
                call(torch.zeros(bad))
    with pytest.raises(ValueError, match=r"\(K=1, E, 4\) \(tasks 1:2\)"):
        agent.act(torch.zeros(K, 3, 4), tasks=slice(1, 2))
    if isinstance(agent, DistralAgent):
        assert agent.act_pi0(torch.zeros(5, 1, 4)).shape == (5, 1)
        with pytest.raises(ValueError, match=r"\(K, E, 4\); got \(5, 1, 3\)"):
            agent.act_pi0(torch.zeros(5, 1, 3))


def test_one_task_agnostic_a2c_network_acts_for_any_number_of_tasks():
    agent = build_agent(_cfg(name="a2c_multitask", task_heads=False), "gridworld", (4,), A, K)
    assert agent.act(torch.zeros(K + 3, 2, 4)).shape == (K + 3, 2)
    with pytest.raises(ValueError, match="got"):
        agent.act(torch.zeros(K, 2, 5))
    # any number of rows: neither a row count nor the tasks' slice belongs in the layout named
    with pytest.raises(ValueError) as e:
        agent.act(torch.zeros(K, 2, 5), tasks=slice(1, 2))
    assert str(e.value) == "a2c_multitask: observations must be task-major (K, E, 4); got (2, 2, 5)"
