"""The GradNorm toy regression benchmark (Chen et al. 2018, "GradNorm: Gradient Normalization for
Adaptive Loss Balancing in Deep Multitask Networks", Sec. 4).

T regression tasks f_i(x) = sigma_i * tanh((B + eps_i) x) with x in R^250, outputs in R^100. B is
shared across tasks and eps_i task-specific, so tasks are related but differ in output scale sigma_i,
which is what unbalances equal-weight training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def default_sigmas(num_tasks: int) -> list[float]:
    """[1, 100] for two tasks; otherwise log-spaced scales from 1 to 100 (spread scales)."""
    if num_tasks == 2:
        return [1.0, 100.0]
    return torch.logspace(0, 2, num_tasks, dtype=torch.float64).tolist()


def make_gradnorm_toy(
    num_tasks: int = 2,
    sigmas: Sequence[float] | None = None,
    n_train: int = 10_000,
    n_test: int = 1_000,
    in_dim: int = 250,
    out_dim: int = 100,
    b_std: float = 10.0,
    eps_std: float = 3.5,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Generate the GradNorm toy data set (float32 tensors, deterministic given ``seed``).

    The paper draws B ~ N(0, 10) and eps_i ~ N(0, 3.5) without saying whether 10 and 3.5 are
    standard deviations or variances; we read them as standard deviations (``b_std``, ``eps_std``),
    as the widely used re-implementations do. The input distribution is unspecified: we draw x
    uniform in [-1, 1]^in_dim and normalise it to unit L2 norm.

    Returns a dict with ``x_train (N, in_dim)``, ``y_train (N, T, out_dim)``, ``x_test``,
    ``y_test``, ``sigmas (T,)``, ``B (out_dim, in_dim)`` and ``eps (T, out_dim, in_dim)``.
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks={num_tasks!r} must be >= 1")
    sig = list(sigmas) if sigmas is not None else default_sigmas(num_tasks)
    if len(sig) != num_tasks:
        raise ValueError(f"sigmas has {len(sig)} entries; expected num_tasks={num_tasks}")
    gen = torch.Generator().manual_seed(int(seed))
    b = torch.randn(out_dim, in_dim, generator=gen) * b_std
    eps = torch.randn(num_tasks, out_dim, in_dim, generator=gen) * eps_std
    sig_t = torch.tensor(sig, dtype=torch.float32)

    # the test set has its own stream, so it is the same whatever n_train (budget studies)
    test_gen = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=gen)))

    def sample(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        x = torch.rand(n, in_dim, generator=g) * 2.0 - 1.0
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        w = b.unsqueeze(0) + eps  # (T, out, in)
        y = sig_t[None, :, None] * torch.tanh(torch.einsum("toi,ni->nto", w, x))
        return x, y

    x_train, y_train = sample(n_train, gen)
    x_test, y_test = sample(n_test, test_gen)
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "sigmas": sig_t,
        "B": b,
        "eps": eps,
    }
