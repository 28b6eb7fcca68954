"""Fixtures shared across the test folders."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import ClassVar

import pytest
import torch
from torch.overrides import TorchFunctionMode


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


class DeviceTraffic(TorchFunctionMode):
    """Counts, per kind, the calls that cost a host <-> device synchronisation on CUDA, which a
    CPU run cannot feel: ``reads`` (``item``, ``tolist``, ``bool``/``float``/``int``, ``cpu``,
    ``numpy``, ``nonzero``) and ``blocking_copies`` (a host tensor copied into a tensor on another
    device without ``non_blocking``, e.g. ``gpu[i] = host``: a stream sync). Reads are counted on
    any tensor, so a CPU test counts what a CUDA run would pay."""

    READS: ClassVar[dict[Callable, str]] = {
        torch.Tensor.item: "item",
        torch.Tensor.tolist: "tolist",
        torch.Tensor.__bool__: "bool",
        torch.Tensor.__float__: "float",
        torch.Tensor.__int__: "int",
        torch.Tensor.__index__: "index",
        torch.Tensor.cpu: "cpu",
        torch.Tensor.numpy: "numpy",
        torch.Tensor.nonzero: "nonzero",
        torch.nonzero: "nonzero",
    }

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()
        self.blocking_copies = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.READS and args and isinstance(args[0], torch.Tensor):
            self.reads[self.READS[func]] += 1
        elif func is torch.Tensor.to and args and isinstance(args[0], torch.Tensor):
            src = args[0]
            dev, _, non_blocking, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
            if dev is not None and src.dim() > 0 and torch.device(dev) != src.device:
                self.blocking_copies += not non_blocking
        elif func in (torch.Tensor.__setitem__, torch.Tensor.copy_) and len(args) >= 2:
            dst, src = args[0], args[-1]
            if (
                isinstance(src, torch.Tensor)
                and src.dim() > 0
                and src.device != dst.device
                and not kwargs.get("non_blocking", False)
            ):
                self.blocking_copies += 1
        return func(*args, **kwargs)

    @property
    def total_reads(self) -> int:
        return sum(self.reads.values())


@pytest.fixture
def device_traffic() -> Callable[[], DeviceTraffic]:
    """``with device_traffic() as traffic: ...`` counts the host <-> device synchronisations the
    block would cost on CUDA (:class:`DeviceTraffic`); the meta device stands in for the GPU where
    a test needs a second device."""
    return DeviceTraffic


def _same_state(a: object, b: object) -> bool:
    """Nested state_dict values equal, tensors by torch.equal (repr() elides long tensors)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.fixture
def same_state() -> Callable[[object, object], bool]:
    """Compare two (nested) saved states exactly: a weighting's, an optimiser's, a run's."""
    return _same_state


class RecordingWriter:
    """Records add_scalar calls (a SummaryWriter stand-in for the RL runner's and the Trainer's
    TensorBoard logging)."""

    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []
        self.closed = False

    def add_scalar(self, key: str, value: float, step: int) -> None:
        self.scalars.append((key, value, step))

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def writer() -> RecordingWriter:
    """A fresh :class:`RecordingWriter`."""
    return RecordingWriter()
