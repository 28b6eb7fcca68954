"""TensorBoard scalars of the supervised :class:`~mtrl.trainer.Trainer`, under the RL runner's
key scheme: ``task/<name>/loss``, ``weights/<name>``, ``losses/total``, ``charts/sps`` and
``charts/nonfinite_steps`` per logged step; ``task/<name>/<metric>`` (training) and
``task/<name>/test_<metric>`` per epoch. The writer (``torch.utils.tensorboard``) is opened
lazily, on the first scalar, so a Trainer without ``log_dir`` never imports TensorBoard.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor


class TrainerLog:
    """Scalars of one run into ``log_dir`` (nothing at all when it is None)."""

    def __init__(self, log_dir: str | Path | None, task_names: Sequence[str]) -> None:
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.task_names = list(task_names)
        self._writer: Any = None

    @property
    def writer(self) -> Any:
        """The ``SummaryWriter`` (opened now if need be), or None without a ``log_dir``."""
        if self._writer is None and self.log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir))
        return self._writer

    def step(self, step: int, losses: Tensor, weights: Tensor, sps: float, skipped: int) -> None:
        """Per-task loss and weight (T,), their total, steps/s and the non-finite skip count."""
        w = self.writer
        if w is None:
            return
        for name, loss, weight in zip(self.task_names, losses.tolist(), weights.tolist()):
            w.add_scalar(f"task/{name}/loss", loss, step)
            w.add_scalar(f"weights/{name}", weight, step)
        w.add_scalar("losses/total", float(losses.sum()), step)
        w.add_scalar("charts/sps", sps, step)
        w.add_scalar("charts/nonfinite_steps", skipped, step)

    def metrics(self, step: int, stats: dict[str, dict[str, float]], prefix: str) -> None:
        """Epoch-level ``task/<name>/<prefix><metric>`` (training metrics, then test_*); the
        training loss is left to :meth:`step`."""
        w = self.writer
        if w is None:
            return
        for name, values in stats.items():
            for key, value in values.items():
                if prefix or key != "loss":
                    w.add_scalar(f"task/{name}/{prefix}{key}", value, step)

    def flush(self) -> None:
        """Write pending events to disk (if a writer is open)."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Close the writer (if one was opened); a later scalar opens a new one."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
