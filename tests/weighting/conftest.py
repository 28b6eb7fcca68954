"""Shared toy problem for the weighting tests: a tanh trunk with one linear head per task."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class ToyMTL(nn.Module):
    """x (B, 4) -> features (B, 3) -> T scalar heads; MSE losses (T,) against fixed targets."""

    def __init__(self, num_tasks: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.trunk = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(3, 1) for _ in range(num_tasks))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        self.x = torch.randn(8, 4, generator=g)
        self.y = torch.randn(num_tasks, 8, 1, generator=g)

    def shared(self) -> list[torch.Tensor]:
        return list(self.trunk.parameters())

    def task(self) -> list[torch.Tensor]:
        return list(self.heads.parameters())

    def losses(self, features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.trunk(self.x) if features is None else features
        out = torch.stack(
            [((h(feats) - y) ** 2).mean() for h, y in zip(self.heads, self.y, strict=True)]
        )
        return out, feats

    def grads(self) -> list[torch.Tensor]:
        return [
            torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in self.parameters()
        ]


@pytest.fixture
def toy() -> ToyMTL:
    return ToyMTL()


@pytest.fixture
def make_toy():
    return ToyMTL
