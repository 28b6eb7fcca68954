"""Divergence guard of :class:`mtrl.trainer.Trainer`: skip non-finite steps (restoring the
weighting's state from a :func:`state_snapshot`), stop when they persist, and never checkpoint
non-finite parameters (the RL runner's rules, without its config)."""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


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


def state_snapshot(module: nn.Module) -> dict[str, Any]:
    """``module.state_dict()``, copied to be loaded back later: what ``copy.deepcopy`` of it
    gives for that purpose, at a fifth to a third of its cost (the Trainer takes one every step).
    Plain tensors are cloned (``Tensor.__deepcopy__`` costs several clones), dicts, lists and
    tuples rebuilt, anything else deep-copied; a tensor seen twice is cloned once, as deepcopy's
    memo does. The ``_metadata`` (module versions) is built afresh by each ``state_dict()`` call
    and only read by ``load_state_dict``: it is kept as it is."""
    state = module.state_dict()
    out = _copy_state(state, {})
    if hasattr(state, "_metadata"):
        out._metadata = state._metadata
    return out


def _copy_state(obj: Any, memo: dict[int, Any]) -> Any:
    if type(obj) is Tensor and not obj.requires_grad:
        if id(obj) not in memo:
            memo[id(obj)] = obj.clone()
        return memo[id(obj)]
    if type(obj) in (dict, OrderedDict):
        return type(obj)((k, _copy_state(v, memo)) for k, v in obj.items())
    if type(obj) in (list, tuple):
        return type(obj)(_copy_state(v, memo) for v in obj)
    return copy.deepcopy(obj, memo)
