"""CUDA generator states in checkpoints, portable between machines.

A run on CUDA saves the state of every visible GPU's generator; a run on the CPU saves none (and
so never initialises CUDA to read them). Restoring sets only the generators this machine has:
``torch.cuda.set_rng_state_all`` fails on a GPU index that does not exist, so a checkpoint
written with more GPUs visible would not resume. A CPU run, or a machine without CUDA, ignores
the states.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def cuda_rng_states(device: torch.device) -> list[Tensor]:
    """The CUDA generators' states to checkpoint for a run on ``device`` ([] unless CUDA)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return []
    return torch.cuda.get_rng_state_all()


def set_cuda_rng_states(states: Sequence[Tensor], device: torch.device) -> None:
    """Restore :func:`cuda_rng_states` for a run on ``device``, on the GPUs this machine has."""
    if not states or device.type != "cuda" or not torch.cuda.is_available():
        return
    torch.cuda.set_rng_state_all([s.cpu() for s in states[: torch.cuda.device_count()]])
