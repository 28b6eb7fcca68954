"""Encode python/numpy state as plain containers of tensors that ``torch.load(weights_only=True)``
accepts, and decode it back without running code.

Used for the parts of a checkpoint that are not tensors: numpy and python RNG states and the
environments' ``get_state()`` snapshots (numpy arrays, tuples, ``RandomState`` objects and MinAtar
game objects). Objects are rebuilt only for classes in :data:`ALLOWED_MODULES` and without calling
their ``__init__``; shared references (a ``RandomState`` used by two objects) stay shared.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import torch

#: Module prefixes whose classes may be rebuilt from a checkpoint (plain attribute bags).
ALLOWED_MODULES = ("minatar.",)
_PLAIN = (type(None), bool, int, float, str)


class CodecError(ValueError):
    """A value cannot be encoded, or an encoded value is malformed."""


def encode(value: Any) -> Any:
    """``value`` as nested dicts/lists of tensors and python scalars (see module docstring)."""
    return _Encoder().enc(value)


def decode(data: Any) -> Any:
    """Inverse of :func:`encode`; malformed input raises :class:`CodecError`."""
    try:
        return _Decoder().dec(data)
    except CodecError:
        raise
    except Exception as e:  # any malformed structure
        raise CodecError(f"malformed encoded state ({type(e).__name__}: {e})") from None


class _Encoder:
    def __init__(self) -> None:
        self.memo: dict[int, int] = {}
        self.keep: list[Any] = []  # keep encoded objects alive so ids stay unique

    def _ref(self, value: Any) -> int | None:
        return self.memo.get(id(value))

    def _remember(self, value: Any) -> int:
        self.keep.append(value)
        self.memo[id(value)] = len(self.memo)
        return self.memo[id(value)]

    def enc(self, v: Any) -> Any:
        if isinstance(v, np.generic):
            return {"__npscalar__": str(v.dtype), "v": v.item()}
        if isinstance(v, _PLAIN):
            return v
        if isinstance(v, torch.Tensor):
            return {"__tensor__": v.detach().cpu().clone()}
        if isinstance(v, np.ndarray):
            if v.dtype.hasobject:
                raise CodecError("object arrays cannot be encoded")
            raw = np.ascontiguousarray(v).reshape(-1).view(np.uint8)
            return {
                "__nd__": torch.from_numpy(raw.copy()),
                "dtype": v.dtype.str,
                "shape": list(v.shape),
            }
        if isinstance(v, tuple):
            return {"__tuple__": [self.enc(x) for x in v]}
        if isinstance(v, list):
            return {"__list__": [self.enc(x) for x in v]}
        if isinstance(v, dict):
            return {"__dict__": [[self.enc(k), self.enc(x)] for k, x in v.items()]}
        ref = self._ref(v)
        if ref is not None:
            return {"__ref__": ref}
        if isinstance(v, np.random.RandomState):
            idx = self._remember(v)
            return {"__randomstate__": self.enc(v.get_state(legacy=True)), "id": idx}
        cls = type(v)
        if not cls.__module__.startswith(ALLOWED_MODULES) or not hasattr(v, "__dict__"):
            raise CodecError(f"cannot encode object of type {cls.__module__}.{cls.__qualname__}")
        idx = self._remember(v)
        attrs = {k: self.enc(x) for k, x in vars(v).items()}
        return {"__obj__": f"{cls.__module__}:{cls.__qualname__}", "id": idx, "attrs": attrs}


class _Decoder:
    def __init__(self) -> None:
        self.objects: dict[int, Any] = {}

    def dec(self, d: Any) -> Any:
        if isinstance(d, _PLAIN):
            return d
        if not isinstance(d, dict):
            raise CodecError(f"unexpected {type(d).__name__} in encoded state")
        if "__npscalar__" in d:
            return np.dtype(d["__npscalar__"]).type(d["v"])
        if "__tensor__" in d:
            return d["__tensor__"]
        if "__nd__" in d:
            raw = d["__nd__"].numpy().tobytes()
            dtype = np.dtype(d["dtype"])
            if dtype.hasobject:
                raise CodecError("object arrays cannot be decoded")
            return np.frombuffer(raw, dtype=dtype).reshape(d["shape"]).copy()
        if "__tuple__" in d:
            return tuple(self.dec(x) for x in d["__tuple__"])
        if "__list__" in d:
            return [self.dec(x) for x in d["__list__"]]
        if "__dict__" in d:
            return {self.dec(k): self.dec(x) for k, x in d["__dict__"]}
        if "__ref__" in d:
            return self.objects[int(d["__ref__"])]
        if "__randomstate__" in d:
            rs = np.random.RandomState()
            self.objects[int(d["id"])] = rs
            rs.set_state(self.dec(d["__randomstate__"]))
            return rs
        if "__obj__" in d:
            return self._object(d)
        raise CodecError(f"unknown encoded entry with keys {sorted(d)[:4]}")

    def _object(self, d: dict[str, Any]) -> Any:
        module, _, qualname = str(d["__obj__"]).partition(":")
        if not module.startswith(ALLOWED_MODULES):
            raise CodecError(f"refusing to rebuild an object of module {module!r}")
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        if not isinstance(cls, type):
            raise CodecError(f"{module}:{qualname} is not a class")
        obj: Any = object.__new__(cls)
        self.objects[int(d["id"])] = obj
        obj.__dict__.update({k: self.dec(x) for k, x in d["attrs"].items()})
        return obj
