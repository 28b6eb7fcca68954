"""``train.py``'s entry point for supervised runs: start or resume one, print what it trains,
and turn errors and signals into one line and an exit code (0, 2 user error, 3 diverged, 130
SIGINT, 143 SIGTERM). The run itself is :mod:`agents.supervised`."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from agents.config import ConfigError, one_line
from agents.signals import Interrupted, StopFlag
from agents.supervised import execute, prepare, prepare_resume
from agents.supervised_config import SupervisedConfig
from mtrl.io import discard_if_empty

if TYPE_CHECKING:
    from mtrl.trainer import Trainer


class EpochStop(StopFlag):
    """:class:`StopFlag` for supervised runs. Before ``training`` is set, a signal stops at once
    (nothing is written yet); then the first one ends training after the current epoch and its
    checkpoint (the resumable unit), and a second one at once. SIGINT is handled even when the
    process inherited it ignored (a background job of a shell script)."""

    def __init__(self) -> None:
        super().__init__()
        self.training = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.training or self.signum is not None:
            self.signum = self.signum or signum
            self.restore()
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"{signal.Signals(signum).name}: finishing the current epoch and writing its "
            "checkpoint (send it again to exit at once)",
            file=sys.stderr,
            flush=True,
        )


def main(config: str | Path | None, overrides: list[str], resume: str | Path | None = None) -> int:
    """``train.py`` entry point for supervised files (``config``), or ``--resume`` of a
    supervised run directory (training continues from its last epoch; ``config`` None): exit
    code 0, 2 (user error), 3 (diverged), 130 (SIGINT) or 143 (SIGTERM)."""
    from mtrl.guard import DivergenceError
    from mtrl.registry import UnknownNameError

    created: list[Path] = []  # a new run's directories, empty until it starts
    with EpochStop() as stop:
        try:
            if resume is not None:
                run_dir = Path(resume)
                trainer, cfg = prepare_resume(run_dir, overrides)
            else:
                assert config is not None, "main() needs a config file or a run to resume"
                trainer, cfg, run_dir, created = prepare(config, overrides)
        except (ConfigError, UnknownNameError) as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            signum = stop.signum or signal.SIGINT
            name = signal.Signals(signum).name
            print(
                f"interrupted by {name} before training started; nothing was written",
                file=sys.stderr,
            )
            return 128 + signum
        stop.training = True
        try:
            print(_start_line(trainer, cfg, run_dir, resumed=resume is not None), flush=True)
        except BrokenPipeError:  # stdout's reader is gone before the run began: nothing stays
            trainer.close()
            for path in created:
                discard_if_empty(path)
            raise
        try:
            summary = execute(trainer, cfg, run_dir, stop)
        except Interrupted as e:
            print(e.resume_hint(run_dir), file=sys.stderr)
            return e.exit_code
        except DivergenceError as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 3
        except KeyboardInterrupt:  # a second signal: the last checkpoint stays
            signum = stop.signum or signal.SIGINT
            print(_abort_hint(signum, trainer.step, run_dir), file=sys.stderr)
            return 128 + signum
    sps = summary["steps_per_s"]
    speed = "steps/s n/a: nothing was left to train" if sps is None else f"{sps:.0f} steps/s"
    print(f"run written to {run_dir} ({speed})")
    for name, stats in summary["tasks"].items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.4g}" for k, v in stats.items()))
    if "pareto_stationarity" in summary:
        print(
            f"  point {summary['point']}, pareto stationarity {summary['pareto_stationarity']:.3g}"
        )
    return 0


def _start_line(trainer: Trainer, cfg: SupervisedConfig, run_dir: Path, resumed: bool) -> str:
    """What the run trains and where, printed first (as train.py's RL runs do)."""
    what = f"{cfg.weighting.name} on {cfg.benchmark.name} ({', '.join(trainer.task_names)})"
    if resumed and trainer.epoch >= cfg.epochs:
        return f"already finished at epoch {trainer.epoch}: evaluating {what} in {run_dir}"
    action = f"resuming at epoch {trainer.epoch}" if resumed else "training"
    epochs = f"{cfg.epochs} epoch{'' if cfg.epochs == 1 else 's'}"
    return f"{action}: {what} for {epochs} in {run_dir}; Ctrl-C stops after the current epoch"


def _abort_hint(signum: int, step: int, run_dir: Path) -> str:
    """The line for a run stopped at once (mid-epoch): where it can continue from, if anywhere."""
    what = f"interrupted by {signal.Signals(signum).name} at step {step}"
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return f"{what}; continue from the last checkpoint with: python train.py --resume {run_dir}"
    return f"{what}, before any checkpoint was written; start again"
