"""What a run logs as it trains: TensorBoard (``SummaryWriter`` in the run directory) and
``losses.jsonl`` (one record per update), both continuing a resumed run's timeline at its
checkpoint. Only the runner writes them; agents return named terms."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor

from agents.config import to_yaml
from agents.config_schema import Config


def open_writer(run_dir: Path, cfg: Config, resumed_at: int | None) -> Any:
    """A ``SummaryWriter`` on ``run_dir``. A new run gets the config as text at step 0; a run
    resumed at global step ``resumed_at`` drops the events the stopped session logged after it."""
    from torch.utils.tensorboard import SummaryWriter

    if resumed_at is not None:
        return SummaryWriter(str(run_dir), purge_step=resumed_at + 1)
    writer = SummaryWriter(str(run_dir))
    writer.add_text("config", "```yaml\n" + to_yaml(cfg) + "\n```", 0)
    return writer


def open_loss_log(path: Path, keep_bytes: int | None) -> IO[str]:
    """``losses.jsonl`` for writing: a new file, or (``keep_bytes``: a resumed run) the file cut to
    the checkpoint's records, whose later lines are the stopped session's timeline."""
    if keep_bytes is None:
        return path.open("w")
    os.truncate(path, keep_bytes)
    f = path.open("a")
    if keep_bytes:
        with path.open("rb") as r:  # a last kept record written without its newline
            r.seek(keep_bytes - 1)
            if r.read(1) != b"\n":
                f.write("\n")
    return f


def write_interval(
    writer: Any, pending: list[dict[str, float]], step: int, charts: dict[str, float]
) -> None:
    """The mean of each pending update's scalar over the interval (``pending`` not empty), and
    ``charts/<name>``, at ``step``. Finite values only: one skipped (NaN) update would blank the interval's mean; the
    skips themselves show in ``charts/nonfinite_updates``."""
    for key in pending[-1]:
        values = [p[key] for p in pending if math.isfinite(p[key])]
        writer.add_scalar(key, float(np.mean(values)) if values else math.nan, step)
    for name, value in charts.items():
        writer.add_scalar(f"charts/{name}", value, step)


def update_scalars(
    terms: dict[str, Tensor],
    task_losses: Tensor,
    grad_norm: float,
    weights: Tensor,
    names: list[str],
) -> dict[str, float]:
    """An update's scalars: each term's mean (and its per-task values when (K,)), the total loss,
    the gradient norm and the weights, read from the device in one copy (on CUDA one sync, not
    one per value); float64 holds every float32 value exactly."""
    dev = task_losses.device
    keys: list[str] = []
    parts: list[Tensor] = []
    for key, value in terms.items():
        value = value.detach()
        keys.append(f"losses/{key}")
        parts.append(value.mean().reshape(1))
        if value.ndim == 1:  # per-task diagnostic (K,)
            keys += [f"task/{name}/{key}" for name in names[: len(value)]]
            parts.append(value[: len(names)])
    keys.append("losses/total")
    parts.append(task_losses.detach().sum().reshape(1))
    weights = weights.detach().reshape(-1)[: len(names)]
    parts.append(weights)
    host = torch.cat([p.to(dev, torch.float64) for p in parts]).tolist()
    logged = dict(zip(keys, host, strict=False))
    logged["losses/grad_norm"] = grad_norm
    for name, w in zip(names, host[len(keys) :], strict=False):
        logged[f"weights/{name}"] = w
    return logged
