"""What every agent provides to the runner: acting, values, per-task losses and optimisers.

An agent acts on task-major observation batches (K, E, *obs) without autograd; ``task_losses``
runs one batched forward pass over a filled :class:`~agents.rollout.Rollout` and returns one loss
per task (K,) (so a loss-weighting method can combine them) and named terms for logging (scalars,
or (K,) per-task diagnostics). Agents hold no env or logging code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.autograd.graph import increment_version
from torch.nn import functional as F

from agents.config_schema import AgentConfig
from agents.optim import FusedRMSprop
from agents.replay import Tape, encoders, recording, replaying
from agents.rollout import Rollout
from agents.signals import DivergenceError


def sample_actions(logits: Tensor, greedy: bool = False) -> Tensor:
    """Sample (or argmax) actions from logits (..., A) -> (...) int64."""
    if greedy:
        return logits.argmax(-1)
    probs = F.softmax(logits.detach(), dim=-1)
    if not bool(torch.isfinite(probs).all()):
        raise DivergenceError(
            "training diverged: the policy's action probabilities are not finite (the parameters "
            "overflowed; lower agent.lr or agent.max_grad_norm)"
        )
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1)
    return flat.view(probs.shape[:-1])


def log_prob_entropy(logits: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
    """log pi(a|s) and entropy H(pi(.|s)) from logits (..., A) and actions (...)."""
    logp = F.log_softmax(logits, dim=-1)
    chosen = logp.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return chosen, entropy


class Agent(nn.Module):
    """Base class of the RL agents (Distral and the A2C baselines)."""

    name: str = "agent"
    notes: tuple[str, ...] = ()  # remarks on the configuration, printed by train.py at start

    #: Task k's loss reaches only task k's rows of the loss pass (A2C's and Distral's losses):
    #: the runner then takes per-task gradients of the encoders' shared layers in one backward
    #: (agents.blocked). An agent whose losses mix tasks' samples sets it False.
    separable_losses: bool = True

    def __init__(self, cfg: AgentConfig, num_tasks: int, obs_shape: tuple[int, ...] = ()):
        super().__init__()
        self.cfg = cfg
        self.num_tasks = num_tasks
        self.obs_shape = tuple(obs_shape)  # one env's observation; () skips the input check
        self._encoders: list[nn.Module] | None = None  # found on first use (agents.replay)
        self.blockable: set[int] = set()  # encoder parameter ids, once a loss pass ran

    def check_obs(self, obs: Tensor, tasks: slice | None = None, per_task: bool = True) -> None:
        """ValueError naming the expected layout unless ``obs`` is (K, E, *obs_shape), K being the
        number of tasks (or of ``tasks``); ``per_task=False`` accepts any K (a task-agnostic
        network such as pi0). Without it a wrong batch fails deep inside torch, or, when its
        element count happens to fit, is silently reinterpreted."""
        if not self.obs_shape:
            return
        k = self.num_tasks if tasks is None else len(range(self.num_tasks)[tasks])
        shape = tuple(obs.shape)
        fits = shape[2:] == self.obs_shape and len(shape) == len(self.obs_shape) + 2
        if fits and (not per_task or shape[0] == k):
            return
        rows = "K" if not per_task else f"K={k}"
        which = "" if tasks is None or not per_task else f" (tasks {tasks.start}:{tasks.stop})"
        raise ValueError(
            f"{self.name}: observations must be task-major ({rows}, E, "
            f"{', '.join(map(str, self.obs_shape))}){which}; got {shape}"
        )

    def _encoder_modules(self) -> list[nn.Module]:
        if self._encoders is None:
            self._encoders = encoders(self)
        return self._encoders

    def _tapes(self) -> list[Tape]:
        return [cast(Tape, enc.tape) for enc in self._encoder_modules()]

    def begin_rollout(self, num_steps: int) -> None:
        """Start recording the acting passes of a rollout for the loss pass (agents.replay);
        ``agent.replay_forward=false`` keeps the memory and recomputes instead."""
        if not self.cfg.replay_forward:
            return
        # a record is stale once its own encoder's weights change
        for enc, tape in zip(self._encoder_modules(), self._tapes(), strict=True):
            tape.begin(num_steps, self.num_tasks, list(enc.parameters()))

    @torch.no_grad()
    def step(self, obs: Tensor, tasks: slice | None = None, t: int | None = None) -> Tensor:
        """Training actions (K, E) sampled from the task policies at obs (K, E, *obs).

        ``tasks`` names the tasks of the K rows when they are a contiguous subset of all tasks;
        ``t`` is the rollout step, whose activations the loss pass then reuses.
        """
        with recording(self._tapes(), t, tasks, self.num_tasks):
            return self.act(obs, greedy=False, tasks=tasks)

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Context for the loss pass over ``rollout.step_obs()``: encoders that recorded the whole
        rollout return their recorded activations (same values, backward only), the others
        recompute. Either way their shared layers can then split weight gradients by task:
        ``blockable`` holds the ``id`` of every encoder parameter (:mod:`agents.blocked`)."""
        self.blockable = {id(p) for enc in self._encoder_modules() for p in enc.parameters()}
        with replaying(self._tapes()):
            yield

    @torch.no_grad()
    def values(self, obs: Tensor, tasks: slice | None = None) -> Tensor:
        """State values (K, E) for bootstrapping (no graph)."""
        raise NotImplementedError(f"{type(self).__name__} must implement values(obs, tasks)")

    @torch.no_grad()
    def act(self, obs: Tensor, greedy: bool = True, tasks: slice | None = None) -> Tensor:
        """Evaluation actions (K, E) of the task policies."""
        raise NotImplementedError(f"{type(self).__name__} must implement act(obs, greedy, tasks)")

    def task_losses(self, rollout: Rollout) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-task losses (K,) with graph, and named terms for logging: scalars (logged as
        ``losses/<name>``) or (K,) per-task values (``task/<task>/<name>`` too)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement task_losses(rollout) -> (losses (K,), terms)"
        )

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters that receive gradients from several tasks (for gradient-weighting methods)."""
        return []

    def make_optimizers(self) -> list[torch.optim.Optimizer]:
        """Optimisers over disjoint parameter sets; the runner steps each after backward."""
        return [make_optimizer(self.cfg, self.parameters())]


def make_optimizer(
    cfg: AgentConfig, params: Iterable[Tensor], lr: float | None = None
) -> torch.optim.Optimizer:
    """RMSprop (A2C/A3C's choice, eps 1e-5 as in the SB3 zoo) or Adam, from the agent config.

    Both run fused (one pass over memory per step; see agents.optim). torch's fused kernel
    updates the parameters without bumping their version counters, so a step hook does: the
    replay tape relies on versions to see that the weights changed since it recorded.
    """
    lr = cfg.lr if lr is None else lr
    opt: torch.optim.Optimizer
    if cfg.optimizer == "rmsprop":
        opt = FusedRMSprop(
            params, lr=lr, alpha=cfg.rmsprop_alpha, eps=cfg.eps,
            initial_square_avg=cfg.rmsprop_init,
        )  # fmt: skip
    else:
        opt = torch.optim.Adam(params, lr=lr, eps=cfg.eps, fused=True)
    opt.register_step_post_hook(_mark_updated)
    return opt


def _mark_updated(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Step post-hook: record that every parameter of ``opt`` changed in place."""
    increment_version([p for group in opt.param_groups for p in group["params"]])
