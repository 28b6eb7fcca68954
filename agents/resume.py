"""Run directories: where a new run may write, and what a resumed run continues from.

``load_resume_state`` checks a run directory and its last checkpoint before anything is built or
written: a missing, damaged or foreign checkpoint, or an override that would change what is
learned, is a :class:`ConfigError` naming the problem (docs/reliability.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from agents.checkpoint import load_checkpoint
from agents.config import (
    ConfigError,
    diff_keys,
    load_config,
    merge_structured,
    to_dict,
    validate,
)
from agents.config_schema import Config
from mtrl.io import check_writable, claim_dir

#: Config keys a resumed run may change (they do not alter what is learned).
RESUME_SAFE = (
    "progress",
    "log_interval",
    "checkpoint_interval",
    "checkpoint_minutes",
    "keep_checkpoints",
    "max_nonfinite_updates",
    "torch_threads",
    "device",
    "eval.",
)


def unsafe_changes(saved: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    """Dotted keys that differ between two resolved configs (plain dicts) outside
    :data:`RESUME_SAFE`: changes under which a run would not continue as it was trained."""
    return [k for k in diff_keys(saved, cfg) if not k.startswith(RESUME_SAFE)]


def new_run_dir(cfg: Config) -> Path:
    """The run directory of a new run: must not exist with content, and its parent must be a
    directory."""
    if cfg.run_dir:
        run_dir = Path(cfg.run_dir)
    else:  # claimed (created empty) at once: runs started in the same second get -2, -3, ...
        stamp = time.strftime("%Y%m%d-%H%M%S")
        try:
            return claim_dir(Path("runs") / f"{cfg.agent.name}-{cfg.env.suite}-{stamp}")
        except OSError as e:
            raise ConfigError(f"run_dir cannot be created: {e}; set run_dir") from None
    try:
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise ConfigError(
                f"run_dir={str(run_dir)!r} already exists and is not an empty directory; "
                "choose a new run_dir"
            )
        parent = run_dir.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise ConfigError(f"run_dir={str(run_dir)!r} cannot be created: {parent} is a file")
        # Probe where the run will write (an empty run_dir, else its nearest existing ancestor)
        # now, leaving nothing behind, rather than fail mid-start with a traceback.
        probe = run_dir if run_dir.is_dir() else parent
        try:
            check_writable(probe)
        except OSError as e:
            raise ConfigError(
                f"run_dir={str(run_dir)!r} cannot be created: nothing can be written in "
                f"{probe} ({e.strerror or e}); choose a writable run_dir"
            ) from None
    except OSError as e:
        raise ConfigError(f"run_dir={str(run_dir)!r} cannot be used: {e.strerror or e}") from None
    return run_dir


def load_resume_state(run_dir: Path, overrides: list[str]) -> tuple[Config, dict[str, Any], int]:
    """Validate ``run_dir`` and its last checkpoint; return (config, checkpoint state, byte length
    of ``losses.jsonl``'s records up to the checkpoint). Reads only: nothing in ``run_dir`` is
    changed."""
    try:
        if not run_dir.is_dir():
            what = "is not a directory" if run_dir.exists() else "not found"
            raise ConfigError(f"run directory {str(run_dir)!r} {what}; pass a RUN_DIR to resume")
        if run_dir.name == "checkpoints" and (run_dir / "last.pt").is_file():
            raise ConfigError(
                f"{str(run_dir)!r} is a run's checkpoints directory; pass the run directory, "
                f"{str(run_dir.parent)!r}"
            )
        ckpts = run_dir / "checkpoints"
        last = ckpts / "last.pt"
        never = not ckpts.is_dir() or not any(ckpts.iterdir())
        if never and (run_dir / "config.yaml").is_file():
            raise ConfigError(
                f"run directory {str(run_dir)!r} has no checkpoint (the run stopped before its "
                "first one); nothing to resume: delete it and start the run again"
            )
        state = load_checkpoint(last)
        saved = state["config"]
        if not isinstance(saved, dict):
            raise ConfigError(f"checkpoint in {str(run_dir)!r} holds no config")
        try:
            merge_structured(Config, saved)
        except ConfigError as e:
            raise ConfigError(f"checkpoint config is incompatible with this version: {e}") from None
        cfg = merge_structured(Config, saved, overrides)  # now an error is the override's
        validate(cfg)
        # The saved run under this version's schema: keys added since it was written take their
        # defaults and are not changes.
        saved = to_dict(merge_structured(Config, saved))
        bad = unsafe_changes(saved, to_dict(cfg))
        if bad:
            raise ConfigError(
                f"cannot change {', '.join(bad)} when resuming; only "
                f"{', '.join(k + '*' if k.endswith('.') else k for k in RESUME_SAFE)} may change"
            )
        on_disk = run_dir / "config.yaml"
        if not on_disk.is_file():  # without it a checkpoint copied in from elsewhere would pass
            raise ConfigError(f"{str(on_disk)!r} not found; the run directory is incomplete")
        # run_dir is where the run is now (a resume records its path in later checkpoints)
        differ = [k for k in unsafe_changes(saved, to_dict(load_config(on_disk))) if k != "run_dir"]
        if differ:
            raise ConfigError(
                f"config.yaml in {str(run_dir)!r} differs from its checkpoint in "
                f"{', '.join(differ)}; the checkpoint is from another run or agent"
            )
        cfg.run_dir = str(run_dir)
        log_end = loss_log_end(run_dir / "losses.jsonl", int(state["counters"]["update"]))
    except ConfigError:
        raise
    except OSError as e:
        raise ConfigError(f"run directory {str(run_dir)!r} cannot be read: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConfigError(
            f"checkpoint in {str(run_dir)!r} is malformed ({type(e).__name__}: {e})"
        ) from None
    return cfg, state, log_end


def loss_log_end(path: Path, updates: int) -> int:
    """Byte length of the first ``updates`` records of ``losses.jsonl`` (the ones the checkpoint
    covers), each checked to be a JSON object; the file is streamed, not held in memory."""
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} not found; the run directory is incomplete")
    records = end = 0
    with path.open("rb") as f:
        for line in f:
            if records == updates:
                break
            try:
                record = json.loads(line)
            except ValueError:
                break
            if not isinstance(record, dict):
                break
            records, end = records + 1, end + len(line)
    if records != updates:
        raise ConfigError(
            f"{str(path)!r} has {records} valid records but the checkpoint is at update "
            f"{updates}; the run directory is damaged"
        )
    return end


def read_loss_log(path: Path) -> list[dict[str, float]]:
    """Every record of a ``losses.jsonl`` (one dict of logged scalars per update)."""
    with path.open("rb") as f:
        return [json.loads(line) for line in f]
