"""The typed schema of supervised runs (``supervised:`` YAML files): dataclasses, checks, loader.

Overrides are dotted from the top, e.g. ``supervised.epochs=2``. The schema uses the same
machinery (OmegaConf structured configs, :class:`agents.config.ConfigError`) as the RL config;
:mod:`agents.supervised` builds and runs what it describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.config import ConfigError, merge_structured, read_yaml, validate
from agents.config_schema import SEED_LIMIT, _f

MARKER = "supervised"
BENCHMARKS = ("gradnorm_toy", "two_digits", "toy2d")


@dataclass
class BenchmarkConfig:
    """Which built-in benchmark (generated locally, no downloads) and its size."""

    name: str = _f("two_digits", "benchmark: gradnorm_toy | two_digits | toy2d")
    num_tasks: int = _f(2, "gradnorm_toy: number of regression tasks (sigmas log-spaced 1..100)")
    n_train: int = _f(2000, "training samples (gradnorm_toy, two_digits)")
    n_test: int = _f(500, "test samples (gradnorm_toy, two_digits)")
    data_seed: int = _f(0, "seed of the generated data set")
    shift: int = _f(8, "two_digits: column offset of the right digit (8 = side by side)")
    start: int = _f(0, "toy2d: index of the starting point in mtrl.data.STARTING_POINTS (0-4)")
    scale: float = _f(1.0, "toy2d: factor on L1 (0.1 in Nash-MTL's and FAMO's experiments)")


@dataclass
class ArchitectureConfig:
    """Multi-task architecture (mtrl.architectures.build_mlp); ignored by toy2d."""

    name: str = _f("hard_sharing", "architecture: see mtrl.architectures.names()")
    hidden: list[int] = _f([64, 64], "hidden layer widths of the (shared / per-task) MLP")
    kwargs: dict[str, Any] = _f({}, "extra keyword arguments of the architecture's mlp()")


@dataclass
class WeightingConfig:
    """Loss / gradient weighting (mtrl.weighting.build)."""

    name: str = _f("equal", "weighting: see mtrl.weighting.names()")
    kwargs: dict[str, Any] = _f({}, "extra keyword arguments of the weighting")


@dataclass
class SupervisedConfig:
    """A supervised multi-task training run."""

    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    architecture: ArchitectureConfig = field(default_factory=ArchitectureConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    optimizer: str = _f("adam", "optimizer: adam | sgd")
    lr: float = _f(1e-3, "learning rate")
    weight_decay: float = _f(0.0, "optimizer weight decay")
    epochs: int = _f(10, "passes over the training data (toy2d: optimisation steps)")
    batch_size: int = _f(64, "minibatch size")
    grad_clip: float = _f(0.0, "clip the total gradient norm (0 = off)")
    max_nonfinite_steps: int = _f(
        10, "non-finite steps (skipped) in a row that stop the run with exit 3 (0 = never stop)"
    )
    representation: str = _f("auto", "per-task gradients w.r.t. the shared features: auto|on|off")
    famo_update: str = _f(
        "same_batch", "famo: same_batch (paper, one more forward) | next_batch (no extra forward)"
    )
    seed: int = _f(0, "seed for model initialisation and shuffling")
    device: str = _f("auto", "auto | cpu | cuda (auto = cuda if available)")
    torch_threads: int = _f(0, "torch intra-op threads (0 = torch default)")
    run_dir: str = _f(
        "", "output directory (empty = runs/supervised-<benchmark>-<weighting>-<time>)"
    )
    log_every: int = _f(10, "optimizer steps between TensorBoard scalars")
    checkpoint_every: int = _f(
        1, "epochs between checkpoints (the last epoch and a stopped run's are always saved)"
    )
    progress: bool = _f(True, "show a progress bar")


@dataclass
class SupervisedRun:
    """The file layout: everything under one top-level ``supervised:`` key."""

    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)


_P = MARKER + "."
_CHOICES = {
    _P + "benchmark.name": BENCHMARKS,
    _P + "optimizer": ("adam", "sgd"),
    _P + "representation": ("auto", "on", "off"),
    _P + "device": ("auto", "cpu", "cuda"),
    _P + "famo_update": ("same_batch", "next_batch"),
}
_RANGES: dict[str, tuple[Any, str]] = {
    _P + "benchmark.num_tasks": (lambda v: v >= 1, ">= 1"),
    _P + "benchmark.n_train": (lambda v: v >= 1, ">= 1"),
    _P + "benchmark.n_test": (lambda v: v >= 1, ">= 1"),
    _P + "benchmark.shift": (
        lambda v: 1 <= v <= 8,
        "in [1, 8] (0 would make left and right the same)",
    ),
    _P + "benchmark.start": (lambda v: 0 <= v <= 4, "in [0, 4]"),
    _P + "benchmark.scale": (lambda v: v > 0, "> 0"),
    _P + "architecture.hidden": (lambda v: len(v) >= 1 and min(v) >= 1, "a list of sizes >= 1"),
    _P + "seed": (lambda v: 0 <= v < SEED_LIMIT, "in [0, 2**31 - 2**20)"),
    _P + "lr": (lambda v: v > 0, "> 0"),
    _P + "weight_decay": (lambda v: v >= 0, ">= 0"),
    _P + "epochs": (lambda v: v >= 1, ">= 1"),
    _P + "batch_size": (lambda v: v >= 1, ">= 1"),
    _P + "grad_clip": (lambda v: v >= 0, ">= 0 (0 = off)"),
    _P + "max_nonfinite_steps": (lambda v: v >= 0, ">= 0 (0 = never stop)"),
    _P + "torch_threads": (lambda v: v >= 0, ">= 0"),
    _P + "log_every": (lambda v: v >= 1, ">= 1"),
    _P + "checkpoint_every": (lambda v: v >= 1, ">= 1"),
}


def is_supervised_file(path: str | Path) -> bool:
    """True if the YAML file at ``path`` is a supervised run (top-level ``supervised:`` key)."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        data = read_yaml(p)
    except ConfigError:
        return False  # the normal loader reports the problem
    return MARKER in data


def _drop_stale_kwargs(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """An override of ``supervised.weighting.name`` (or ``architecture.name``) switches method; the
    file's ``kwargs`` belong to the file's method, so they go unless kwargs are overridden too."""
    section = data.get(MARKER)
    if not isinstance(section, dict):
        return data
    keys = [o.split("=", 1)[0].strip() for o in overrides]
    for part in ("weighting", "architecture"):
        sub = section.get(part)
        if not isinstance(sub, dict) or not sub.get("kwargs"):
            continue
        names = [
            o.split("=", 1)[1].strip() for o, k in zip(overrides, keys) if k == f"{_P}{part}.name"
        ]
        switched = bool(names) and names[-1] != str(sub.get("name"))
        if switched and not any(k.startswith(f"{_P}{part}.kwargs") for k in keys):
            section[part] = {k: v for k, v in sub.items() if k != "kwargs"}
    return data


def load_supervised(path: str | Path, overrides: list[str] | None = None) -> SupervisedConfig:
    """Merge schema defaults, the YAML file and ``supervised.key=value`` overrides; validate."""
    overrides = list(overrides or [])
    run = merge_structured(SupervisedRun, _drop_stale_kwargs(read_yaml(path), overrides), overrides)
    assert isinstance(run, SupervisedRun)
    # YAML reads on/off (and yes/no) as booleans
    bools = {"True": "on", "False": "off"}
    run.supervised.representation = bools.get(
        run.supervised.representation, run.supervised.representation
    )
    validate(run, _CHOICES, _RANGES)
    from mtrl import architectures, weighting

    for key, name, valid in (
        ("weighting.name", run.supervised.weighting.name, weighting.names()),
        ("architecture.name", run.supervised.architecture.name, architectures.names()),
    ):
        if name not in valid:
            raise ConfigError(f"{_P}{key}={name!r} is not valid; choose one of: {', '.join(valid)}")
    return run.supervised


def to_yaml(cfg: SupervisedConfig) -> str:
    """The resolved config as YAML text, in the file layout (reloadable by load_supervised)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(SupervisedRun(cfg)))
