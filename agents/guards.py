"""Divergence guard helpers: finite-gradient check with clipping, and the stop condition."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from agents.signals import DivergenceError
from mtrl.guard import check_parameters as guarded_check


def clip_and_check(optimizers: list[torch.optim.Optimizer], max_norm: float) -> tuple[Tensor, bool]:
    """Clip each optimiser's gradients to ``max_norm`` (0 = off) separately (Distral's pi0 and
    task columns are separate learners); return the norm over all of them (before clipping) and
    whether every gradient is finite."""
    norms: list[Tensor] = []
    for opt in optimizers:
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            continue
        grads = [p.grad for p in params]
        norm = torch.nn.utils.get_total_norm(grads)
        norms.append(norm)
        if max_norm > 0 and hasattr(opt, "divide_grads"):  # folded into its fused step
            # as clip_grad_norm_: g * min(1, max_norm / (norm + 1e-6))
            opt.divide_grads(((norm + 1e-6) / max_norm).clamp(min=1.0))
        elif max_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    if not norms:
        return torch.tensor(0.0), True
    if len({n.device for n in norms}) == 1:  # one copy to the host (a sync on CUDA), not one each
        host = torch.stack([n.float() for n in norms]).cpu()
    else:
        host = torch.stack([n.float().cpu() for n in norms])
    total = torch.linalg.vector_norm(host)
    return total, bool(torch.isfinite(total))


def _kept(run_dir: Path) -> str:
    ckpt = run_dir / "checkpoints" / "last.pt"
    return f"last good checkpoint kept at {ckpt}" if ckpt.exists() else "no checkpoint"


def check_parameters(params: Iterable[Tensor], step: int, run_dir: Path) -> None:
    """:func:`mtrl.guard.check_parameters` for a run directory's ``checkpoints/last.pt``, the
    fix named in this config's keys."""
    checkpoint = run_dir / "checkpoints" / "last.pt"
    guarded_check(params, step, checkpoint, hint="lower agent.lr or agent.max_grad_norm")


def check_divergence(streak: int, limit: int, step: int, run_dir: Path) -> None:
    """Raise :class:`DivergenceError` once ``streak`` non-finite updates reach ``limit`` (> 0)."""
    if limit > 0 and streak >= limit:
        raise DivergenceError(
            f"training diverged: {streak} non-finite updates in a row at step {step} "
            f"(max_nonfinite_updates={limit}); {_kept(run_dir)}"
        )
