"""Parameter regularisers coupling T tasks through a (d features x T tasks) matrix A.

- Block-sparse l1/lq (Argyriou et al. 2008 "Convex multi-task feature learning"; Obozinski et al.
  2010 l1/lq joint sparsity): sum over rows of ||a_row||_q, so a feature is used by all tasks or none.
- Task clustering / mean-regularised MTL (Evgeniou & Pontil 2004, "Regularized multi-task
  learning"): ||mean_a||^2 + (lambda/T) sum_t ||a_t - mean_a||^2.

Build A from corresponding parameters of T task columns with :func:`stack_task_params`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["block_sparse", "stack_task_params", "task_clustering"]


def stack_task_params(tasks: Sequence[nn.Module | Tensor | Sequence[Tensor]]) -> Tensor:
    """Matrix A (d, T) whose column t is task t's parameters flattened and concatenated.

    ``tasks[t]`` is a module (its ``parameters()`` in order), one tensor, or a list of tensors; all
    must flatten to the same d. A stays in the graph, so penalties on it train the parameters.
    """
    cols = []
    for item in tasks:
        if isinstance(item, nn.Module):
            ps: Sequence[Tensor] = list(item.parameters())
        elif isinstance(item, Tensor):
            ps = [item]
        else:
            ps = list(item)
        cols.append(torch.cat([p.reshape(-1) for p in ps]))
    sizes = {c.numel() for c in cols}
    if len(sizes) != 1:
        raise ValueError(f"task parameter vectors differ in size: {sorted(sizes)}")
    return torch.stack(cols, dim=1)


def _as_matrix(a: Tensor | Sequence[Tensor]) -> Tensor:
    if isinstance(a, Tensor):
        if a.dim() != 2:
            raise ValueError(f"expected A with shape (d, T), got {tuple(a.shape)}")
        return a
    return stack_task_params(list(a))


def block_sparse(a: Tensor | Sequence[Tensor], q: float = 2.0) -> Tensor:
    """l1/lq norm of A (d, T): sum_i ||A[i, :]||_q (q >= 1, ``float('inf')`` allowed). Scalar.

    ``a`` may also be a list of T task vectors/modules (stacked as columns).
    """
    if q < 1:
        raise ValueError(f"q must be >= 1 for a norm, got {q}")
    return torch.linalg.vector_norm(_as_matrix(a), ord=q, dim=1).sum()


def task_clustering(a: Tensor | Sequence[Tensor], lam: float = 1.0) -> Tensor:
    """||mean_t a_t||^2 + (lam / T) sum_t ||a_t - mean||^2 for A (d, T) with columns a_t. Scalar.

    ``a`` may also be a list of T task vectors/modules (stacked as columns).
    """
    mat = _as_matrix(a)
    mean = mat.mean(dim=1, keepdim=True)  # (d, 1)
    num_tasks = mat.shape[1]
    return mean.square().sum() + (lam / num_tasks) * (mat - mean).square().sum()
