"""Fixtures shared across the test folders."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


@pytest.fixture
def on_gpu(monkeypatch) -> Callable[[torch.Tensor], torch.Tensor]:
    """``host`` as ``torch.load(..., map_location=<GPU>)`` gives it: on another device (meta
    stands in for CUDA, which these machines lack), with ``.cpu()`` bringing the data back as it
    would from a GPU."""

    def move(host: torch.Tensor) -> torch.Tensor:
        moved, real_cpu = host.to("meta"), torch.Tensor.cpu
        monkeypatch.setattr(
            torch.Tensor, "cpu", lambda t, *a, **k: host if t is moved else real_cpu(t, *a, **k)
        )
        return moved

    return move
