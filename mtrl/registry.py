"""Name -> class registries for architectures and weightings.

A registry maps snake_case names to classes so configs can select components by string. An unknown
name raises :class:`UnknownNameError` listing the valid names (and the closest ones), so a typo in a
config gives a one-line, actionable error.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import numbers
import types
import typing
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
#: What a registry holds: a class, or a factory function, building a ``T``.
E = TypeVar("E", bound=Callable[..., Any])


class UnknownNameError(KeyError, ValueError):
    """Raised for a name that is not registered; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly.
        return str(self.args[0]) if self.args else ""


class MissingOptionError(TypeError):
    """A registered class built without a required option; ``missing`` names the options."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = missing


class Registry(Generic[T]):
    """A mapping from names to classes (or factories) of one kind, e.g. ``"weighting"``;
    ``T`` is what they build (``Registry[LossWeighting]`` holds classes, the agents' registry
    builder functions returning an ``Agent``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[E], E]:
        """Decorator registering a class (or factory) under ``name`` (snake_case, unique).

        A name taken by another class raises ``ValueError``. The same definition again (a
        re-import, ``importlib.reload``, a notebook cell run twice: same module and qualified
        name) replaces the entry.
        """
        if not isinstance(name, str) or not name:
            # a bare ``@REG.register`` would silently swap the class for this decorator
            raise TypeError(
                f"{self.kind} registration needs a name: decorate with .register('my_name'), "
                f"not a bare .register (got {getattr(name, '__name__', name)!r})"
            )

        def deco(cls: E) -> E:
            old = self._entries.get(name)
            if old is not None and _where(old) != _where(cls):
                raise ValueError(
                    f"{self.kind} {name!r} is already registered to {'.'.join(_where(old))}; "
                    f"register {cls.__qualname__} under another name"
                )
            self._entries[name] = cls
            return cls

        return deco

    def get(self, name: str) -> Callable[..., T]:
        """Return the class (or factory) registered as ``name`` or raise
        :class:`UnknownNameError`."""
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint}; valid: {', '.join(self.names())}"
            ) from None

    def build(self, name: str, *args: object, **kwargs: object) -> T:
        """Instantiate the class registered as ``name`` (keyword types checked first)."""
        cls = self.get(name)
        check_arguments(cls, args, kwargs, f"{self.kind} {name!r}")
        check_kwargs([cls.__init__], kwargs, cls.__name__)
        return cls(*args, **kwargs)

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def _where(obj: object) -> tuple[str, str]:
    """(module, qualified name) of a registered class or factory: its definition's identity."""
    return getattr(obj, "__module__", "?"), getattr(obj, "__qualname__", repr(obj))


def check_arguments(
    fn: Callable[..., Any], args: tuple[object, ...], kwargs: dict[str, Any], owner: str
) -> None:
    """Raise ``TypeError`` naming what is missing or unknown when ``fn(*args, **kwargs)`` would not
    bind: Python's own message ("__init__() missing 1 required positional argument") names no
    option a config could set. Callables whose signature cannot be read are not checked."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    kinds = inspect.Parameter
    if not any(p.kind is kinds.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in kwargs if k not in params or params[k].kind is kinds.POSITIONAL_ONLY]
        if unknown:
            options = [n for n, p in params.items() if p.kind in (kinds.KEYWORD_ONLY,
                       kinds.POSITIONAL_OR_KEYWORD)][len(args):]  # fmt: skip
            raise TypeError(
                f"{owner} has no option {', '.join(map(repr, unknown))}; its options: "
                f"{', '.join(options) or 'none'}"
            )
    positional = [n for n, p in params.items() if p.kind in (kinds.POSITIONAL_ONLY,
                  kinds.POSITIONAL_OR_KEYWORD)][: len(args)]  # fmt: skip
    missing = [
        n
        for n, p in params.items()
        if p.default is p.empty
        and p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)
        and n not in positional
        and n not in kwargs
    ]
    if missing:
        raise MissingOptionError(
            f"{owner} needs {', '.join(f'{m}=...' for m in missing)} (no default)", missing
        )


def check_kwargs(fns: list[Callable[..., Any]], kwargs: dict[str, Any], owner: str) -> None:
    """Raise ``TypeError`` naming the option when a keyword value cannot have the annotated type.

    Options usually come from YAML (numbers, strings, lists), and a wrong type would otherwise
    surface as a traceback mid-training. Each keyword is checked against the first of ``fns``
    that declares it; numbers, strings, bools, None, lists of those, classes and ``type[...]``
    are understood, anything else (other generics, type variables) is not checked.
    """
    for key, value in kwargs.items():
        for fn in fns:
            if key not in inspect.signature(fn).parameters:
                continue
            hint = _hints(fn).get(key)
            if hint is not None and _matches(value, hint) is False:
                raise TypeError(
                    f"{owner}: {key}={value!r} is {type(value).__name__}, expected "
                    f"{_describe(hint)}"
                )
            break


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: nothing to check
        return {}


def _matches(value: Any, hint: Any) -> bool | None:
    """True/False when ``hint`` is understood, else None (not checked)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        results = [_matches(value, a) for a in args]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:  # numpy integers count; bool is not an option's number
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return (
            isinstance(value, numbers.Real) and not isinstance(value, bool)
        ) or _is_scalar_tensor(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (collections.abc.Sequence, list, tuple):
        if isinstance(value, str) or not isinstance(value, list | tuple):
            return False
        item = args[0] if args else None
        if item is None or item is Ellipsis:
            return True
        results = [_matches(v, item) for v in value]
        return None if None in results else all(results)
    if origin is type and args and isinstance(args[0], type):  # e.g. type[nn.Module]
        return isinstance(value, type) and issubclass(value, args[0])
    if isinstance(hint, type) and origin is None:  # a plain class, e.g. torch.Tensor
        return isinstance(value, hint)
    return None


def _is_scalar_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and getattr(value, "ndim", None) == 0


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if typing.get_origin(hint) in (collections.abc.Sequence, list, tuple):
        args = typing.get_args(hint)
        return f"a list of {_describe(args[0])}" if args else "a list"
    if typing.get_origin(hint) is type and typing.get_args(hint):
        return f"a {_describe(typing.get_args(hint)[0])} class"
    return getattr(hint, "__name__", str(hint))
