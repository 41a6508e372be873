"""Configs to and from plain dicts and `ml_collections.ConfigDict`s, with errors naming the field.

`from_dict` rejects unknown keys, wrong types and flat names from before the nesting (with their
new path), and prefixes every validation error with the section's dotted path.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import ml_collections

from rocket.config.base import ConfigError, section_path
from rocket.config.experiment import ExperimentConfig
from rocket.config.legacy import renamed, upgrade
from rocket.config.model import ModelConfig

T = TypeVar("T")


def allowed_types(cls: type, name: str) -> tuple[type, ...]:
    """The runtime types a field accepts, from its annotation (`int | None` -> (int, NoneType))."""
    hint = typing.get_type_hints(cls)[name]
    return tuple(typing.get_args(hint)) or (hint,)


def coerce(cls: type, name: str, value: Any, path: str) -> Any:
    """Checks a value's type against the field's annotation; ints are accepted for float fields."""
    allowed = allowed_types(cls, name)
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    ok = bool in allowed if isinstance(value, bool) else isinstance(value, allowed)
    if not ok:
        names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
        raise ConfigError(path, f"expected {names}, got {value!r} ({type(value).__name__})")
    return value


def is_section(f: dataclasses.Field) -> bool:
    return dataclasses.is_dataclass(f.default)


def from_dict(cls: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
    """Builds section `cls` from a mapping; every error names the dotted field (`prefix` + key)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        new_path = renamed(cls is ModelConfig, key, value)
        if new_path is not None:
            raise ConfigError(path, f"was renamed to '{prefix}{new_path}'")
        if key not in fields:
            section = prefix.rstrip(".") or cls.__name__
            raise ConfigError(path, f"unknown key; valid keys of '{section}' are {sorted(fields)}")
        if is_section(fields[key]):
            if not isinstance(value, Mapping):
                raise ConfigError(path, f"expected a section (mapping), got {value!r}")
            kwargs[key] = from_dict(type(fields[key].default), value, prefix=f"{path}.")
        else:
            kwargs[key] = coerce(cls, key, value, path)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise e.under(prefix) from None


def saved_config(values: Mapping[str, Any]) -> ExperimentConfig:
    """An experiment config as a checkpoint saved it, by this or an earlier version of rocket (flat
    model names from before the nesting are moved to their sections first)."""
    return from_dict(ExperimentConfig, upgrade(values))


def to_dict(cfg: Any) -> dict[str, Any]:
    """A section as a nested dict of plain values (JSON-serialisable)."""
    return dataclasses.asdict(cfg)


def from_config_dict(cd: ml_collections.ConfigDict | Mapping[str, Any]) -> ExperimentConfig:
    """ml_collections config (with command-line overrides applied) -> validated ExperimentConfig."""
    values = cd.to_dict() if isinstance(cd, ml_collections.ConfigDict) else dict(cd)
    return from_dict(ExperimentConfig, values)


def _with_placeholders(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Optional fields left at None become typed placeholders, so `--config.model.head_dim=64` works."""
    out = {}
    for f in dataclasses.fields(cls):
        v = values[f.name]
        if is_section(f):
            out[f.name] = _with_placeholders(type(f.default), v)
        elif v is None:
            kinds = [t for t in allowed_types(cls, f.name) if t is not type(None)]
            out[f.name] = ml_collections.config_dict.placeholder(kinds[0])
        else:
            out[f.name] = v
    return out


def to_config_dict(cfg: ExperimentConfig) -> ml_collections.ConfigDict:
    """The inverse of `from_config_dict`: a ConfigDict with every field, for experiment files."""
    return ml_collections.ConfigDict(_with_placeholders(ExperimentConfig, to_dict(cfg)))


def override(cfg: T, changes: Mapping[str, Any]) -> T:
    """`cfg` with changes applied and validated. Keys are dotted paths (`{"mod.capacity": 0.5,
    "n_layers": 8}`); a mapping given for a section changes only the fields it names (`{"mod":
    {"capacity": 0.5}}`). Unknown paths and flat names from before the nesting raise ConfigError."""
    values = to_dict(cfg)
    for path, value in changes.items():
        set_path(values, path, value)
    where = section_path(type(cfg))  # so errors name `model.mod.capacity` even for a bare ModelConfig
    return from_dict(type(cfg), values, prefix=f"{where}." if where else "")


def set_path(values: dict[str, Any], path: str, value: Any) -> None:
    """Sets dotted `path` in the nested dict `values` (a missing section is created, a mapping is
    merged into an existing section); ConfigError when a parent on the path is a value."""
    *parents, leaf = path.split(".")
    node = values
    for i, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(".".join(parents[: i + 1]), f"is a value, not a section (in '{path}')")
    node[leaf] = _merged(node.get(leaf), value)


def _merged(old: Any, new: Any) -> Any:
    """`new`, or for a section (both mappings) `old` with `new`'s fields merged in, recursively."""
    if not (isinstance(old, dict) and isinstance(new, Mapping)):
        return new
    return {**old, **{k: _merged(old.get(k), v) for k, v in new.items()}}
