"""Agents by name: ``build_agent(cfg, suite, obs_shape, num_actions, num_tasks)``.

:data:`AGENTS` maps each ``agent.name`` to a builder ``(cfg, suite, obs_shape, num_actions,
num_tasks) -> Agent``; ``@AGENTS.register("my_agent")`` on a builder adds one (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable

from agents.a2c import A2CAgent
from agents.base import Agent
from agents.config import ConfigError
from agents.config_schema import AgentConfig
from agents.distral import DistralAgent
from mtrl.registry import Registry

Builder = Callable[[AgentConfig, str, tuple[int, ...], int, int], Agent]


def _a2c_multitask(
    cfg: AgentConfig, suite: str, obs: tuple[int, ...], num_actions: int, k: int
) -> Agent:
    return A2CAgent(cfg, suite, obs, num_actions, k, True, cfg.task_heads, "a2c_multitask")


def _a2c_independent(
    cfg: AgentConfig, suite: str, obs: tuple[int, ...], num_actions: int, k: int
) -> Agent:
    return A2CAgent(cfg, suite, obs, num_actions, k, False, True, "a2c_independent")


def _distral(two_column: bool, kl_only: bool, regularise: bool = True) -> Builder:
    def build(
        cfg: AgentConfig, suite: str, obs: tuple[int, ...], num_actions: int, k: int
    ) -> Agent:
        return DistralAgent(
            cfg, suite, obs, num_actions, k, two_column, kl_only, regularise, name=cfg.name
        )

    return build


AGENTS: Registry[Agent] = Registry("agent")  # builder functions returning an Agent
AGENTS.register("a2c_multitask")(_a2c_multitask)
AGENTS.register("a2c_independent")(_a2c_independent)
AGENTS.register("a2c_2col")(_distral(two_column=True, kl_only=False, regularise=False))
AGENTS.register("distral_kl_1col")(_distral(two_column=False, kl_only=True))
AGENTS.register("distral_kl_2col")(_distral(two_column=True, kl_only=True))
AGENTS.register("distral_klent_1col")(_distral(two_column=False, kl_only=False))
AGENTS.register("distral_klent_2col")(_distral(two_column=True, kl_only=False))


_DISTRAL = ("distral_kl_1col", "distral_kl_2col", "distral_klent_1col", "distral_klent_2col")
_A2C = ("a2c_multitask", "a2c_independent", "a2c_2col")  # the baselines, A2C's objective
#: Agent-specific settings and the built-in agents that read them (a value other than the
#: schema's default on another built-in agent has no effect, which build_agent notes).
SPECIFIC_SETTINGS: dict[str, tuple[str, ...]] = {
    "task_heads": ("a2c_multitask",),
    "shared_encoder": ("a2c_2col", "distral_kl_2col", "distral_klent_2col"),
    "alpha": ("distral_klent_1col", "distral_klent_2col"),  # the KL-only agents fix alpha = 1
    "beta": _DISTRAL,
    "c_kl": _DISTRAL,
    "c_ent": _DISTRAL,
    "distill_lr": ("a2c_2col", *_DISTRAL),  # the h0 / pi0 column's optimiser
    "distill_discount": _DISTRAL,
}
#: Optimiser settings and the ``agent.optimizer`` values that read them.
OPTIMIZER_SETTINGS: dict[str, tuple[str, ...]] = {
    "rmsprop_alpha": ("rmsprop",),
    "rmsprop_init": ("rmsprop",),
}
_BUILT_IN = frozenset(AGENTS.names())  # before any user registration


def ignored_settings(cfg: AgentConfig, suite: str | None = None) -> list[str]:
    """Notes on settings that a built-in agent does not read, when they differ from the schema's
    default: agent-specific ones (``agent.shared_encoder=true`` on a2c_multitask), RMSprop's
    under ``agent.optimizer=adam``, and ``agent.hidden`` (the gridworld MLP's) on ``suite``s
    with a conv encoder; and an A2C baseline left without an entropy bonus (a Distral preset's
    ``agent.ent_coef=0`` under ``agent.name=a2c_*``: a weaker baseline than the A2C presets)."""
    if cfg.name not in _BUILT_IN:  # a user's agent may read any of them
        return []
    default = AgentConfig()
    notes = [
        f"agent.{key}={getattr(cfg, key)!r} has no effect on {cfg.name} (it applies to "
        f"{', '.join(users)})"
        for key, users in SPECIFIC_SETTINGS.items()
        if cfg.name not in users and getattr(cfg, key) != getattr(default, key)
    ]
    notes += [
        f"agent.{key}={getattr(cfg, key)!r} has no effect with agent.optimizer={cfg.optimizer!r} "
        f"(it applies to {', '.join(users)})"
        for key, users in OPTIMIZER_SETTINGS.items()
        if cfg.optimizer not in users and getattr(cfg, key) != getattr(default, key)
    ]
    if cfg.name in _A2C and cfg.ent_coef == 0:
        notes.append(
            f"agent.ent_coef=0: {cfg.name} trains without A2C's entropy bonus (the Distral presets "
            "set 0, Distral having its own entropy term; the A2C presets, configs/*_a2c*.yaml, "
            "use 0.01)"
        )
    if suite not in (None, "gridworld") and cfg.hidden:
        notes.append(
            f"agent.hidden={cfg.hidden!r} has no effect on {suite} (it sets the gridworld MLP's "
            f"sizes; {suite} uses a fixed conv encoder)"
        )
    return notes


def names() -> list[str]:
    """Registered agent names (the valid values of ``agent.name``)."""
    return AGENTS.names()


def build_agent(
    cfg: AgentConfig, suite: str, obs_shape: tuple[int, ...], num_actions: int, num_tasks: int
) -> Agent:
    """Build the agent ``cfg.name``; an unknown name raises ConfigError listing the valid ones."""
    if cfg.name not in AGENTS:
        raise ConfigError(
            f"agent.name={cfg.name!r} is not an agent; choose one of: {', '.join(names())}"
        )
    agent = AGENTS.get(cfg.name)(cfg, suite, tuple(obs_shape), num_actions, num_tasks)
    agent.notes = (*agent.notes, *ignored_settings(cfg, suite))  # train.py prints them
    # the name that summary.json, checkpoints and resume checks carry is the config's
    agent.name = cfg.name
    return agent
