"""Typed run configuration: YAML presets and dotted command-line overrides onto the schema.

The dataclasses of agents/config_schema.py are the schema (types, defaults, one-line docs in
``metadata["help"]``); OmegaConf merges a YAML preset and ``key=value`` overrides onto it and
rejects unknown keys and wrong types. Every user mistake surfaces as one :class:`ConfigError` whose
message names the key, the value and what is valid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import re
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from agents.config_schema import _CHOICES, _RANGES, Config

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


class ConfigError(ValueError):
    """A user's mistake in a config file, an override or a run directory."""


def _get(cfg: Any, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def validate(
    cfg: Any,
    choices: dict[str, tuple[str, ...]] | None = None,
    ranges: dict[str, tuple[Any, str]] | None = None,
) -> None:
    """Check choices and ranges that the type system cannot express; raise ConfigError.
    ``choices`` / ``ranges`` default to the RL schema's tables (other schemas pass their own)."""
    for key, value in _floats(cfg):
        if not math.isfinite(value):  # "Inf"/"nan" parse as floats and pass every "> 0" check
            raise ConfigError(f"{key}={value!r} is out of range; it must be a finite number")
    for key, valid in (_CHOICES if choices is None else choices).items():
        value = _get(cfg, key)
        if value not in valid:
            raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(valid)}")
    for key, (ok, desc) in (_RANGES if ranges is None else ranges).items():
        value = _get(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key}={value!r} is out of range; it must be {desc}")


def _floats(node: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, value) of every float field of a (nested) config dataclass."""
    out: list[tuple[str, float]] = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out += _floats(value, key + ".")
        elif isinstance(value, float):
            out.append((key, value))
    return out


def _omegaconf_message(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if type(err).__name__ == "ConfigKeyError" and key:
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        where = f" of {parent!r}" if parent else ""
        section = getattr(err, "object_type", None)
        fields = [f.name for f in dataclasses.fields(section)] if _is_schema(section) else []
        close = difflib.get_close_matches(key.rsplit(".", 1)[-1], fields, n=3)
        prefix = f"{parent}." if parent else ""
        if not close and not parent and _is_schema(section):  # `run_dir=` for supervised.run_dir
            close = _nested_matches(section, key)
        hint = f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""
        supervised = getattr(section, "__module__", "") == "agents.supervised_config"
        listed = "in docs/mtrl.md" if supervised else "by `python train.py --help`"
        return f"unknown config key {key!r}{hint}; the valid fields{where} are listed {listed}"
    return _friendlier(key, first)


def _nested_matches(section: type[DataclassInstance], key: str) -> list[str]:
    """``<field>.<key>`` for each dataclass field of ``section`` that has a field ``key``."""
    try:
        hints = typing.get_type_hints(section)
    except (NameError, TypeError):  # an annotation that does not resolve: no suggestion
        return []
    return [
        f"{f.name}.{key}"
        for f in dataclasses.fields(section)
        if _is_schema(hints.get(f.name))
        and key in {g.name for g in dataclasses.fields(hints[f.name])}
    ]


def _is_schema(obj: object) -> TypeGuard[type[DataclassInstance]]:
    return isinstance(obj, type) and dataclasses.is_dataclass(obj)


def _friendlier(key: str | None, first: str) -> str:
    """OmegaConf's wording of common mistakes, rephrased to name the fix."""
    if "is not a ListConfig" in first and key:
        return (
            f"{key} must be a list: write {key}=[a,b] (in YAML, {key.rsplit('.', 1)[-1]}: [a, b])"
        )
    m = re.match(r"Merge error: (\w+) is not a subclass of (\w+)\. value: (.*)", first)
    if m:
        section = _section_names(Config).get(m.group(2), m.group(2))
        return (
            f"{section} must be a section of keys, not {m.group(3)!r}: write "
            f"{section}.<key>=<value> (`python train.py --help` lists them)"
        )
    if key and ("is not Optional" in first or first.startswith("Incompatible value 'None'")):
        return f"{key} needs a value (an empty one reads as null); see `python train.py --help`"
    m = re.match(r"Value '(.*)' of type '(\w+)' could not be converted to (\w+)", first)
    if m and key:
        value, kind = m.group(1), {"Integer": "an integer", "Float": "a number"}.get(m.group(3))
        if kind is not None:
            hint = ""
            with contextlib.suppress(ValueError, OverflowError):
                number = float(value)  # YAML and OmegaConf read 1e6 as text or a float
                if kind == "an integer" and number.is_integer():
                    hint = f"; write it in full: {int(number)}"
            return f"{key}={value} is not {kind}{hint}"
    return f"{key}: {first}" if key else first


def _section_names(cls: type, prefix: str = "") -> dict[str, str]:
    """Dataclass name -> its dotted section in the config (e.g. 'AgentConfig' -> 'agent')."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if callable(f.default_factory) else f.default
        if dataclasses.is_dataclass(default):
            out[type(default).__name__] = prefix + f.name
            out.update(_section_names(type(default), prefix + f.name + "."))
    return out


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: object, line: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key set twice in one mapping (it keeps the last one
    silently, so a forgotten earlier setting would win or lose unseen)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue  # unhashable keys: PyYAML's own error follows
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def one_line(message: object) -> str:
    """``message`` with every non-printable character (newlines too) escaped: one line, for the
    ``error:`` lines of the command-line entry points."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))


_REPO_ROOT = Path(__file__).resolve().parent.parent


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in the YAML file at ``path`` ({} if empty); any problem is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        # a preset named from outside the repository (a user's launcher, docs/extending.md):
        # relative paths are read from the current directory, not from the repository
        shipped = _REPO_ROOT / p
        hint = (
            f" (relative to the current directory; the repository's is {str(shipped)!r})"
            if not p.is_absolute() and shipped.is_file()
            else ""
        )
        raise ConfigError(f"config file {str(p)!r} not found{hint}; pass an existing YAML file")
    try:
        data = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader
    except _DuplicateKey as e:
        raise ConfigError(
            f"config file {str(p)!r} sets {e.key!r} twice at line {e.line}; keep one"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys, not a list")
    return data


def merge_structured(
    schema: type, data: dict[str, Any] | None = None, overrides: list[str] | None = None
) -> Any:
    """Merge the dataclass ``schema``'s defaults, ``data`` and ``key=value`` overrides into an
    instance of ``schema`` (unknown keys and wrong types raise ConfigError)."""
    layers: list[Any] = [OmegaConf.structured(schema)]
    if data is not None:
        layers.append(data)
    for item in overrides or []:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} must look like key=value (e.g. seed=3)")
        if not item.isprintable():  # YAML would fold a newline into a space, silently
            raise ConfigError(
                f"override {item!r} contains a control character (newline, tab, ...); "
                "give the value without it"
            )
    try:
        if data is not None:
            _check_bools(schema, data)
        if overrides:
            dotlist = OmegaConf.from_dotlist(list(overrides))
            _check_bools(schema, OmegaConf.to_container(dotlist))
            layers.append(dotlist)
        merged = OmegaConf.merge(*layers)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_omegaconf_message(e)) from None
    except yaml.YAMLError as e:  # e.g. an unclosed bracket in an override (key=[1,)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"an override is not valid YAML: {first}") from None
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e).splitlines()[0]) from None


def _check_bools(schema: object, data: Any, prefix: str = "") -> None:
    """Refuse an integer other than 0 or 1 for a bool field: OmegaConf reads any non-zero
    integer as true, so ``env.workers=4`` (meant as four workers) ran as ``true`` unseen."""
    if not isinstance(data, dict) or not _is_schema(schema):
        return
    try:
        hints = typing.get_type_hints(schema)
    except (NameError, TypeError):  # an annotation that does not resolve: no bool check
        return
    for f in dataclasses.fields(schema):
        if f.name not in data:
            continue
        value, kind, key = data[f.name], hints.get(f.name), f"{prefix}{f.name}"
        if kind is bool and type(value) is int and value not in (0, 1):
            raise ConfigError(f"{key}={value} is not a bool; write {key}=true or {key}=false")
        _check_bools(kind, value, key + ".")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Merge schema defaults, the YAML file at ``path`` and ``key=value`` overrides; validate."""
    data = None if path is None else read_yaml(path)
    cfg = merge_structured(Config, data, overrides)
    assert isinstance(cfg, Config)
    validate(cfg)
    return cfg


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML text (saved beside every run and checkpoint)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def diff_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain nested dicts (for checkpoints)."""
    return dataclasses.asdict(cfg)
