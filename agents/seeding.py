"""One place for seeding, device choice and the CPU's subnormal mode."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from agents.config import ConfigError


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; optionally force deterministic torch kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def flushes_denormals() -> bool:
    """Whether CPU arithmetic currently treats subnormal floats as zero (FTZ/DAZ)."""
    return float(torch.tensor([3e-39]) * 1.0) == 0.0


@contextmanager
def flushing_denormals() -> Iterator[None]:
    """Flush subnormal floats to zero in CPU arithmetic inside the block, then restore.

    Near-deterministic policies make gradients like pi0 - pi_i subnormal (< 1.2e-38), and Intel
    CPUs run each such operand through a microcode assist: Distral on 4 Atari games fell from
    ~460 to ~125 steps/s once its policies saturated (docs/benchmarks.md). Values this small
    change no update measurably. Scoped, because code that runs after a run in the same process
    (hypothesis, numpy) expects IEEE subnormals, and so does config validation: with DAZ on, a
    negative subnormal compares >= 0. The mode is per thread and covers only the calling thread;
    torch's worker threads copy it when they start (:func:`start_flushing_workers`).
    """
    before = flushes_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def start_flushing_workers() -> None:
    """Start torch's CPU worker threads with subnormals flushed; the caller's mode is unchanged.

    Threads copy the mode of the thread that starts them, and a mode set later reaches only the
    calling thread: with 2 threads, half of every kernel in a run ran unflushed. Call it after
    ``torch.set_num_threads`` and before anything else runs in parallel (threads that already
    exist keep their mode); the builds of ``train.py`` and the supervised runs do.
    """
    with flushing_denormals():
        torch.ones(1 << 20).mul_(2.0)  # a parallel region: the OpenMP workers start here


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but no CUDA device is available; use device=auto or cpu")
    return torch.device(name)
