"""Typed configuration: dataclasses owned by their components, loaded from YAML (safely) and
overridden from the command line. Nested dataclasses map to nested YAML mappings and to dotted
flags (``--clips.max-seconds 30``). A field's help text is its ``help`` metadata or, failing that,
the comment beside it in the source.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


def check_positive(owner: str, **values) -> None:
    """For ``__post_init__``: every named setting must be > 0 (a zero limit would never finish)."""
    for name, value in values.items():
        if value is None or value <= 0:
            raise ValueError(f"{owner}.{name} must be positive, got {value!r}")


def _field_comments(cls) -> dict[str, str]:
    """``name: type = default  # comment`` → {name: comment}, read from the source of the class
    and of its bases (a class made with ``make_dataclass`` has none of its own)."""
    out = {}
    for klass in reversed(cls.__mro__):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for match in re.finditer(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", source, re.M):
            out[match.group(1)] = match.group(2).strip()
    return out


def _resolved_hints(cls) -> dict[str, Any]:
    import sys

    module = sys.modules.get(cls.__module__)
    return typing.get_type_hints(cls, vars(module) if module else None)


def _scalar_type(tp):
    """The parser for a field's type (Optional[X] → X)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _scalar_type(args[0]) if len(args) == 1 else str
    return tp


def _parse_bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _coerce(value, tp, where: str):
    tp = _scalar_type(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list")
        (inner, *_) = typing.get_args(tp) or (str,)
        return [_coerce(v, inner, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        return dict(value)
    try:
        if tp is bool:
            return value if isinstance(value, bool) else _parse_bool(value)
        if tp in (int, float, str):
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        raise ConfigError(f"{where}: cannot read {value!r} as {tp.__name__}") from None
    return value


def from_dict(cls, data: dict, where: str = "config"):
    """Build dataclass ``cls`` from a mapping; unknown keys are an error, not silently ignored."""
    hints = _resolved_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # a __post_init__ check: name where it came from
        raise ConfigError(f"{where}: {exc}") from None


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def load_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:  # includes tags such as !!python/object, which safe_load refuses
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{path}: not plain YAML ({detail}); tags like !!python/object are never loaded") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the YAML as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, prefix: str = "", skip: set[str] = frozenset()) -> None:
    """One ``--flag`` per field (nested dataclasses as ``--outer.inner``), default unset."""
    hints = _resolved_hints(cls)
    comments = _field_comments(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = _scalar_type(hints[f.name])
        dest = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            add_dataclass_arguments(parser, tp, prefix=f"{dest}.")
            continue
        flag = "--" + dest.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        text = (f.metadata.get("help") or comments.get(f.name, "")).replace("%", "%%")  # argparse formats help
        shown = repr(default).replace("%", "%%")
        help_text = f"{text} (default: {shown})" if text else f"(default: {shown})"
        origin = typing.get_origin(tp)
        if origin in (list, tuple):
            parser.add_argument(flag, dest=dest, nargs="+", default=None, help=help_text)
        elif tp is bool:
            parser.add_argument(flag, dest=dest, type=_parse_bool, nargs="?", const=True, default=None, metavar="BOOL",
                                help=help_text)  # a bare --flag means true
        else:
            parser.add_argument(flag, dest=dest, type=str, default=None,
                                metavar=getattr(tp, "__name__", "VALUE").upper(), help=help_text)


def _set_dotted(data: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        data = data.setdefault(p, {})
    data[parts[-1]] = value


def build_config(cls, args: argparse.Namespace, config_path: str | None = None, extra: dict | None = None):
    """YAML file (if any), then command-line flags that were given, then ``extra``; typed."""
    data = load_yaml(config_path) if config_path else {}
    names = set()

    def collect(c, prefix=""):
        hints = _resolved_hints(c)
        for f in dataclasses.fields(c):
            tp = _scalar_type(hints[f.name])
            if dataclasses.is_dataclass(tp):
                collect(tp, f"{prefix}{f.name}.")
            else:
                names.add(f"{prefix}{f.name}")

    collect(cls)
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            _set_dotted(data, name, value)
    for k, v in (extra or {}).items():
        if v is not None:
            _set_dotted(data, k, v)
    return from_dict(cls, data, where=config_path or "config")
