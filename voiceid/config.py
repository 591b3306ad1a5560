"""Strict loading of ``params.yaml`` sections into frozen dataclasses.

Every stage reads exactly one section (``prepare``, ``features``, ...) and turns it
into a frozen dataclass.  A key the dataclass does not declare, a declared key that
is missing, or a value of the wrong type is a :class:`ConfigError` whose message
names the dotted key, so a typo in ``params.yaml`` fails the stage before any work.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Demo:
    ...     seed: int
    ...     name: str = "x"
    >>> from_mapping(Demo, {"seed": 3}, "demo")
    Demo(seed=3, name='x')
    >>> from_mapping(Demo, {"seed": 3, "sede": 4}, "demo")
    Traceback (most recent call last):
    ...
    voiceid.config.ConfigError: params.yaml: unknown key 'demo.sede' (known: name, seed)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """A params file is unreadable, or a key in it is unknown, missing or mistyped."""


def read_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Parse a params YAML file into a dict; a syntax error names the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: params file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, found {type(data).__name__}")
    return data


MISSING: Any = object()  # what lookup() returns for a key the params do not have


def lookup(raw: dict[str, Any], dotted: str) -> Any:
    """The value at ``dotted`` (e.g. ``"grid.dataset_name"``) in parsed params, or :data:`MISSING`.

    >>> lookup({"grid": {"dataset_name": "default"}}, "grid.dataset_name"), lookup({}, "grid.x") is MISSING
    ('default', True)
    """
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def read_key(dotted: str, kind: type, path: str | Path = DEFAULT_PARAMS) -> Any:
    """One value of another stage's section (DVC tracks it as ``dotted``), checked to be a ``kind``."""
    value = lookup(read_params(path), dotted)
    if value is MISSING:
        raise ConfigError(f"{path}: missing key '{dotted}'")
    if not isinstance(value, kind):
        raise ConfigError(f"{path}: '{dotted}' must be a {kind.__name__}, found {value!r}")
    return value


def load_section(cls: type[T], name: str, path: str | Path = DEFAULT_PARAMS) -> T:
    """Load section ``name`` of the params file at ``path`` into dataclass ``cls``."""
    data = read_params(path)
    if name not in data:
        raise ConfigError(f"params.yaml: missing section '{name}'")
    return from_mapping(cls, data[name], name)


def from_mapping(cls: type[T], data: Any, key: str) -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown and missing keys."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"params.yaml: '{key}' must be a mapping, found {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"params.yaml: unknown key '{key}.{unknown[0]}' (known: {', '.join(sorted(fields))})")
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        dotted = f"{key}.{name}"
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], dotted)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"params.yaml: missing key '{dotted}'")
    instance = cls(**kwargs)
    check = getattr(instance, "check", None)
    if callable(check):
        # A dataclass may validate cross-field rules; it raises ValueError naming the field.
        try:
            check()
        except ValueError as exc:
            # a rule whose message starts with a field name is reported at that field's dotted key
            msg = str(exc)
            head = msg.split(" ", 1)[0].split(".", 1)[0].split("[", 1)[0].rstrip(":")
            where = f"{key}.{head}" if head in fields else key
            raise ConfigError(f"params.yaml: '{where}': {msg}") from exc
    return instance


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` and convert containers to immutable forms."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"params.yaml: '{key}' has invalid value {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"params.yaml: '{key}' must be one of {choices}, found {value!r}")
        return value
    if origin in (tuple, list, typing.Sequence) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"params.yaml: '{key}' must be a list, found {type(value).__name__}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        return tuple(_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"params.yaml: '{key}' must be a mapping, found {type(value).__name__}")
        args = get_args(tp)
        val_tp = args[1] if len(args) == 2 else Any
        return types.MappingProxyType({k: _coerce(val_tp, v, f"{key}.{k}") for k, v in value.items()})
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, key)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"params.yaml: '{key}' must be a number, found {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"params.yaml: '{key}' must be an integer, found {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"params.yaml: '{key}' must be true or false, found {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"params.yaml: '{key}' must be a string, found {value!r}")
        return value
    return value


def as_dict(obj: Any) -> dict[str, Any]:
    """Flatten a (nested) params dataclass to ``{"a.b": value}`` for logging as run params."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                walk(f"{prefix}.{f.name}" if prefix else f.name, getattr(value, f.name))
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = list(value) if isinstance(value, tuple) else value

    walk("", obj)
    return out
