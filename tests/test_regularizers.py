"""Block-sparse l1/lq and task-clustering penalties by hand on a 3 x 2 matrix."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtrl.regularizers import block_sparse, stack_task_params, task_clustering

A = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, -1.0]])  # d = 3 features x T = 2 tasks


@pytest.mark.parametrize(
    ("q", "expected"), [(2.0, 5.0 + math.sqrt(2.0)), (1.0, 9.0), (math.inf, 5.0)]
)
def test_block_sparse_by_hand(q: float, expected: float) -> None:
    assert block_sparse(A, q).item() == pytest.approx(expected)


def test_block_sparse_list_form_and_finite_gradient_at_zero_row() -> None:
    a = A.clone().requires_grad_()
    block_sparse([a[:, 0], a[:, 1]]).backward()
    assert torch.isfinite(a.grad).all()
    with pytest.raises(ValueError, match="q"):
        block_sparse(A, 0.5)


def test_task_clustering_by_hand() -> None:
    # mean column (3.5, 0, 0): ||mean||^2 = 12.25; deviations 1.25 + 1.25 = 2.5
    assert task_clustering(A, lam=2.0).item() == pytest.approx(12.25 + (2.0 / 2) * 2.5)
    assert task_clustering([A[:, 0], A[:, 1]], lam=0.0).item() == pytest.approx(12.25)


def test_stack_task_params_from_modules() -> None:
    heads = [nn.Linear(2, 1), nn.Linear(2, 1), nn.Linear(2, 1)]
    mat = stack_task_params(heads)
    assert mat.shape == (3, 3)
    torch.testing.assert_close(mat[:2, 1], heads[1].weight.reshape(-1))
    task_clustering(mat, lam=1.0).backward()
    assert all(h.weight.grad is not None for h in heads)
    with pytest.raises(ValueError, match="differ in size"):
        stack_task_params([nn.Linear(2, 1), nn.Linear(3, 1)])
