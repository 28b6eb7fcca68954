"""Crash-safe file writes, shared by mtrl's Trainer and the RL agents' checkpoints."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"  # temporary files of an interrupted write end with this


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temp file in the same directory, fsync, rename, and
    fsync of the directory. A crash leaves the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=TEMP_SUFFIX)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would have given
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@functools.cache
def _umask() -> int:
    # Reading it means setting it for a moment: done once (first write), not on every write.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def claim_dir(base: str | Path) -> Path:
    """Create ``base`` (or ``base-2``, ``base-3``, ...) exclusively and return it, so processes
    started at the same moment never share an automatically named directory."""
    base = Path(base)
    for i in range(1, 10_000):
        path = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free directory name next to {str(base)!r}")


def check_writable(directory: str | Path) -> None:
    """Create and remove a temporary file in ``directory``; OSError (naming ``directory``) if that
    is impossible: read-only or immutable file systems stop root too."""
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".write-check-", suffix=TEMP_SUFFIX)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(directory)) from None
    os.close(fd)
    os.unlink(tmp)


def discard_if_empty(path: str | Path) -> None:
    """Remove a claimed directory that is still empty (a run that failed to start); a directory
    with content, or one already gone, is left as it is."""
    with contextlib.suppress(OSError):
        Path(path).rmdir()


def fsync_dir(d: str | Path) -> None:
    """Flush a directory's entries (renames, deletions) to disk; best effort where unsupported."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` ``obj`` to ``path`` through :func:`atomic_write`: a crash leaves
    either the old or the new checkpoint, never a torn one."""
    import torch  # only here: importing mtrl.io does not load torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())
