"""Divergence guard of :class:`mtrl.trainer.Trainer`: skip non-finite steps (the Trainer puts
the weighting's state back from a :func:`mtrl.state.state_snapshot`), stop when they persist,
and never checkpoint non-finite parameters (the RL runner's rules, without its config)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor


class DivergenceError(RuntimeError):
    """Training diverged: too many non-finite steps in a row, or non-finite parameters."""


class NonFiniteGuard:
    """Counts steps skipped for a non-finite loss or gradient (``total``, and ``streak`` in a
    row); :meth:`skip` warns once per streak and raises :class:`DivergenceError` when the streak
    reaches ``limit`` (0 = never)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.total, self.streak = limit, 0, 0

    def ok(self) -> None:
        """A step was taken: the streak ends."""
        self.streak = 0

    def skip(self, step: int) -> None:
        """Step ``step`` was skipped."""
        self.total += 1
        self.streak += 1
        if self.limit and self.streak >= self.limit:
            raise DivergenceError(
                f"training diverged: {self.streak} steps in a row had a non-finite loss or "
                f"gradient at step {step} (max_nonfinite_steps={self.limit}; lower the learning "
                "rate or set grad_clip)"
            )
        if self.streak == 1:
            warnings.warn(
                f"non-finite loss or gradient at step {step}; step skipped ({self.total} so far)",
                RuntimeWarning,
                stacklevel=3,
            )

    def finish(self) -> None:
        """Training ended: warn if it ended inside a streak (shorter than ``limit``), whose
        steps were all skipped, so the parameters are those from before it."""
        if self.streak:
            warnings.warn(
                f"training ended with its last {self.streak} steps skipped as non-finite; the "
                "parameters are those from before them (lower the learning rate or set grad_clip)",
                RuntimeWarning,
                stacklevel=3,
            )


def check_parameters(
    params: Iterable[Tensor],
    step: int,
    checkpoint: Path | None,
    hint: str = "lower the learning rate or set grad_clip",
) -> None:
    """Raise :class:`DivergenceError` if a parameter is non-finite (a step with finite gradients
    can still overflow them), so that no checkpoint saves it as good; ``hint`` names the fix
    (the RL runner's names its own config keys)."""
    # one read per device for all the tensors (a CUDA sync each), not one per tensor
    flags: dict[torch.device, list[Tensor]] = {}
    for p in params:
        flags.setdefault(p.device, []).append(torch.isfinite(p).all())
    if all(bool(torch.stack(f).all()) for f in flags.values()):
        return
    kept = (
        f"last good checkpoint kept at {checkpoint}"
        if checkpoint is not None and checkpoint.exists()
        else "no checkpoint"
    )
    raise DivergenceError(
        f"training diverged: parameters became non-finite by step {step} ({hint}); {kept}"
    )
