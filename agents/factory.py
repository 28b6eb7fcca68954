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


def _a2c_multitask(cfg: AgentConfig, suite: str, obs, num_actions: int, k: int) -> Agent:
    return A2CAgent(cfg, suite, obs, num_actions, k, True, cfg.task_heads, "a2c_multitask")


def _a2c_independent(cfg: AgentConfig, suite: str, obs, num_actions: int, k: int) -> Agent:
    return A2CAgent(cfg, suite, obs, num_actions, k, False, True, "a2c_independent")


def _distral(two_column: bool, kl_only: bool, regularise: bool = True) -> Builder:
    def build(cfg: AgentConfig, suite: str, obs, num_actions: int, k: int) -> Agent:
        return DistralAgent(
            cfg, suite, obs, num_actions, k, two_column, kl_only, regularise, name=cfg.name
        )

    return build


AGENTS: Registry[Builder] = Registry("agent")
AGENTS.register("a2c_multitask")(_a2c_multitask)
AGENTS.register("a2c_independent")(_a2c_independent)
AGENTS.register("a2c_2col")(_distral(two_column=True, kl_only=False, regularise=False))
AGENTS.register("distral_kl_1col")(_distral(two_column=False, kl_only=True))
AGENTS.register("distral_kl_2col")(_distral(two_column=True, kl_only=True))
AGENTS.register("distral_klent_1col")(_distral(two_column=False, kl_only=False))
AGENTS.register("distral_klent_2col")(_distral(two_column=True, kl_only=False))


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
    # the name that summary.json, checkpoints and resume checks carry is the config's
    agent.name = cfg.name
    return agent
