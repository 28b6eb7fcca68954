"""Typed run configuration: dataclass schema, YAML presets and dotted command-line overrides.

The dataclasses are the schema (types, defaults, one-line docs in ``metadata["help"]``); OmegaConf
merges a YAML preset and ``key=value`` overrides onto it and rejects unknown keys and wrong types.
Every user mistake surfaces as one :class:`ConfigError` whose message names the key, the value and
what is valid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A user's mistake in a config file, an override or a run directory."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a one-line ``help`` shown by ``train.py --help``."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
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
    tasks: list[str] = _f([], "task names (games or goal digits); empty = the suite's default")
    num_envs_per_task: int = _f(4, "parallel environments per task")
    task_groups: int = _f(
        0, "pipeline acting over this many task groups (0 = auto: 2 on cuda, 1 on cpu)"
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

    name: str = _f("a2c_multitask", "agent: see agents.factory.names()")
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
    weighting: str = _f("equal", "task loss weighting: see mtrl.weighting.names()")
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


#: Run seeds lie in [0, SEED_LIMIT): a slot seed (seed + 1000 * task + env) then stays below
#: 2**31, which the native ALE (a C int) needs.
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


def _get(cfg: Any, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def validate(
    cfg: Any,
    choices: dict[str, tuple[str, ...]] | None = None,
    ranges: dict[str, tuple[Any, str]] | None = None,
) -> None:
    """Check choices and ranges that the type system cannot express; raise ConfigError.
    ``choices`` / ``ranges`` default to the RL schema's tables (other schemas pass their own)."""
    for key, value in _floats(cfg):
        if not math.isfinite(value):  # "Inf"/"nan" parse as floats and pass every "> 0" check
            raise ConfigError(f"{key}={value!r} is out of range; it must be a finite number")
    for key, valid in (_CHOICES if choices is None else choices).items():
        value = _get(cfg, key)
        if value not in valid:
            raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(valid)}")
    for key, (ok, desc) in (_RANGES if ranges is None else ranges).items():
        value = _get(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key}={value!r} is out of range; it must be {desc}")


def _floats(node: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, value) of every float field of a (nested) config dataclass."""
    out: list[tuple[str, float]] = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out += _floats(value, key + ".")
        elif isinstance(value, float):
            out.append((key, value))
    return out


def _omegaconf_message(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if type(err).__name__ == "ConfigKeyError" and key:
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        where = f" of {parent!r}" if parent else ""
        return (
            f"unknown config key {key!r}; the valid fields{where} are listed by "
            "`python train.py --help` (RL runs) and in docs/mtrl.md (supervised runs)"
        )
    return _friendlier(key, first)


def _friendlier(key: str | None, first: str) -> str:
    """OmegaConf's wording of common mistakes, rephrased to name the fix."""
    if "is not a ListConfig" in first and key:
        return (
            f"{key} must be a list: write {key}=[a,b] (in YAML, {key.rsplit('.', 1)[-1]}: [a, b])"
        )
    m = re.match(r"Merge error: (\w+) is not a subclass of (\w+)\. value: (.*)", first)
    if m:
        section = _section_names(Config).get(m.group(2), m.group(2))
        return (
            f"{section} must be a section of keys, not {m.group(3)!r}: write "
            f"{section}.<key>=<value> (`python train.py --help` lists them)"
        )
    if key and ("is not Optional" in first or first.startswith("Incompatible value 'None'")):
        return f"{key} needs a value (an empty one reads as null); see `python train.py --help`"
    m = re.match(r"Value '(.*)' of type '(\w+)' could not be converted to (\w+)", first)
    if m and key:
        value, kind = m.group(1), {"Integer": "an integer", "Float": "a number"}.get(m.group(3))
        if kind is not None:
            hint = ""
            with contextlib.suppress(ValueError, OverflowError):
                number = float(value)  # YAML and OmegaConf read 1e6 as text or a float
                if kind == "an integer" and number.is_integer():
                    hint = f"; write it in full: {int(number)}"
            return f"{key}={value} is not {kind}{hint}"
    return f"{key}: {first}" if key else first


def _section_names(cls: type, prefix: str = "") -> dict[str, str]:
    """Dataclass name -> its dotted section in the config (e.g. 'AgentConfig' -> 'agent')."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if callable(f.default_factory) else f.default
        if dataclasses.is_dataclass(default):
            out[type(default).__name__] = prefix + f.name
            out.update(_section_names(type(default), prefix + f.name + "."))
    return out


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: object, line: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key set twice in one mapping (it keeps the last one
    silently, so a forgotten earlier setting would win or lose unseen)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if not isinstance(key, str | int | float | bool):
                continue  # unhashable keys: PyYAML's own error follows
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def one_line(message: object) -> str:
    """``message`` with every non-printable character (newlines too) escaped: one line, for the
    ``error:`` lines of the command-line entry points."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in the YAML file at ``path`` ({} if empty); any problem is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found; pass an existing YAML file")
    try:
        data = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader
    except _DuplicateKey as e:
        raise ConfigError(
            f"config file {str(p)!r} sets {e.key!r} twice at line {e.line}; keep one"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys, not a list")
    return data


def merge_structured(
    schema: type, data: dict[str, Any] | None = None, overrides: list[str] | None = None
) -> Any:
    """Merge the dataclass ``schema``'s defaults, ``data`` and ``key=value`` overrides into an
    instance of ``schema`` (unknown keys and wrong types raise ConfigError)."""
    layers: list[Any] = [OmegaConf.structured(schema)]
    if data is not None:
        layers.append(data)
    for item in overrides or []:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} must look like key=value (e.g. seed=3)")
        if not item.isprintable():  # YAML would fold a newline into a space, silently
            raise ConfigError(
                f"override {item!r} contains a control character (newline, tab, ...); "
                "give the value without it"
            )
    try:
        if overrides:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_omegaconf_message(e)) from None
    except yaml.YAMLError as e:  # e.g. an unclosed bracket in an override (key=[1,)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"an override is not valid YAML: {first}") from None
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e).splitlines()[0]) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Merge schema defaults, the YAML file at ``path`` and ``key=value`` overrides; validate."""
    data = None if path is None else read_yaml(path)
    cfg = merge_structured(Config, data, overrides)
    assert isinstance(cfg, Config)
    validate(cfg)
    return cfg


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML text (saved beside every run and checkpoint)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def diff_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain nested dicts (for checkpoints)."""
    return dataclasses.asdict(cfg)


def help_text() -> str:
    """One line per config field with its type, default and doc (for ``train.py --help``)."""
    lines: list[str] = []

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(f.type) or (
                isinstance(f.type, str) and f.type.endswith("Config")
            ):
                sub = _SECTIONS[f.type if isinstance(f.type, str) else f.type.__name__]
                walk(sub, key + ".")
                continue
            default = (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
            ftype = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            lines.append(f"  {key:<38} {ftype:<10} {default!r:<14} {f.metadata.get('help', '')}")

    walk(Config, "")
    return "\n".join(lines)


_SECTIONS: dict[str, type] = {
    c.__name__: c
    for c in (AtariConfig, MinAtarConfig, GridworldConfig, EnvConfig, AgentConfig, EvalConfig)
}
