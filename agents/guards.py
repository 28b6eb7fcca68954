"""Gradient scaling and clipping per learner, the finite-gradient check, and the stop condition.

Each task's loss is the mean over its own samples (``agents.a2c``). An optimiser is then one of:

- ``pooled``: it holds parameters every task's loss reaches (``agent.shared_parameters()``: a
  shared encoder, ``a2c_multitask``'s network, Distral's pi0). Its gradient is divided by K,
  the mean over tasks, i.e. a single learner's on the pooled batch, and clipped as a whole.
  A weighting whose update keeps its size whatever the losses' scale (``scale_invariant``:
  Nash-MTL, norm sqrt(K) by construction) has no sum over tasks to average: divisor 1.
- ``per_task``: it holds only the agent's other parameters, each in a module grouped by task
  (``groups == K``: ``GroupedLinear``, grouped ``Conv2d``), so dim 0 holds one block per task
  (``a2c_independent``'s networks, Distral's task columns): K separate learners, each task's
  blocks clipped on their own norm, so one task's large gradients do not shrink another's.
- ``whole``: anything else (a weighting method's own parameters): clipped as a whole, unscaled.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from agents.signals import DivergenceError
from mtrl.guard import check_parameters as guarded_check

POOLED, PER_TASK, WHOLE = "pooled", "per_task", "whole"


def _params(opt: torch.optim.Optimizer) -> list[Tensor]:
    return [p for g in opt.param_groups for p in g["params"]]


def task_grouped(agent: nn.Module, num_tasks: int) -> set[int]:
    """Ids of the parameters held by modules grouped by task (``groups == num_tasks``), whose
    dim 0 is one block per task; with one task, every parameter of ``agent``."""
    if num_tasks == 1:
        return {id(p) for p in agent.parameters()}
    return {
        id(p)
        for m in agent.modules()
        if getattr(m, "groups", None) == num_tasks
        for p in m.parameters(recurse=False)
    }


def learner_kinds(
    optimizers: Sequence[torch.optim.Optimizer],
    shared: Iterable[Tensor],
    agent: nn.Module,
    num_tasks: int,
) -> list[str]:
    """Each optimiser's kind (module docstring) from the agent's shared and other parameters.

    Raises ValueError for an agent parameter that is neither shared nor in a module grouped by
    task (a custom agent that did not list a shared parameter in ``shared_parameters()``: its
    gradient would be cut into K meaningless blocks and never averaged).
    """
    shared_ids = {id(p) for p in shared}
    agent_ids = {id(p) for p in agent.parameters()}
    grouped = task_grouped(agent, num_tasks)
    kinds = []
    for opt in optimizers:
        params = _params(opt)
        if any(id(p) in shared_ids for p in params):
            kinds.append(POOLED)
        elif params and all(id(p) in agent_ids for p in params):
            for p in params:
                if id(p) not in grouped:
                    raise ValueError(
                        f"a parameter of shape {tuple(p.shape)} is neither in shared_parameters() "
                        f"nor in a module grouped by task (groups={num_tasks}, e.g. "
                        "GroupedLinear); list the parameters several tasks use in "
                        "shared_parameters() (docs/extending.md)"
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
        # made on the gradients' device: a host tensor's copy there would wait for the GPU
        opt.divide_grads(torch.full((), divisor, device=grads[0].device))
    else:
        torch._foreach_div_(grads, divisor)


Learner = tuple[torch.optim.Optimizer, str, list[Tensor], list[float]]


def learner_norms(
    optimizers: Sequence[torch.optim.Optimizer],
    kinds: Sequence[str],
    num_tasks: int,
    pool: int | None = None,
) -> list[Learner]:
    """Each optimiser that holds gradients, with its kind, its gradients and the norms its clip
    sees: one per task (``per_task``), the pooled gradient's (``pooled``: divided by ``pool``,
    default K) or the whole gradient's, read to the host in one copy (one sync on CUDA) for all
    optimisers together."""
    pool = num_tasks if pool is None else pool
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
            got = [v / pool for v in got]
        learners.append((opt, kind, grads, got))
    return learners


def clip_and_check(
    optimizers: Sequence[torch.optim.Optimizer],
    max_norm: float,
    kinds: Sequence[str] | None = None,
    num_tasks: int = 1,
    pool: int | None = None,
) -> tuple[float, bool]:
    """Scale and clip each optimiser's gradients by its kind (default ``whole``; module
    docstring) to ``max_norm`` (0 = off), as ``clip_grad_norm_``: g * min(1, max_norm / (norm +
    1e-6)). ``pool``: the ``pooled`` divisor (default K). Returns the norm over all of them
    (after that division, before clipping) and whether every gradient is finite
    (:func:`learner_norms`: one read from the device)."""
    kinds = [WHOLE] * len(optimizers) if kinds is None else kinds
    pool = num_tasks if pool is None else pool
    norms: list[float] = []
    for opt, kind, grads, got in learner_norms(optimizers, kinds, num_tasks, pool):
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
        _divide(opt, grads, divisor * (pool if kind == POOLED else 1))
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
