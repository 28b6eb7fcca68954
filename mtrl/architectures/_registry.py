"""The architecture registry (kept separate so architecture modules can import it)."""

from __future__ import annotations

from mtrl.architectures.base import MultiTaskModel
from mtrl.registry import Registry

ARCHITECTURES: Registry[MultiTaskModel] = Registry("architecture")
