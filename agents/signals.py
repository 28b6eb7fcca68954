"""Graceful stop on SIGINT/SIGTERM: finish the current update, checkpoint, exit 130/143.

The first signal only sets a flag that the training loop polls after each update; a second one
raises ``KeyboardInterrupt`` at once (checkpoint writes are atomic, so the last good one survives).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import TYPE_CHECKING

from mtrl.guard import DivergenceError  # noqa: F401  (re-exported: one error for RL and supervised runs)

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11


class Interrupted(Exception):
    """Training stopped on a signal; ``exit_code`` is 128 + signum. ``saved_step`` is the step of
    the newest checkpoint (``step`` itself unless writing it was impossible; 0: none)."""

    def __init__(self, signum: int, step: int, saved_step: int | None = None) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step = signum, step
        self.saved_step = step if saved_step is None else saved_step

    def resume_hint(self, run_dir: object) -> str:
        """The one line to print: what was saved and how to continue."""
        if self.saved_step == self.step:
            return f"{self}; checkpoint written; continue with: python train.py --resume {run_dir}"
        if self.saved_step > 0:
            return (
                f"{self}; no checkpoint at this step (an env worker had died); continue from "
                f"step {self.saved_step} with: python train.py --resume {run_dir}"
            )
        return f"{self}; no checkpoint was written (an env worker had died); start the run again"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopFlag:
    """Context manager turning SIGINT/SIGTERM into a polled flag (main thread only).

    ``install=False`` leaves the caller's handlers in place (the flag then never rises): for a
    caller that stops the run itself, e.g. a benchmark whose run directory is thrown away."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, install: bool = True) -> None:
        self.signum: int | None = None
        self.install = install
        self._old: dict[int, object] = {}

    def __enter__(self) -> Self:
        if self.install and threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # second signal: stop now
            self.restore()
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"{signal.Signals(signum).name}: finishing the current update and writing a "
            "checkpoint (send it again to exit at once)",
            file=sys.stderr,
            flush=True,
        )

    def restore(self) -> None:
        """Put the previous handlers back."""
        for s, old in self._old.items():
            signal.signal(s, old)  # type: ignore[arg-type]
        self._old = {}

    def __exit__(
        self, tp: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.restore()
