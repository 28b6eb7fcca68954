"""Atomic checkpoint files, loaded with ``weights_only=True`` so a checkpoint cannot run code."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from agents.config import ConfigError


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically: temp file in the same dir, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; bad files raise ConfigError."""
    if not path.is_file():
        raise ConfigError(
            f"checkpoint {str(path)!r} not found; pass a run directory with checkpoints/last.pt"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupted, truncated, or not a torch file
        raise ConfigError(
            f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}); it is corrupted or not a checkpoint"
        ) from None
    if not isinstance(state, dict) or "agent" not in state:
        raise ConfigError(f"checkpoint {str(path)!r} is not an mtrl checkpoint")
    return state
