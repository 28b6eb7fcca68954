"""Schema of the typed run configuration: the dataclasses (types, defaults, one-line docs in
``metadata["help"]``), the choices and ranges their types cannot express, and the field listing of
``train.py --help``. Loading a preset with overrides onto it, and validating, is agents/config.py.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a one-line ``help`` shown by ``train.py --help``."""
    if isinstance(default, list | dict):

        def fresh() -> Any:  # a new list/dict per instance, not the default shared
            return type(default)(default)

        return field(default_factory=fresh, metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class AtariConfig:
    """ALE preprocessing knobs (Mnih 2015; Machado 2018), all explicit rather than v5 defaults."""

    frameskip: int = _f(4, "emulator frames per agent step (max-pooled over the last 2)")
    repeat_action_probability: float = _f(0.25, "sticky-action probability (Machado 2018)")
    noop_max: int = _f(30, "up to this many no-op actions at episode start")
    frame_stack: int = _f(4, "number of stacked 84x84 grayscale frames")
    screen_size: int = _f(84, "square observation size in pixels")
    clip_rewards: bool = _f(True, "learn from sign(reward); episode returns stay raw")
    terminal_on_life_loss: bool = _f(False, "end the learning episode on a life loss")
    full_action_space: bool = _f(True, "use all 18 ALE actions (needed for multi-game)")
    max_episode_steps: int = _f(27000, "agent steps before truncation (27000 = 108k frames)")
    backend: str = _f("auto", "vector backend: auto | native (ale-py C++) | gymnasium")


@dataclass
class MinAtarConfig:
    """MinAtar settings (Young and Tian 2019)."""

    sticky_action_prob: float = _f(0.1, "probability of repeating the previous action")
    max_episode_steps: int = _f(10000, "agent steps before truncation")


@dataclass
class GridworldConfig:
    """Gridworld settings: a shipped map name or a path to an ASCII map file."""

    map: str = _f("four_rooms", "shipped map name or path to a .txt map ('#', '.', digits, 'S')")
    max_episode_steps: int = _f(0, "agent steps before truncation (0 = 4 * (height + width))")


@dataclass
class EnvConfig:
    """Which suite and tasks, and how many parallel envs per task."""

    suite: str = _f("gridworld", "environment suite: atari | minatar | gridworld")
    tasks: list[str] = _f(
        [],
        "task names (games or goal digits); empty = the suite's default (a run's config.yaml "
        "lists the tasks it trained)",
    )
    num_envs_per_task: int = _f(4, "parallel environments per task")
    task_groups: int = _f(
        0,
        "pipeline acting over this many task groups (0 = auto: 2 on cuda, 1 on cpu); Atari's "
        "native backend only, other envs step all tasks together; same results, only speed",
    )
    workers: bool = _f(
        False, "step each task's envs in a subprocess; dead or raising workers are restarted"
    )
    atari: AtariConfig = field(default_factory=AtariConfig)
    minatar: MinAtarConfig = field(default_factory=MinAtarConfig)
    gridworld: GridworldConfig = field(default_factory=GridworldConfig)


@dataclass
class AgentConfig:
    """Agent choice and its optimisation hyperparameters (A2C defaults from the SB3 zoo)."""

    name: str = _f("a2c_multitask", "agent (names listed at the end of --help)")
    n_steps: int = _f(5, "rollout length per update (n of the n-step return)")
    gamma: float = _f(0.99, "discount factor")
    gae_lambda: float = _f(1.0, "GAE lambda (1.0 = plain n-step returns as in A2C)")
    lr: float = _f(7e-4, "learning rate")
    optimizer: str = _f("rmsprop", "optimizer: rmsprop | adam")
    rmsprop_alpha: float = _f(0.99, "RMSprop smoothing constant (ignored with adam)")
    rmsprop_init: float = _f(
        0.0,
        "RMSprop's initial mean square: 0 as torch; 1 as TensorFlow 1, OpenAI baselines and the "
        "SB3 zoo's Atari A2C (RMSpropTFLike), whose first steps are small, not ~10 lr each "
        "(ignored with adam)",
    )
    eps: float = _f(1e-5, "optimizer epsilon")
    ent_coef: float = _f(0.01, "A2C entropy bonus coefficient (Distral: on top of its own term)")
    vf_coef: float = _f(0.25, "value loss coefficient")
    max_grad_norm: float = _f(0.5, "gradient clipping norm (0 = off)")
    replay_forward: bool = _f(
        True, "loss pass reuses the acting passes' activations (same values; False = recompute)"
    )
    weighting: str = _f("equal", "task loss weighting (names listed at the end of --help)")
    weighting_kwargs: dict[str, Any] = _f(
        {}, "options of agent.weighting, e.g. agent.weighting_kwargs.c=0.4 for cagrad"
    )
    hidden: list[int] = _f([], "MLP encoder hidden sizes (gridworld); empty = suite default")
    task_heads: bool = _f(True, "a2c_multitask: per-task policy/value heads (False = one head)")
    alpha: float = _f(0.5, "Distral alpha = c_KL/(c_KL+c_Ent); forced to 1 by the *_kl_* agents")
    beta: float = _f(100.0, "Distral beta = 1/(c_KL+c_Ent): inverse strength of the regulariser")
    c_kl: float = _f(0.0, "Distral KL cost; > 0 sets alpha and beta from (c_kl, c_ent)")
    c_ent: float = _f(0.0, "Distral entropy cost, used with c_kl")
    distill_lr: float = _f(0.0, "learning rate of pi0's optimiser (0 = agent.lr)")
    distill_discount: bool = _f(True, "weight pi0's distillation by gamma^t (t = episode step)")
    shared_encoder: bool = _f(False, "2-column agents: one encoder for both columns (faster)")


@dataclass
class EvalConfig:
    """Settings of the final evaluation (and of ``train.py --resume`` of a finished run)."""

    episodes: int = _f(10, "episodes per task")
    greedy: bool = _f(True, "act with the most likely action instead of sampling")
    num_envs_per_task: int = _f(0, "parallel eval envs per task (0 = as in training)")
    max_steps: int = _f(50000, "cap on agent steps per eval env")


@dataclass
class Config:
    """A full training run."""

    seed: int = _f(0, "seed for torch, numpy, python and the environments")
    device: str = _f("auto", "auto | cpu | cuda (auto = cuda if available)")
    total_steps: int = _f(200000, "environment steps summed over all envs")
    run_dir: str = _f("", "output directory (empty = runs/<agent>-<suite>-<time>)")
    torch_threads: int = _f(0, "torch intra-op threads (0 = torch default)")
    deterministic: bool = _f(False, "use deterministic torch algorithms (slower on GPU)")
    log_interval: int = _f(10000, "environment steps between TensorBoard scalars")
    checkpoint_interval: int = _f(500000, "environment steps between checkpoints")
    checkpoint_minutes: float = _f(30.0, "wall-clock minutes between checkpoints (0 = off)")
    keep_checkpoints: int = _f(3, "number of step_<N>.pt checkpoints kept (last.pt is the newest)")
    max_nonfinite_updates: int = _f(
        10, "stop after this many non-finite updates in a row (0 = never stop)"
    )
    progress: bool = _f(True, "show a progress bar")
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


#: Run seeds lie in [0, SEED_LIMIT): envs.base.SEED_LIMIT, written out here so that the schema
#: (train.py --help) does not import gymnasium; a test keeps the two equal.
SEED_LIMIT = 2**31 - 2**20

_CHOICES = {
    "device": ("auto", "cpu", "cuda"),
    "env.suite": ("atari", "minatar", "gridworld"),
    "env.atari.backend": ("auto", "native", "gymnasium"),
    "agent.optimizer": ("rmsprop", "adam"),
}

# key -> (predicate, description of the valid range)
_RANGES: dict[str, tuple[Any, str]] = {
    "total_steps": (lambda v: v > 0, "a positive integer"),
    # numpy seeds are 32-bit and slot seeds add 1000 * task + env, so keep room below 2**31
    "seed": (lambda v: 0 <= v < SEED_LIMIT, "in [0, 2**31 - 2**20)"),
    "torch_threads": (lambda v: v >= 0, ">= 0"),
    "log_interval": (lambda v: v > 0, "a positive integer"),
    "checkpoint_interval": (lambda v: v > 0, "a positive integer"),
    "checkpoint_minutes": (lambda v: v >= 0, ">= 0 (0 = off)"),
    "keep_checkpoints": (lambda v: v >= 1, ">= 1"),
    "max_nonfinite_updates": (lambda v: v >= 0, ">= 0 (0 = never stop)"),
    # slot seeds are seed + 1000 * task + env (envs.base.slot_seeds): more envs per task
    # would collide
    "env.num_envs_per_task": (
        lambda v: 1 <= v <= 1000,
        "in [1, 1000] (slot seeds are seed + 1000*task + env)",
    ),
    "env.task_groups": (lambda v: v >= 0, ">= 0 (0 = auto)"),
    "env.atari.frameskip": (lambda v: v >= 1, ">= 1"),
    "env.atari.repeat_action_probability": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "env.atari.noop_max": (lambda v: v >= 0, ">= 0"),
    "env.atari.frame_stack": (lambda v: v >= 1, ">= 1"),
    "env.atari.screen_size": (lambda v: v >= 16, ">= 16"),
    "env.atari.max_episode_steps": (lambda v: v >= 1, ">= 1"),
    "env.minatar.sticky_action_prob": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "env.minatar.max_episode_steps": (lambda v: v >= 1, ">= 1"),
    "env.gridworld.max_episode_steps": (lambda v: v >= 0, ">= 0"),
    "agent.n_steps": (lambda v: v >= 1, ">= 1"),
    "agent.gamma": (lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "agent.gae_lambda": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "agent.lr": (lambda v: v > 0, "> 0"),
    "agent.rmsprop_alpha": (lambda v: 0.0 < v < 1.0, "in (0, 1)"),
    "agent.rmsprop_init": (lambda v: v >= 0, ">= 0"),
    "agent.eps": (lambda v: v > 0, "> 0"),
    "agent.ent_coef": (lambda v: v >= 0, ">= 0"),
    "agent.vf_coef": (lambda v: v >= 0, ">= 0"),
    "agent.max_grad_norm": (lambda v: v >= 0, ">= 0 (0 = off)"),
    "agent.hidden": (lambda v: all(h >= 1 for h in v), "a list of positive sizes"),
    "agent.alpha": (lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "agent.beta": (lambda v: v > 0, "> 0"),
    "agent.c_kl": (lambda v: v >= 0, ">= 0 (0 = use alpha and beta)"),
    "agent.c_ent": (lambda v: v >= 0, ">= 0"),
    "agent.distill_lr": (lambda v: v >= 0, ">= 0 (0 = agent.lr)"),
    "eval.episodes": (lambda v: v >= 0, ">= 0"),
    "eval.num_envs_per_task": (lambda v: 0 <= v <= 1000, "in [0, 1000] (0 = as in training)"),
    "eval.max_steps": (lambda v: v >= 1, ">= 1"),
}


def inert_suite_settings(cfg: Config) -> list[str]:
    """Notes on ``env.<suite>.*`` settings of a suite other than ``env.suite`` that differ from
    the schema's default: the run never reads them (``env.atari.frameskip=2`` on MinAtar)."""
    notes = []
    for suite in (f.name for f in dataclasses.fields(cfg.env)):
        section = getattr(cfg.env, suite)
        if suite == cfg.env.suite or not dataclasses.is_dataclass(type(section)):
            continue  # the run's own suite, or not a suite's section (tasks, workers, ...)
        default = type(section)()
        notes += [
            f"env.{suite}.{f.name}={getattr(section, f.name)!r} has no effect with "
            f"env.suite={cfg.env.suite!r}"
            for f in dataclasses.fields(section)
            if getattr(section, f.name) != getattr(default, f.name)
        ]
    return notes


def help_text(schema: type | None = None, prefix: str = "") -> str:
    """One line per field of ``schema`` (default :class:`Config`; nested sections' fields
    dotted, after ``prefix``) with its type, default and doc (for ``train.py --help``)."""
    rows: list[tuple[str, str, str, str]] = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)  # the classes behind the annotations' strings
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(hints[f.name]):  # a nested section: its fields, prefixed
                walk(hints[f.name], key + ".")
                continue
            default = (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
            ftype = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            rows.append((key, ftype, repr(default), f.metadata.get("help", "")))

    walk(Config if schema is None else schema, prefix)
    widths = [max(len(row[i]) for row in rows) for i in range(3)]  # aligned columns
    return "\n".join(
        "  " + " ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + " " + row[3]
        for row in rows
    )
