"""TensorBoard scalars of the supervised :class:`~mtrl.trainer.Trainer`, under the RL runner's
key scheme: ``task/<name>/loss``, ``weights/<name>``, ``losses/total``, ``charts/sps`` and
``charts/nonfinite_steps`` per logged step; ``task/<name>/<metric>`` (training) and
``task/<name>/test_<metric>`` per epoch. The writer (``torch.utils.tensorboard``) is opened
lazily, on the first scalar, so a Trainer without ``log_dir`` never imports TensorBoard.

The same scalars are kept in memory, with or without a ``log_dir``, for the figure at the end
of a run and for a notebook (:attr:`TrainerLog.history`): each series thinned to at most
``MAX_POINTS`` by keeping every other point, and saved in the Trainer's checkpoints so that a
resumed run's history starts at its beginning.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

#: Points kept per series of :attr:`TrainerLog.history` (a long run's curve is thinned).
MAX_POINTS = 5000


class Series:
    """One scalar against the optimiser step. Every ``stride``-th value offered is kept; past
    ``max_points`` every other kept point is dropped and the stride doubles, so a series stays
    evenly spaced over the whole run at bounded memory (and checkpoint size). Stored in typed
    arrays: a checkpoint per step (the 2-D toy) copies them into tensors without a Python loop
    over the points."""

    def __init__(self, max_points: int = MAX_POINTS) -> None:
        self._steps = array("q")
        self._values = array("d")
        self.stride, self.offered, self.max_points = 1, 0, max_points

    @property
    def steps(self) -> list[int]:
        """The steps of the kept points, increasing."""
        return self._steps.tolist()

    @property
    def values(self) -> list[float]:
        """The kept values (NaN where a step was skipped as non-finite)."""
        return self._values.tolist()

    def add(self, step: int, value: float) -> None:
        """Offer ``value`` at ``step``: kept if it falls on the stride."""
        if self.offered % self.stride == 0:
            self._steps.append(step)
            self._values.append(value)
            if len(self._steps) > self.max_points:
                self._steps, self._values = self._steps[::2], self._values[::2]
                self.stride *= 2
        self.offered += 1

    def state(self) -> dict[str, Any]:
        """Tensors and ints (``torch.load(weights_only=True)`` reads them back)."""
        return {
            "steps": _tensor(self._steps, torch.int64),
            "values": _tensor(self._values, torch.float64),
            "stride": self.stride,
            "offered": self.offered,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], max_points: int = MAX_POINTS) -> Series:
        """The series :meth:`state` described."""
        series = cls(max_points)
        series._steps = array("q", state["steps"].to(torch.int64).tolist())
        series._values = array("d", state["values"].to(torch.float64).tolist())
        series.stride, series.offered = int(state["stride"]), int(state["offered"])
        return series


def _tensor(values: array[Any], dtype: torch.dtype) -> Tensor:
    """A tensor copy of a typed array (``torch.frombuffer`` refuses an empty buffer)."""
    if not values:
        return torch.zeros(0, dtype=dtype)
    return torch.frombuffer(values, dtype=dtype).clone()


class TrainerLog:
    """Scalars of one run into ``log_dir`` (nothing at all when it is None)."""

    def __init__(self, log_dir: str | Path | None, task_names: Sequence[str]) -> None:
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.task_names = list(task_names)
        self._writer: Any = None
        #: ``{key: Series}`` under the TensorBoard keys (``task/<name>/loss``, ``weights/<name>``
        #: per logged step; ``task/<name>/<metric>`` and ``task/<name>/test_<metric>`` per epoch,
        #: the training loss included there as ``task/<name>/epoch_loss``)
        self.history: dict[str, Series] = {}

    def _keep(self, key: str, step: int, value: float) -> None:
        series = self.history.get(key)
        if series is None:
            series = self.history[key] = Series()
        series.add(step, value)

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
        pairs = zip(self.task_names, losses.tolist(), weights.tolist(), strict=True)
        for name, loss, weight in pairs:
            for key, value in ((f"task/{name}/loss", loss), (f"weights/{name}", weight)):
                self._keep(key, step, value)
                if w is not None:
                    w.add_scalar(key, value, step)
        if w is None:
            return
        w.add_scalar("losses/total", float(losses.sum()), step)
        w.add_scalar("charts/sps", sps, step)
        w.add_scalar("charts/nonfinite_steps", skipped, step)

    def metrics(self, step: int, stats: dict[str, dict[str, float]], prefix: str) -> None:
        """Epoch-level ``task/<name>/<prefix><metric>`` (training metrics, then test_*); the
        training loss is left to :meth:`step` (in :attr:`history` it is ``epoch_loss``)."""
        w = self.writer
        for name, values in stats.items():
            for key, value in values.items():
                if not prefix and key == "loss":  # logged per step; the epoch's mean kept apart
                    self._keep(f"task/{name}/epoch_loss", step, value)
                    continue
                tag = f"task/{name}/{prefix}{key}"
                self._keep(tag, step, value)
                if w is not None:
                    w.add_scalar(tag, value, step)

    def state_dict(self) -> dict[str, Any]:
        """:attr:`history` as tensors and ints (for the Trainer's checkpoint)."""
        return {key: series.state() for key, series in self.history.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :attr:`history` from :meth:`state_dict` (a resumed run continues it)."""
        self.history = {key: Series.from_state(value) for key, value in state.items()}

    def flush(self) -> None:
        """Write pending events to disk (if a writer is open)."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Close the writer (if one was opened); a later scalar opens a new one."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
