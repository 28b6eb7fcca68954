"""Gradient scaling and clipping per learner, the finite-gradient check, and the stop condition.

Each task's loss is the mean over its own samples (``agents.a2c``). An optimiser is then one of:

- ``pooled``: it holds parameters every task's loss reaches (``agent.shared_parameters()``: a
  shared encoder, ``a2c_multitask``'s network, Distral's pi0). Its gradient is divided by K,
  the mean over tasks, i.e. a single learner's on the pooled batch, and clipped as a whole.
- ``per_task``: it holds only the agent's other parameters, one block per task along dim 0
  (``a2c_independent``'s networks, Distral's task columns): K separate learners, so each task's
  blocks are clipped on their own norm and one task's large gradients do not shrink another's.
- ``whole``: anything else (a weighting method's own parameters): clipped as a whole, unscaled.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from agents.signals import DivergenceError
from mtrl.guard import check_parameters as guarded_check

POOLED, PER_TASK, WHOLE = "pooled", "per_task", "whole"


def _params(opt: torch.optim.Optimizer) -> list[Tensor]:
    return [p for g in opt.param_groups for p in g["params"]]


def learner_kinds(
    optimizers: Sequence[torch.optim.Optimizer],
    shared: Iterable[Tensor],
    agent_params: Iterable[Tensor],
    num_tasks: int,
) -> list[str]:
    """Each optimiser's kind (module docstring) from the agent's shared and other parameters.

    Raises ValueError for a ``per_task`` parameter without K blocks along dim 0 (a custom agent
    that did not list a shared parameter in ``shared_parameters()``).
    """
    shared_ids = {id(p) for p in shared}
    agent_ids = {id(p) for p in agent_params}
    kinds = []
    for opt in optimizers:
        params = _params(opt)
        if any(id(p) in shared_ids for p in params):
            kinds.append(POOLED)
        elif params and all(id(p) in agent_ids for p in params):
            for p in params:
                if p.ndim == 0 or p.shape[0] % num_tasks:
                    raise ValueError(
                        f"a parameter of shape {tuple(p.shape)} is not in shared_parameters() "
                        f"and has no block per task along dim 0 ({num_tasks} tasks); list the "
                        "parameters several tasks use in shared_parameters() (docs/extending.md)"
                    )
            kinds.append(PER_TASK)
        else:
            kinds.append(WHOLE)
    return kinds


def _block_norms(grads: list[Tensor], num_tasks: int) -> Tensor:
    """The norm (K,) of each task's blocks (dim 0 split in K) over all of ``grads``."""
    per = [
        torch.linalg.vector_norm(g.unflatten(0, (num_tasks, -1)), dim=tuple(range(1, g.ndim + 1)))
        for g in grads
    ]
    return torch.linalg.vector_norm(torch.stack(per), dim=0)


def _divide(opt: torch.optim.Optimizer, grads: list[Tensor], divisor: float) -> None:
    """``grads /= divisor``, folded into a fused optimiser's step where it can be."""
    if divisor == 1.0:
        return
    if hasattr(opt, "divide_grads"):
        opt.divide_grads(torch.tensor(divisor))
    else:
        torch._foreach_div_(grads, divisor)


Learner = tuple[torch.optim.Optimizer, str, list[Tensor], list[float]]


def learner_norms(
    optimizers: Sequence[torch.optim.Optimizer], kinds: Sequence[str], num_tasks: int
) -> list[Learner]:
    """Each optimiser that holds gradients, with its kind, its gradients and the norms its clip
    sees: one per task (``per_task``), the tasks' mean's (``pooled``) or the whole gradient's,
    read to the host in one copy (one sync on CUDA) for all optimisers together."""
    work: list[tuple[torch.optim.Optimizer, str, list[Tensor]]] = []
    pieces: list[Tensor] = []
    for opt, kind in zip(optimizers, kinds, strict=True):
        grads = [p.grad for p in _params(opt) if p.grad is not None]
        if not grads:
            continue
        work.append((opt, kind, grads))
        if kind == PER_TASK:
            pieces.append(_block_norms(grads, num_tasks).float())
        else:
            pieces.append(torch.nn.utils.get_total_norm(grads).float().reshape(1))
    if not pieces:
        return []
    if len({p.device for p in pieces}) == 1:
        values = torch.cat(pieces).tolist()
    else:
        values = torch.cat([p.cpu() for p in pieces]).tolist()
    learners: list[Learner] = []
    at = 0
    for (opt, kind, grads), piece in zip(work, pieces, strict=True):
        got = values[at : at + len(piece)]
        at += len(piece)
        if kind == POOLED:
            got = [v / num_tasks for v in got]
        learners.append((opt, kind, grads, got))
    return learners


def clip_and_check(
    optimizers: Sequence[torch.optim.Optimizer],
    max_norm: float,
    kinds: Sequence[str] | None = None,
    num_tasks: int = 1,
) -> tuple[float, bool]:
    """Scale and clip each optimiser's gradients by its kind (default ``whole``; module
    docstring) to ``max_norm`` (0 = off), as ``clip_grad_norm_``: g * min(1, max_norm / (norm +
    1e-6)). Returns the norm over all of them (after the 1/K of ``pooled``, before clipping) and
    whether every gradient is finite (:func:`learner_norms`: one read from the device)."""
    kinds = [WHOLE] * len(optimizers) if kinds is None else kinds
    norms: list[float] = []
    for opt, kind, grads, got in learner_norms(optimizers, kinds, num_tasks):
        norms += got
        if not all(math.isfinite(v) for v in got):
            continue
        if kind == PER_TASK:
            for k, v in enumerate(got):
                if max_norm > 0 and v + 1e-6 > max_norm:
                    d = (v + 1e-6) / max_norm
                    for g in grads:
                        g.unflatten(0, (num_tasks, -1))[k].div_(d)
            continue
        divisor = max(1.0, (got[0] + 1e-6) / max_norm) if max_norm > 0 else 1.0
        _divide(opt, grads, divisor * (num_tasks if kind == POOLED else 1))
    total = math.sqrt(sum(v * v for v in norms))
    return total, math.isfinite(total)


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
