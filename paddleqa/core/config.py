"""Typed stage configs: dataclasses with help text, YAML override files, strict keys.

Every stage declares a dataclass whose fields carry their help text in ``metadata["help"]`` (made
with :func:`opt`) and whose ``__post_init__`` validates values without side effects. YAML files
hold only overrides, one section per stage; :func:`from_dict` rejects unknown keys and lists the
valid ones. Nested dataclasses (e.g. a model architecture) are built from nested mappings.
"""
from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError


def opt(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None,
        result: bool = True) -> Any:
    """A dataclass field with help text; ``factory`` for mutable defaults. ``result=False`` marks
    a field that does not change what the stage produces (progress bars, logging, where caches
    live): :mod:`paddleqa.core.freshness` ignores it when it decides whether a recorded run
    still stands for this config."""
    metadata = {"help": help, "result": result}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def result_view(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``values`` (a :func:`to_dict` of a ``cls``, maybe recorded by an older
    paddleqa) that decide a stage's result: fields marked ``result=False`` are dropped, a field
    the record lacks takes its default (a field added later with a default that keeps the old
    behaviour does not make old runs stale), and keys ``cls`` no longer has are dropped.
    Nested config dataclasses are viewed the same way."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.metadata.get("result", True):
            continue
        if f.name in values:
            value = values[f.name]
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = None
        tp = hints.get(f.name)
        if _is_dataclass_type(tp) and isinstance(value, Mapping):
            value = result_view(tp, value)
        out[f.name] = to_dict(value)
    return out


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; an unset variable without default is an error."""

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ and os.environ[name] != "":
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"environment variable {name} is not set (used in {value!r}); "
            f"set it or write ${{{name}:-DEFAULT}} in the config"
        )

    return _ENV.sub(sub, value)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated field type (int/float/str/bool/Optional/list/dataclass)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _coerce(value, args[0], where)
        return value
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping of {tp.__name__} keys, got {value!r}")
        return from_dict(tp, value, where=where)
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return expand_env(str(value))
    return value


def from_dict(cls: type, values: Mapping[str, Any] | None, *, where: str = "") -> Any:
    """Build config dataclass ``cls`` from a mapping of overrides; unknown keys are errors."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(names))
    prefix = f"{where}." if where else ""
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)} for {cls.__name__}; "
            f"valid keys: {', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data view of a config (nested dataclasses become dicts, tuples lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with errors that name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist; see configs/ for examples")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["finetune.epochs=3", "finetune.arch.hidden_size=64"]`` -> nested dict (YAML-typed values)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r} conflicts with an earlier --set of {part}")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            node[parts[-1]] = raw
    return out


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (``extra`` wins); neither input is modified."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


