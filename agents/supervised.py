"""Supervised multi-task runs from YAML: build, run and resume them (``run_supervised``).

A YAML file whose top level is one ``supervised:`` mapping is a supervised run; ``train.py``
hands it to :func:`agents.supervised_cli.main`, which builds and runs it here. Its schema lives
in :mod:`agents.supervised_config`. The run itself is :class:`mtrl.trainer.Trainer` on a
built-in benchmark (mtrl.data): ``gradnorm_toy`` (Chen et al. 2018), ``two_digits`` (MultiMNIST
stand-in, Sener and Koltun 2018) or ``toy2d`` (CAGrad's two-objective toy, Liu et al. 2021).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from agents.config import ConfigError, diff_keys, one_line
from agents.seeding import (
    flushing_denormals,
    resolve_device,
    seed_everything,
    start_flushing_workers,
)
from agents.signals import Interrupted, StopFlag
from agents.supervised_config import (
    _P,
    SupervisedConfig,
    load_supervised,
    to_yaml,
)
from agents.supervised_report import draw_training_figure
from agents.supervised_run import (
    SUPERVISED_RESUME_SAFE,
    check_checkpoint_config,
    claim_run_dir,
    make_run_dir,
    os_reason,
    unloadable,
)
from mtrl.architectures.base import MultiTaskModel
from mtrl.io import atomic_write, check_writable, discard_if_empty

if TYPE_CHECKING:
    from mtrl.trainer import Trainer


class PointModel(MultiTaskModel):
    """toy2d as a model: the only parameter is the point x (2,); task t's output is L_t(x)
    broadcast to (B,), so the trainer's loss is its mean. All of x is shared."""

    def __init__(self, start: Tensor, scale: float = 1.0) -> None:
        super().__init__()
        self.num_tasks, self.scale = 2, scale
        self.point = nn.Parameter(start.detach().clone().float())

    def forward_all(self, x: Tensor) -> list[Tensor]:
        from mtrl.data import toy_losses

        values = toy_losses(self.point, self.scale)
        return [values[t].expand(x.shape[0]) for t in range(2)]

    def task_parameters(self, t: int) -> list[nn.Parameter]:
        return []


def _mean_output(output: Tensor, target: Tensor) -> Tensor:
    return output.mean()


def build_problem(cfg: SupervisedConfig) -> dict[str, Any]:
    """Data, model, per-task losses/metrics and task names for ``cfg.benchmark``."""
    from mtrl.architectures import build_mlp
    from mtrl.data import STARTING_POINTS, make_gradnorm_toy, make_two_digits
    from mtrl.metrics import accuracy, cross_entropy, mse

    b, arch = cfg.benchmark, cfg.architecture
    if b.name == "toy2d":
        x, y = torch.zeros(1, 1), torch.zeros(1, 2)
        return {
            "model": PointModel(STARTING_POINTS[b.start], b.scale),
            "train": (x, y),
            "test": (x, y),
            "losses": [_mean_output, _mean_output],
            "metrics": [{}, {}],
            "names": ["f1", "f2"],
        }
    if b.name == "gradnorm_toy":
        d = make_gradnorm_toy(b.num_tasks, n_train=b.n_train, n_test=b.n_test, seed=b.data_seed)
        out_dims = [d["y_train"].shape[-1]] * b.num_tasks
        losses: list[Callable[[Tensor, Tensor], Tensor]] = [nn.functional.mse_loss] * b.num_tasks
        metrics = [{"mse": mse}] * b.num_tasks
        names = [f"sigma{float(s):g}" for s in d["sigmas"]]
        train, test = (d["x_train"], d["y_train"]), (d["x_test"], d["y_test"])
    else:  # two_digits
        d = make_two_digits(b.n_train, b.n_test, seed=b.data_seed, shift=b.shift)
        train = (d["x_train"].flatten(1), d["y_train"])
        test = (d["x_test"].flatten(1), d["y_test"])
        out_dims, names = [10, 10], ["left", "right"]
        losses, metrics = [cross_entropy] * 2, [{"accuracy": accuracy}] * 2
    try:
        model = build_mlp(arch.name, train[0].shape[1], arch.hidden, out_dims, **arch.kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{_P}architecture: {str(e).splitlines()[0]}") from None
    return {
        "model": model,
        "train": train,
        "test": test,
        "losses": losses,
        "metrics": metrics,
        "names": names,
    }


def build_trainer(cfg: SupervisedConfig, run_dir: Path | None) -> Trainer:
    """Seed, pick the device and build the :class:`mtrl.trainer.Trainer` (validates kwargs)."""
    from mtrl import weighting
    from mtrl.trainer import NoSharedParametersWarning, Trainer

    device = resolve_device(cfg.device)
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    start_flushing_workers()
    seed_everything(cfg.seed)
    problem = build_problem(cfg)
    model: MultiTaskModel = problem["model"]
    kwargs = dict(cfg.weighting.kwargs)
    if cfg.benchmark.name == "toy2d" and cfg.weighting.name == "famo":
        # FAMO needs lower bounds of the losses, 0 by default; toy2d's go below 0
        from mtrl.data import toy_loss_bounds

        kwargs.setdefault("min_losses", toy_loss_bounds(cfg.benchmark.scale))
    try:
        w = weighting.build(cfg.weighting.name, model.num_tasks, **kwargs)
    except (TypeError, ValueError) as e:
        hint = "".join(f"; set {_P}weighting.kwargs.{m}=<value>" for m in getattr(e, "missing", []))
        raise ConfigError(f"{_P}weighting: {str(e).splitlines()[0]}{hint}") from None
    dim = getattr(w, "feature_dim", None)
    if getattr(w, "needs_features", False) and model.supports_features and dim is not None:
        with torch.no_grad():  # GREAT's classifier reads z: its width must match (else mid-run)
            width = model.features(problem["train"][0][:1]).shape[-1]
        if width != dim:
            raise ConfigError(
                f"{_P}weighting.kwargs.feature_dim={dim} is not the width of the shared "
                f"representation of {cfg.architecture.name}, {width}; set "
                f"{_P}weighting.kwargs.feature_dim={width}"
            )
    opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.SGD
    optimizer = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    toy = cfg.benchmark.name == "toy2d"
    modes: dict[str, bool | str] = {"auto": "auto", "on": True, "off": False}
    representation = modes[cfg.representation]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NoSharedParametersWarning)
            trainer = Trainer(
                model,
                w,
                optimizer,
                problem["losses"],
                problem["metrics"],
                train_data=problem["train"],
                test_data=problem["test"],
                task_names=problem["names"],
                epochs=cfg.epochs,
                batch_size=1 if toy else cfg.batch_size,
                device=device,
                log_dir=run_dir,
                checkpoint_path=None if run_dir is None else run_dir / "checkpoints" / "last.pt",
                representation=representation,
                famo_update=cfg.famo_update,
                grad_clip=cfg.grad_clip,
                max_nonfinite_steps=cfg.max_nonfinite_steps,
                log_every=cfg.log_every,
                checkpoint_every=cfg.checkpoint_every,
                progress=cfg.progress,
                seed=cfg.seed,
                run_config=dataclasses.asdict(cfg),
            )
    except ValueError as e:
        key = "representation" if "representation" in str(e) else "weighting"
        raise ConfigError(f"{_P}{key}: {str(e).splitlines()[0]}") from None
    for seen in caught:  # a gradient method that trains as equal weighting: one note line
        if issubclass(seen.category, NoSharedParametersWarning):
            print(
                f"note: {_P}weighting.name={cfg.weighting.name!r}: {seen.message}", file=sys.stderr
            )
        else:
            warnings.warn_explicit(seen.message, seen.category, seen.filename, seen.lineno)
    return trainer


def prepare(
    config: str | Path, overrides: list[str] | None = None
) -> tuple[Trainer, SupervisedConfig, Path, list[Path]]:
    """Load, validate and build everything before anything is written: ``(trainer, config,
    run_dir, created)``, ``created`` being the directories made for the run, deepest first
    (still empty: the caller removes them if it stops before training)."""
    cfg = load_supervised(config, overrides)
    if cfg.run_dir:
        run_dir = Path(cfg.run_dir)
        created = make_run_dir(run_dir)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"supervised-{cfg.benchmark.name}-{cfg.weighting.name}-{stamp}"
        base = Path("runs") / name
        parent_is_new = not base.parent.exists()  # runs/ itself goes too if this run made it
        run_dir = claim_run_dir(base)
        created = [run_dir, base.parent] if parent_is_new else [run_dir]
        cfg.run_dir = str(run_dir)  # config.yaml and checkpoints name the automatic directory
    try:
        trainer = build_trainer(cfg, run_dir)
    except BaseException:  # a bad option, or a signal while building: nothing half-written
        for path in created:
            discard_if_empty(path)
        raise
    return trainer, cfg, run_dir, created


def prepare_resume(
    run_dir: Path, overrides: list[str] | None = None
) -> tuple[Trainer, SupervisedConfig]:
    """Rebuild a supervised run from ``run_dir/config.yaml`` and load its last checkpoint, after
    checking that the two agree and that ``run_dir`` is writable: ``(trainer, config)``. Reads
    only: nothing changes."""
    ckpt = run_dir / "checkpoints" / "last.pt"
    if not ckpt.is_file():
        raise ConfigError(f"no checkpoint at {str(ckpt)!r}; nothing to resume")
    cfg = load_supervised(run_dir / "config.yaml", overrides)
    saved = load_supervised(run_dir / "config.yaml")
    if overrides:  # the checkpoint was trained under the saved config: only run settings change
        changed = diff_keys(dataclasses.asdict(saved), dataclasses.asdict(cfg))
        bad = [k for k in changed if not k.startswith(SUPERVISED_RESUME_SAFE)]
        if bad:
            raise ConfigError(
                f"cannot change {', '.join(_P + k for k in bad)} when resuming; only "
                f"{', '.join(_P + k for k in SUPERVISED_RESUME_SAFE)} may change"
            )
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        epoch = int(state["epoch"])
    except Exception as e:  # any unreadable or foreign file: one clear line
        raise unloadable(ckpt, e) from None
    check_checkpoint_config(run_dir, saved, state.get("config"))
    if cfg.epochs < epoch:
        raise ConfigError(
            f"{_P}epochs={cfg.epochs} is below the {epoch} epochs the checkpoint has finished; "
            f"pass {_P}epochs={epoch} or more"
        )
    for directory in (run_dir, ckpt.parent):  # config.yaml, events, summary.json; last.pt
        try:
            check_writable(directory)
        except OSError as e:
            raise ConfigError(
                f"run directory {str(run_dir)!r} cannot be written to: "
                f"{os_reason(e, run_dir)}; a resume writes its checkpoint and summary there"
            ) from None
    trainer = build_trainer(cfg, run_dir)
    try:
        trainer.load_state_dict(state)
    except Exception as e:
        raise unloadable(ckpt, e) from None
    return trainer, cfg


def run_supervised(cfg: SupervisedConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train and evaluate ``cfg``; write ``run_dir/config.yaml``, TensorBoard events,
    ``checkpoints/last.pt`` and ``summary.json`` (per-task test metrics); return the summary."""
    run_dir = Path(run_dir or cfg.run_dir or f"runs/supervised-{cfg.benchmark.name}")
    trainer = build_trainer(cfg, run_dir)
    return execute(trainer, cfg, run_dir)


def execute(
    trainer: Any, cfg: SupervisedConfig, run_dir: Path, stop: StopFlag | None = None
) -> dict[str, Any]:
    """Write config.yaml, train to ``cfg.epochs`` and write summary.json. With ``stop``, a signal
    it caught ends training after the current epoch's checkpoint: :class:`Interrupted`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "config.yaml", to_yaml(cfg).encode())
    writer = trainer.log.writer
    if writer is not None:
        writer.add_text("config", "```\n" + to_yaml(cfg) + "\n```", 0)
    first_step = trainer.step  # a resumed run's earlier sessions do not count for its speed
    try:
        with flushing_denormals(), warnings.catch_warnings():
            warnings.showwarning = _warning_line  # the Trainer's skipped steps: one line each
            result = trainer.fit(None if stop is None else lambda: stop.signum is not None)
    finally:
        trainer.close()
    if result.get("stopped"):
        assert stop is not None and stop.signum is not None
        raise Interrupted(stop.signum, trainer.step)
    steps = result["steps"] - first_step
    summary: dict[str, Any] = {
        "benchmark": cfg.benchmark.name,
        # toy2d optimises a point: no architecture (the setting is ignored there)
        "architecture": None if cfg.benchmark.name == "toy2d" else cfg.architecture.name,
        "weighting": cfg.weighting.name,
        "epochs": result["epochs"],
        "steps": result["steps"],
        "session_steps": steps,
        "seconds": result["seconds"],
        "steps_per_s": steps / max(result["seconds"], 1e-9) if steps else None,
        "tasks": result.get("test", {}),
    }
    if cfg.benchmark.name == "toy2d":
        from mtrl.data import pareto_stationarity, toy_losses

        point = trainer.model.point.detach().cpu().double()
        summary["point"] = point.tolist()
        summary["losses"] = toy_losses(point, cfg.benchmark.scale).tolist()
        summary["pareto_stationarity"] = pareto_stationarity(point, cfg.benchmark.scale)
    atomic_write(run_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    draw_training_figure(run_dir, trainer, cfg)
    return summary


def _warning_line(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    """Print a warning as one ``warning: ...`` line on stderr (not Python's two-line format)."""
    print(f"warning: {one_line(message)}", file=sys.stderr, flush=True)
