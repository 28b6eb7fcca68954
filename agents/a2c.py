"""Synchronous advantage actor-critic (A2C; Mnih et al. 2016) over the multi-task batch.

Two baselines of Distral (Teh et al. 2017): ``a2c_multitask`` (hard sharing: one encoder for all
tasks, per-task policy and value heads by default; the paper's baseline is one task-agnostic
network, ``agent.task_heads=false``, kept off by default because a gridworld observation does not
say which goal is the task's, so a single head could not tell the tasks apart) and
``a2c_independent`` (one network per task, evaluated as one grouped computation). Each task's
loss is its own A2C loss, the mean over its samples,
``L_k = (1/(T*E)) * sum over task-k samples of [-A log pi(a|s) + c_v (R - V)^2 - c_H H(pi)]``:
a task's own parameters (``a2c_independent``'s networks, Distral's task columns) get exactly what
a separate A2C learner on its samples would, and are clipped per task. An optimiser that holds
shared parameters divides its gradient by K (``agents.guards``): the mean over tasks, i.e. a
single-task A2C's gradient on the pooled batch, as one network trained on all tasks has
(``a2c_multitask``, per-task heads included, and Distral's pi0).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from agents.base import Agent, log_prob_entropy, sample_actions
from agents.config_schema import AgentConfig
from agents.networks import ActorCritic
from agents.returns import gae
from agents.rollout import Rollout


def a2c_terms(
    rollout: Rollout,
    log_prob: Tensor,
    entropy: Tensor,
    values: Tensor,
    last_values: Tensor,
    cfg: AgentConfig,
    rewards: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """A2C per-task losses (K,) from (T, K, E) log-probs, entropies and values.

    ``rewards`` (T, K, E) replaces the env rewards when given (Distral's regularised rewards).
    Returns the per-task losses and detached batch-mean terms ``policy``, ``value``, ``entropy``
    and ``advantage``.
    """
    r = rollout.rewards if rewards is None else rewards
    adv, ret = gae(
        r,
        values.detach(),
        rollout.terminated,
        rollout.truncated,
        rollout.final_values,
        last_values,
        cfg.gamma,
        cfg.gae_lambda,
    )
    adv, ret = adv.detach(), ret.detach()  # targets: no gradient into the rewards or values
    policy = -(adv * log_prob)
    value = (ret - values).pow(2)
    per_sample = policy + cfg.vf_coef * value - cfg.ent_coef * entropy
    task_losses = per_sample.mean(dim=(0, 2))  # each task's own batch mean
    terms = {
        "policy": policy.detach().mean(),
        "value": value.detach().mean(),
        "entropy": entropy.detach().mean(),
        "advantage": adv.mean(),
    }
    return task_losses, terms


class A2CAgent(Agent):
    """A2C with one :class:`ActorCritic`; sharing decided by ``shared_encoder``/``task_heads``."""

    def __init__(
        self,
        cfg: AgentConfig,
        suite: str,
        obs_shape: tuple[int, ...],
        num_actions: int,
        num_tasks: int,
        shared_encoder: bool,
        task_heads: bool = True,
        name: str = "a2c",
    ):
        super().__init__(cfg, num_tasks, obs_shape)
        self.name = name
        # one task-agnostic network (task_heads=false, shared encoder) acts for any number of rows
        self._per_task = not (shared_encoder and not task_heads)
        self.net = ActorCritic(
            suite, obs_shape, num_actions, num_tasks, shared_encoder, task_heads, cfg.hidden
        )

    @torch.no_grad()
    def values(self, obs: Tensor, tasks: slice | None = None) -> Tensor:
        self.check_obs(obs, tasks, self._per_task)
        return self.net(obs, tasks)[1]

    @torch.no_grad()
    def act(self, obs: Tensor, greedy: bool = True, tasks: slice | None = None) -> Tensor:
        self.check_obs(obs, tasks, self._per_task)
        return sample_actions(self.net(obs, tasks)[0], greedy)

    def task_losses(self, rollout: Rollout) -> tuple[Tensor, dict[str, Tensor]]:
        last_values = self.values(rollout.last_obs())
        with self.replay():
            logits, values = self.net(rollout.step_obs())
        logits, values = rollout.unflatten(logits), rollout.unflatten(values)
        log_prob, entropy = log_prob_entropy(logits, rollout.actions)
        return a2c_terms(rollout, log_prob, entropy, values, last_values, self.cfg)

    def shared_parameters(self) -> list[nn.Parameter]:
        return self.net.shared_parameters()
