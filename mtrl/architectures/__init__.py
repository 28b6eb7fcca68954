"""Multi-task architectures (one file each) behind the :class:`MultiTaskModel` interface.

``build("hard_sharing", trunk, heads)`` calls the class; ``build_mlp("mmoe", in_dim, hidden,
out_dims, **kw)`` its MLP convenience constructor; ``names()`` lists the registered names.
Stacked per-task layers (:class:`TaskLinear`, :class:`TaskConv2d`, :class:`StackedMLP`) are the
building blocks for per-task heads and one-network-per-task baselines.
"""

from __future__ import annotations

from collections.abc import Sequence

from mtrl.architectures._registry import ARCHITECTURES
from mtrl.architectures.adashare import AdaShare
from mtrl.architectures.base import MultiTaskModel, mlp
from mtrl.architectures.cross_stitch import CrossStitch
from mtrl.architectures.hard_sharing import HardSharing
from mtrl.architectures.mmoe import MMoE
from mtrl.architectures.mtan import MTAN
from mtrl.architectures.sluice import Sluice
from mtrl.architectures.soft_sharing import SoftSharing
from mtrl.architectures.stacked import StackedMLP, TaskConv2d, TaskLinear, group_by_task
from mtrl.registry import check_arguments, check_kwargs

__all__ = [
    "ARCHITECTURES",
    "MTAN",
    "AdaShare",
    "CrossStitch",
    "HardSharing",
    "MMoE",
    "MultiTaskModel",
    "Sluice",
    "SoftSharing",
    "StackedMLP",
    "TaskConv2d",
    "TaskLinear",
    "build",
    "build_mlp",
    "group_by_task",
    "mlp",
    "names",
]


def names() -> list[str]:
    """Sorted registered architecture names."""
    return ARCHITECTURES.names()


def build(name: str, *args: object, **kwargs: object) -> MultiTaskModel:
    """Instantiate architecture ``name`` from modules, e.g. ``build("hard_sharing", trunk, heads)``.

    Unknown names raise :class:`mtrl.registry.UnknownNameError` listing the valid ones.
    """
    return ARCHITECTURES.build(name, *args, **kwargs)


def build_mlp(
    name: str, in_dim: int, hidden: Sequence[int], out_dims: Sequence[int], **kwargs: object
) -> MultiTaskModel:
    """The MLP version of architecture ``name``: input ``in_dim``, ``hidden`` widths, one output
    of size ``out_dims[t]`` per task; ``kwargs`` are the architecture's options."""
    cls = ARCHITECTURES.get(name)
    if not callable(getattr(cls, "mlp", None)):
        raise TypeError(
            f"architecture {name!r} ({cls.__name__}) has no mlp(in_dim, hidden, out_dims, "
            "**options) classmethod, which build_mlp and supervised runs call; add one, or "
            f"build it from modules with build({name!r}, ...)"
        )
    args = (in_dim, hidden, out_dims)
    check_arguments(cls.mlp, args, kwargs, f"architecture {name!r} (mlp)")  # type: ignore[attr-defined]
    check_kwargs([cls.mlp, cls.__init__], kwargs, f"{cls.__name__}.mlp")  # type: ignore[attr-defined]
    return cls.mlp(in_dim, list(hidden), list(out_dims), **kwargs)  # type: ignore[attr-defined]
