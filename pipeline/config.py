"""Strict config loading: YAML -> frozen dataclasses, with `--set a.b=value` overrides.

Each stage declares its config as frozen dataclasses whose defaults are the stage's
defaults; a YAML file lists only what differs; `--set` overrides win over both
(defaults < YAML < --set). There is no inheritance, interpolation or `_target_`.

An unknown key is an error that names the closest valid key; a value of the wrong type is
an error naming the key, the expected type and the value.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file, key or value is invalid."""


def did_you_mean(key: str, valid: Sequence[str]) -> str:
    """ "; did you mean 'x'?" with the closest valid name, or "" when there is none (every stage's hint)."""
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.0)
    return f"; did you mean {match[0]!r}?" if match else ""


def _closest(key: str, valid: Sequence[str]) -> str:
    return f"{did_you_mean(key, valid)} (valid keys: {', '.join(sorted(valid))})"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` and convert lists to tuples, ints to floats."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported annotation {tp!r}")


def _build(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Instantiate dataclass `cls` from a mapping, strictly."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key {path!r}{_closest(str(key), list(fields))}")
        kwargs[key] = _coerce(value, hints[key], path)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc
    return obj


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> dict:
    """Turn ["a.b=1", "c=x"] into a nested dict, values parsed as YAML scalars."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item}: cannot parse value: {exc}") from exc
        _set_path(tree, key.strip(), value)
    return tree


def _merge(base: dict, extra: Mapping) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping (an empty file is an empty mapping)."""
    p = Path(path)
    if not p.is_file():
        what = "a directory" if p.is_dir() else "missing"
        raise ConfigError(f"{p}: config file is {what}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def resolve_raw(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> dict:
    """YAML file (optional) merged with `--set` overrides, without schema checks."""
    data = read_yaml(path) if path else {}
    return _merge(data, parse_overrides(overrides))


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Build the frozen dataclass `cls`: defaults < YAML at `path` < `overrides`.

    Raises:
        ConfigError: unknown key (with the closest valid one), wrong type, bad file.
    """
    where = str(path) if path else "<defaults>"
    try:
        return _build(cls, resolve_raw(path, overrides))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build `cls` from a plain dict (e.g. the run config stored in a checkpoint)."""
    return _build(cls, data)


def to_dict(cfg: Any) -> dict:
    """A plain, YAML-ready dict of a config dataclass (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def dump_yaml(data: Mapping[str, Any]) -> str:
    """Deterministic YAML text (sorted keys) for resolved configs."""
    return yaml.safe_dump(dict(data), sort_keys=True, default_flow_style=False)
