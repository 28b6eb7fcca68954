"""Atomic, integrity-checked checkpoint files, loaded with ``weights_only=True`` (no code runs).

A file is the ``torch.save``d state followed by a trailer ``b"MTRL-SHA256:" + sha256(state bytes)``
(``torch.load`` still reads it directly); any flipped bit or truncation fails the check. Files are
written to a temporary name in the same directory, fsynced and renamed, so a crash or a second
Ctrl-C leaves the previous checkpoint intact. Layout: ``checkpoints/step_<N>.pt`` (the last
``keep`` of them) and ``checkpoints/last.pt`` (a hard link to, or copy of, the newest).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from agents.config import ConfigError
from mtrl.io import TEMP_SUFFIX, atomic_write, fsync_dir

TAG = b"MTRL-SHA256:"
_TRAILER = len(TAG) + 32
REQUIRED = ("version", "agent_name", "agent", "optimizers", "weighting", "config", "counters")
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


def to_bytes(state: dict[str, Any]) -> bytes:
    """Serialise ``state`` with its integrity trailer."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    return payload + TAG + hashlib.sha256(payload).digest()


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically (see module docstring)."""
    atomic_write(path, to_bytes(state))


def save_rotating(state: dict[str, Any], ckpt_dir: Path, step: int, keep: int) -> Path:
    """Write ``step_<step>.pt``, point ``last.pt`` at it atomically, keep the newest ``keep``."""
    target = ckpt_dir / f"step_{step}.pt"
    atomic_write(target, to_bytes(state))
    fd, tmp = tempfile.mkstemp(dir=ckpt_dir, prefix="last.pt", suffix=TEMP_SUFFIX)
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(target, tmp)
        except OSError:  # no hard links on this file system: copy (and fsync) instead
            shutil.copyfile(target, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, ckpt_dir / "last.pt")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(ckpt_dir)
    for old in step_files(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return target


def step_files(ckpt_dir: Path) -> list[Path]:
    """``step_<N>.pt`` files of ``ckpt_dir`` sorted by N (oldest first)."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def remove_stale_temps(ckpt_dir: Path) -> None:
    """Delete temporary files left by a write that was killed half-way."""
    if ckpt_dir.is_dir():
        for p in ckpt_dir.glob(f"*{TEMP_SUFFIX}"):
            p.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify a checkpoint written by :func:`save_checkpoint`; bad files raise
    ConfigError naming the file and the problem."""
    path, name = Path(path), str(path)
    try:
        if not path.is_file():
            raise ConfigError(
                f"checkpoint {name!r} not found; pass a run directory with checkpoints/last.pt"
            )
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"checkpoint {name!r} cannot be read ({e.strerror or e})") from None
    bad = f"checkpoint {name!r} is corrupted or not an mtrl checkpoint"
    if len(raw) < _TRAILER or raw[-_TRAILER:-32] != TAG:
        raise ConfigError(f"{bad} (no integrity trailer; truncated?)")
    data = raw[:-_TRAILER]
    if hashlib.sha256(data).digest() != raw[-32:]:
        raise ConfigError(f"{bad} (checksum mismatch)")
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:
        raise ConfigError(f"{bad} ({type(e).__name__})") from None
    missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
    if missing:
        raise ConfigError(f"{bad} (missing {', '.join(missing)})")
    return state
