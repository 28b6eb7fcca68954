"""Task schedulers: which task(s) to train on at a step.

A :class:`TaskScheduler` holds a distribution over T tasks, ``sample(n)`` draws task ids from it with
its own seeded :class:`torch.Generator`, and ``update(metrics)`` adapts it. Schedulers are
``nn.Module``s whose buffers and generator state go into ``state_dict`` so checkpoints resume
exactly. Build by name with ``SCHEDULERS.build("uniform", num_tasks=3)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtrl.registry import Registry


class TaskScheduler(nn.Module):
    """Base class: a categorical distribution over ``num_tasks`` tasks sampled with a private RNG."""

    def __init__(self, num_tasks: int, seed: int = 0) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks={num_tasks!r} must be >= 1")
        self.num_tasks = int(num_tasks)
        self.generator = torch.Generator().manual_seed(int(seed))

    def probabilities(self) -> Tensor:
        """Current sampling probabilities ``(T,)`` (sum to 1)."""
        raise NotImplementedError

    def sample(self, n: int = 1) -> Tensor:
        """Draw ``n`` task ids ``(n,)`` (LongTensor, with replacement) from :meth:`probabilities`."""
        if isinstance(n, bool) or int(n) != n or n < 0:
            raise ValueError(f"n={n!r} must be an integer >= 0")
        probs = self.probabilities()
        if int(n) == 0:  # torch.multinomial refuses to draw nothing
            return torch.zeros(0, dtype=torch.long, device=probs.device)
        ids = torch.multinomial(
            probs.detach().double().cpu(), int(n), replacement=True, generator=self.generator
        )
        return ids.to(probs.device)

    def update(self, metrics: Tensor | Sequence[float]) -> None:
        """Adapt to per-task ``metrics`` ``(T,)``; static schedulers ignore them."""

    def get_extra_state(self) -> Any:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: Any) -> None:
        # a CPU generator takes CPU states only (torch.load(..., map_location=<GPU>) moves it)
        self.generator.set_state(state["generator"].cpu())


SCHEDULERS: Registry[TaskScheduler] = Registry("scheduler")


@SCHEDULERS.register("uniform")
class UniformScheduler(TaskScheduler):
    """Every task equally likely: p_i = 1/T (the usual round-robin-in-expectation baseline)."""

    probs: Tensor

    def __init__(self, num_tasks: int, seed: int = 0) -> None:
        super().__init__(num_tasks, seed)
        self.register_buffer("probs", torch.full((num_tasks,), 1.0 / num_tasks))

    def probabilities(self) -> Tensor:
        return self.probs


@SCHEDULERS.register("proportional")
class ProportionalScheduler(TaskScheduler):
    """Tasks sampled in proportion to their dataset sizes: p_i = n_i / sum_j n_j."""

    probs: Tensor

    def __init__(self, sizes: Sequence[float] | Tensor, seed: int = 0) -> None:
        sizes_t = torch.as_tensor(sizes, dtype=torch.float64).flatten()
        super().__init__(sizes_t.numel(), seed)
        if not sizes_t.isfinite().all() or (sizes_t < 0).any() or not sizes_t.sum() > 0:
            raise ValueError(
                f"sizes={sizes_t.tolist()!r} must be finite and >= 0 with a positive sum"
            )
        self.register_buffer("probs", (sizes_t / sizes_t.sum()).float())

    def probabilities(self) -> Tensor:
        return self.probs


@SCHEDULERS.register("performance")
class PerformanceScheduler(TaskScheduler):
    """Sample tasks that lag furthest behind a target score more often.

    Sharma et al. 2017 ("Learning to multi-task by active sampling", A5C): with target b_i and
    current (smoothed) performance a_i, the gap m_i = (b_i - a_i) / |b_i| and p = softmax(m / tau).
    For losses (``higher_is_better=False``) the gap is (a_i - b_i) / |b_i|. ``momentum`` > 0 keeps
    an exponential moving average of the reported scores (the paper averages recent episodes).

    Args:
        targets: ``(T,)`` target / reference scores b_i (e.g. single-task or human scores).
        tau: softmax temperature; small tau focuses on the worst task.
        momentum: EMA factor for the scores in [0, 1); 0 uses the latest report.
    """

    targets: Tensor
    scores: Tensor
    seen: Tensor

    def __init__(
        self,
        targets: Sequence[float] | Tensor,
        tau: float = 0.1,
        higher_is_better: bool = True,
        momentum: float = 0.0,
        seed: int = 0,
    ) -> None:
        targets_t = torch.as_tensor(targets, dtype=torch.float32).flatten()
        super().__init__(targets_t.numel(), seed)
        if not bool(targets_t.isfinite().all()):
            raise ValueError(f"targets={targets_t.tolist()!r} must be finite")
        if not tau > 0:
            raise ValueError(f"tau={tau!r} must be > 0")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum!r} must lie in [0, 1)")
        if (targets_t == 0).any():
            raise ValueError(f"targets={targets_t.tolist()!r} must be non-zero (gaps are relative)")
        self.tau = float(tau)
        self.higher_is_better = bool(higher_is_better)
        self.momentum = float(momentum)
        self.register_buffer("targets", targets_t)
        self.register_buffer("scores", torch.zeros_like(targets_t))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    def gaps(self) -> Tensor:
        """Normalised gaps m_i ``(T,)``; all zero (uniform sampling) before the first update."""
        if not bool(self.seen):
            return torch.zeros_like(self.targets)
        gap = (self.targets - self.scores) / self.targets.abs()
        return gap if self.higher_is_better else -gap

    def probabilities(self) -> Tensor:
        return torch.softmax(self.gaps() / self.tau, dim=0)

    def update(self, metrics: Tensor | Sequence[float]) -> None:
        """Report current per-task performance ``(T,)`` (returns/accuracies, or losses)."""
        new = torch.as_tensor(metrics, dtype=self.scores.dtype, device=self.scores.device).flatten()
        if new.numel() != self.num_tasks:
            raise ValueError(f"metrics has {new.numel()} entries; expected {self.num_tasks}")
        if not bool(new.isfinite().all()):  # it would stay in the scores and break sample()
            raise ValueError(f"metrics={new.tolist()!r} must be finite")
        if bool(self.seen) and self.momentum > 0:
            new = self.momentum * self.scores + (1.0 - self.momentum) * new
        self.scores.copy_(new)
        self.seen.fill_(True)
