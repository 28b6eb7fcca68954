"""Supervised runs' directories: checking and creating a new one, and checking that a resumed
one's ``config.yaml`` and checkpoint belong together (used by :mod:`agents.supervised`)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from agents.config import ConfigError, diff_keys, merge_structured
from agents.supervised_config import _P, SupervisedConfig, SupervisedRun
from mtrl.io import check_writable, claim_dir, discard_if_empty


def os_reason(e: OSError, path: Path) -> str:
    """The short reason of ``e``, naming the file it is about when that is not ``path``."""
    reason = e.strerror or type(e).__name__
    if e.filename is not None and str(e.filename) != str(path):
        reason += f" ({e.filename})"
    return reason


def make_run_dir(run_dir: Path) -> list[Path]:
    """Check and create the configured run directory (and missing parents) before anything is
    built; return the directories created, deepest first (removed again if the run fails to
    start). An existing one must be an empty directory; a problem is a :class:`ConfigError`."""
    where = f"{_P}run_dir={str(run_dir)!r}"
    created: list[Path] = []
    problem = "cannot be created"
    try:
        if run_dir.exists():
            if not run_dir.is_dir():
                raise ConfigError(f"{where} exists and is not a directory; choose a new run_dir")
            if any(run_dir.iterdir()):
                raise ConfigError(f"{where} already exists and is not empty; choose a new run_dir")
            problem = "is not writable"
        else:
            missing, parent = [run_dir], run_dir.absolute().parent
            while not parent.exists():
                missing.append(parent)
                parent = parent.parent
            if not parent.is_dir():
                raise ConfigError(
                    f"{where} cannot be created: {parent} is a file; choose another run_dir"
                )
            for path in reversed(missing):  # outermost first: each one created is ours
                path.mkdir()
                created.insert(0, path)
        check_writable(run_dir)
    except BaseException as e:
        for path in created:
            discard_if_empty(path)
        if isinstance(e, OSError):
            reason = os_reason(e, run_dir)
            raise ConfigError(f"{where} {problem}: {reason}; choose a writable directory") from None
        raise
    return created


def claim_run_dir(base: Path) -> Path:
    """Create the automatic run directory exclusively (``mtrl.io.claim_dir``)."""
    try:
        return claim_dir(base)
    except OSError as e:
        raise ConfigError(
            f"{_P}run_dir (automatic, under {str(base.parent)!r}) cannot be created: "
            f"{os_reason(e, base)}; set {_P}run_dir to a writable directory"
        ) from None


#: Keys of ``supervised.*`` a resume may change (how long and how it runs, not what it learns).
SUPERVISED_RESUME_SAFE = (
    "epochs", "progress", "log_every", "checkpoint_every", "device", "torch_threads",
)  # fmt: skip


def unloadable(ckpt: Path, e: Exception) -> ConfigError:
    return ConfigError(
        f"checkpoint {str(ckpt)!r} cannot be loaded into this run's config "
        f"({type(e).__name__}); it is corrupted or from another run"
    )


def check_checkpoint_config(run_dir: Path, saved: SupervisedConfig, in_ckpt: Any) -> None:
    """Refuse a ``config.yaml`` that differs from the config its checkpoint was trained under
    (a checkpoint copied from another run, or a hand-edited file), except in the keys a resume
    may change and ``run_dir`` (where the run is now). Checkpoints written before configs were
    saved in them are accepted with a note."""
    if in_ckpt is None:
        print(
            f"note: {str(run_dir / 'checkpoints' / 'last.pt')!r} predates saved configs, so "
            "config.yaml cannot be checked against it; its next checkpoint will hold one",
            file=sys.stderr,
        )
        return
    try:
        run = merge_structured(SupervisedRun, {"supervised": in_ckpt})  # this version's schema
        trained = dataclasses.asdict(run.supervised)
    except (ConfigError, AttributeError) as e:
        raise ConfigError(
            f"the config saved in the checkpoint of {str(run_dir)!r} does not fit this version: {e}"
        ) from None
    differ = [
        _P + k
        for k in diff_keys(trained, dataclasses.asdict(saved))
        if not k.startswith(SUPERVISED_RESUME_SAFE) and k != "run_dir"
    ]
    if differ:
        raise ConfigError(
            f"config.yaml in {str(run_dir)!r} differs from its checkpoint in {', '.join(differ)}; "
            "the checkpoint is from another run or config.yaml was edited (to change them, start a "
            "new run)"
        )
