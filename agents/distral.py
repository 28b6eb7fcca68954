"""Distral (Teh et al. 2017, "Distral: Robust Multitask Reinforcement Learning", arXiv:1707.04175).

A shared distilled policy pi0 and one policy pi_i per task. Each task policy is trained by n-step
actor-critic on the regularised reward ``r + (alpha/beta) log pi0(a|s) - (1/beta) log pi_i(a|s)``;
pi0 is trained by distillation, i.e. by the full-distribution gradient of
``(alpha/beta) sum_t gamma^t log pi0(a_t|s_t)``: per state ``(alpha/beta) gamma^t (pi0 - pi_i)``
with respect to pi0's logits h0, which minimises KL(pi_i || pi0).

- **1-column**: pi0 = softmax(h0(s)) is its own network; pi_i = softmax(f_i(s)) are K independent
  networks (evaluated as one grouped computation) with their value heads.
- **2-column**: pi_i = softmax(alpha * h0(s) + beta * f_i(s)). h0 receives the task policy gradients
  through ``alpha * h0`` *and* the distillation gradient; f_i only its task's gradients. The task
  head outputs ``beta * f_i`` itself (its weights are beta times those of a head for f_i): the
  same policies and objective, but beta no longer scales how far an optimiser step moves the
  logits. A head for f_i times beta = 100 started pi_i near uniform, but its first RMSprop steps
  moved the logits 100x as far: pi_i was at ~0.2 of 2.9 nats after two updates on Atari, and
  every 2-column policy collapsed within 25.
- ``a2c_2col`` is the 2-column network trained as plain A2C (no KL, no distillation,
  logits h0 + f_i).

The paper trains with A3C; this is the synchronous (A2C) form of the same estimator. Two
choices the paper leaves open: pi0 and the task columns have separate optimisers, pi0's on the
mean of the tasks' gradients clipped to ``agent.max_grad_norm``, and each task's column clipped
to it on its own, as K separate learners would be (``agents.guards``), and
A2C's entropy bonus ``agent.ent_coef`` still applies when set (the Distral presets set 0, as the
regulariser's own entropy term replaces it; ``DistralAgent.notes`` says so when it is not).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from agents.a2c import a2c_terms
from agents.base import Agent, log_prob_entropy, make_optimizer, sample_actions
from agents.config import ConfigError
from agents.config_schema import AgentConfig
from agents.networks import GroupedLinear, make_encoder
from agents.rollout import Rollout
from mtrl.distill import distillation_loss, distral_coefficients, entropy, kl_divergence


def resolve_alpha_beta(cfg: AgentConfig, kl_only: bool) -> tuple[float, float]:
    """(alpha, beta) from ``agent.alpha/beta`` or ``agent.c_kl/c_ent``; KL variants force alpha=1."""
    if cfg.c_ent > 0 and cfg.c_kl <= 0:  # c_ent alone would be ignored silently
        raise ConfigError(
            f"agent.c_ent={cfg.c_ent} is used only together with agent.c_kl > 0; set agent.c_kl "
            "too, or give agent.alpha and agent.beta instead"
        )
    if cfg.c_kl > 0:
        default = AgentConfig()
        for key in ("beta",) if kl_only else ("alpha", "beta"):  # KL-only: alpha is noted
            if getattr(cfg, key) != getattr(default, key):  # else silently replaced
                raise ConfigError(
                    f"agent.{key}={getattr(cfg, key)} and agent.c_kl={cfg.c_kl} both set "
                    f"{cfg.name}'s coefficients (c_kl > 0 sets alpha and beta from c_kl and "
                    "c_ent); give agent.alpha/agent.beta or agent.c_kl/agent.c_ent, not both"
                )
        if kl_only and cfg.c_ent > 0:
            raise ConfigError(
                f"agent.c_ent={cfg.c_ent} adds an entropy term; {cfg.name} is KL-only (use c_ent=0 "
                "or a distral_klent_* agent)"
            )
        if not kl_only and cfg.c_ent <= 0:
            raise ConfigError(
                f"agent.c_ent={cfg.c_ent} means no entropy term; {cfg.name} needs c_ent > 0 "
                "(use a distral_kl_* agent for KL only)"
            )
        return distral_coefficients(cfg.c_kl, cfg.c_ent)
    if kl_only:
        return 1.0, cfg.beta
    if cfg.alpha >= 1.0:
        raise ConfigError(
            f"agent.alpha={cfg.alpha} means no entropy term; {cfg.name} needs alpha < 1 "
            "(use a distral_kl_* agent for alpha = 1)"
        )
    return cfg.alpha, cfg.beta


class DistralAgent(Agent):
    """Distral in 1- or 2-column form, or (``regularise=False``) the ``a2c_2col`` baseline."""

    def __init__(
        self,
        cfg: AgentConfig,
        suite: str,
        obs_shape: tuple[int, ...],
        num_actions: int,
        num_tasks: int,
        two_column: bool,
        kl_only: bool,
        regularise: bool = True,
        name: str = "distral",
    ):
        super().__init__(cfg, num_tasks, obs_shape)
        self.name, self.two_column, self.regularise = name, two_column, regularise
        if regularise:
            self.alpha, self.beta = resolve_alpha_beta(cfg, kl_only)
        else:
            self.alpha, self.beta = 1.0, 1.0
        if regularise and cfg.ent_coef > 0:
            self.notes = (
                f"agent.ent_coef={cfg.ent_coef} adds A2C's entropy bonus on top of {name}'s own "
                "regulariser, which the paper does not; set agent.ent_coef=0 for its objective",
            )
        share = two_column and cfg.shared_encoder
        # pi0 / h0 column: one network shared by every task, task-agnostic.
        self.pi0_encoder = make_encoder(suite, obs_shape, 1, cfg.hidden)
        d = self.pi0_encoder.feature_dim
        self.pi0_head = GroupedLinear(1, d, num_actions, gain=0.01)
        # Task columns: K independent encoders (one grouped computation) + per-task heads.
        self.task_encoder = None if share else make_encoder(suite, obs_shape, num_tasks, cfg.hidden)
        self.task_policy = GroupedLinear(num_tasks, d, num_actions, gain=0.01)
        self.task_value = GroupedLinear(num_tasks, d, 1, gain=1.0)

    # ------------------------------------------------------------------ forward
    def _forward(self, obs: Tensor, tasks: slice | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """obs (K, B, *obs) -> (task logits (K, B, A), h0 (K, B, A), values (K, B)).

        ``tasks`` names the tasks of the K rows when they are a contiguous subset of all tasks.
        """
        z0 = self.pi0_encoder(obs)
        h0 = self.pi0_head(z0)
        z = z0 if self.task_encoder is None else self.task_encoder(obs, tasks)
        f = self.task_policy(z, tasks)  # 2-column: beta * f_i (module docstring)
        values = self.task_value(z, tasks).squeeze(-1)
        logits = self.alpha * h0 + f if self.two_column else f
        return logits, h0, values

    @torch.no_grad()
    def values(self, obs: Tensor, tasks: slice | None = None) -> Tensor:
        self.check_obs(obs, tasks)
        z = self.pi0_encoder(obs) if self.task_encoder is None else self.task_encoder(obs, tasks)
        return self.task_value(z, tasks).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: Tensor, greedy: bool = True, tasks: slice | None = None) -> Tensor:
        self.check_obs(obs, tasks)
        if not self.two_column:  # 1-column: pi_i = softmax(f_i) does not need pi0 to act
            z = (
                self.pi0_encoder(obs)
                if self.task_encoder is None
                else self.task_encoder(obs, tasks)
            )
            return sample_actions(self.task_policy(z, tasks), greedy)
        return sample_actions(self._forward(obs, tasks)[0], greedy)

    @property
    def has_pi0(self) -> bool:
        """Whether softmax(h0) is a distilled policy pi0 worth evaluating (not for a2c_2col)."""
        return self.regularise

    @torch.no_grad()
    def act_pi0(self, obs: Tensor, greedy: bool = True) -> Tensor:
        """Actions (K, E) of the distilled multi-task policy pi0 (the one that transfers) at obs
        (K, E, *obs): task-agnostic, so K may be any number of tasks."""
        self.check_obs(obs, per_task=False)
        return sample_actions(self.pi0_head(self.pi0_encoder(obs)), greedy)

    # ------------------------------------------------------------------ losses
    def task_losses(self, rollout: Rollout) -> tuple[Tensor, dict[str, Tensor]]:
        last_values = self.values(rollout.last_obs())
        with self.replay():
            logits, h0, values = self._forward(rollout.step_obs())
        unflat = rollout.unflatten
        return self.losses_from_outputs(
            rollout, unflat(logits), unflat(h0), unflat(values), last_values
        )

    def losses_from_outputs(
        self, rollout: Rollout, logits: Tensor, h0: Tensor, values: Tensor, last_values: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Losses from (T, K, E, A) task logits and h0, (T, K, E) values, (K, E) bootstrap."""
        log_prob, ent = log_prob_entropy(logits, rollout.actions)
        rewards = rollout.rewards
        if self.regularise:
            log_pi0_a = F.log_softmax(h0, -1).gather(-1, rollout.actions.unsqueeze(-1)).squeeze(-1)
            rewards = (
                rewards
                + (self.alpha / self.beta) * log_pi0_a.detach()
                - (1.0 / self.beta) * log_prob.detach()
            )
        losses, terms = a2c_terms(
            rollout, log_prob, ent, values, last_values, self.cfg, rewards=rewards
        )
        terms["entropy"] = ent.detach().mean(dim=(0, 2))
        if self.regularise:
            # Per-task diagnostics (K,): KL(pi_i || pi0), pi0's entropy, the regularised reward.
            # Not for a2c_2col: its softmax(h0) is no distilled policy and its reward is raw.
            kl = kl_divergence(logits.detach(), h0.detach())
            terms["kl"] = kl.mean(dim=(0, 2))
            terms["entropy_pi0"] = entropy(h0.detach()).mean(dim=(0, 2))
            terms["regularised_reward"] = rewards.detach().mean(dim=(0, 2))
            rollout.learning_rewards = rewards.detach()
            # Distillation: (alpha/beta) gamma^t CE(pi_i || pi0), pi_i detached; gradient wrt h0 is
            # (alpha/beta) gamma^t (pi0 - pi_i) per state. Each task's mean, like the A2C terms
            # (pi0's optimiser divides the sum over tasks by K: the pooled batch's mean).
            weights = self.distill_weights(rollout)
            ce = distillation_loss(h0, logits, weights=weights, reduction="none")
            distill = (self.alpha / self.beta) * ce
            losses = losses + distill.mean(dim=(0, 2))
            terms["distill"] = distill.detach().mean()
        return losses, terms

    def distill_weights(self, rollout: Rollout) -> Tensor:
        """Each state's weight (T, K, E) in the distillation loss, before its factor alpha/beta:
        gamma^t (t the step in its episode), or 1 with ``agent.distill_discount=false``. Override
        it for another schedule (docs/extending.md); the regularised reward does not read it."""
        if self.cfg.distill_discount:
            return self.cfg.gamma**rollout.ep_time
        return torch.ones_like(rollout.ep_time)

    # ------------------------------------------------------------------ parameters
    def pi0_parameters(self) -> list[nn.Parameter]:
        """pi0's column (h0): its encoder and head (and the shared encoder, if configured)."""
        return [*self.pi0_encoder.parameters(), *self.pi0_head.parameters()]

    def task_parameters(self) -> list[nn.Parameter]:
        """The task columns f_i and the value heads."""
        enc = [] if self.task_encoder is None else list(self.task_encoder.parameters())
        return [*enc, *self.task_policy.parameters(), *self.task_value.parameters()]

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters that every task's loss reaches: pi0's column."""
        return self.pi0_parameters()

    def make_optimizers(self) -> list[torch.optim.Optimizer]:
        """Two optimisers over disjoint sets: task columns, and pi0 (own lr ``distill_lr``)."""
        lr0 = self.cfg.distill_lr or self.cfg.lr
        return [
            make_optimizer(self.cfg, self.task_parameters()),
            make_optimizer(self.cfg, self.pi0_parameters(), lr=lr0),
        ]
