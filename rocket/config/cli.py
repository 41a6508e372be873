"""Loading an experiment from the command line: `--config FILE [--config.a.b=value ...]`.

`FILE` is a Python file whose `get_config()` returns an `ml_collections.ConfigDict` (or a mapping)
with the sections of `ExperimentConfig`; each `--config.<path>=<value>` override is parsed with the
type of the field it names. Every failure (a missing, unreadable or non-Python file, no
`get_config`, a `get_config` that raises, an unknown or renamed key, a value of the wrong type, an
inconsistent config) raises `ConfigError` with one line naming the problem; the CLIs print it as
`error: ...` and exit with code 2.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import ml_collections

from rocket.config.base import ConfigError
from rocket.config.experiment import ExperimentConfig
from rocket.config.legacy import MODEL_RENAMES
from rocket.config.serialize import allowed_types, from_dict, is_section, set_path


def load_config_file(path: str) -> dict[str, Any]:
    """Runs `get_config()` of the Python file at `path` -> its values as a nested dict."""
    if not os.path.isfile(path):
        raise ConfigError("", f"no config file at {path!r}")
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        ast.parse(source, filename=path)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("", f"cannot read config file {path!r}: {e}") from None
    except SyntaxError as e:
        raise ConfigError(
            "", f"config file {path!r} is not valid Python: {e.msg} (line {e.lineno})"
        ) from None
    name = "rocket_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        get_config = getattr(module, "get_config", None)
        if not callable(get_config):
            raise ConfigError("", f"config file {path!r} defines no get_config() function")
        cd = get_config()
    except ConfigError:
        raise
    except Exception as e:  # a user's file: whatever it raises is reported in one line
        raise ConfigError("", f"get_config() of {path!r} failed: {type(e).__name__}: {e}") from None
    if isinstance(cd, ml_collections.ConfigDict):
        return cd.to_dict()
    if isinstance(cd, ExperimentConfig):
        return dataclasses.asdict(cd)
    if isinstance(cd, dict):
        return cd
    raise ConfigError("", f"get_config() of {path!r} returned {type(cd).__name__}, not a ConfigDict")


def _field_types(path: str) -> tuple[type, ...]:
    """The types field `path` (dotted, below ExperimentConfig) accepts; ConfigError if unknown."""
    cls: Any = ExperimentConfig
    parts = path.split(".")
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        here = ".".join(parts[: i + 1])
        if (
            ".".join(parts[:i]) == "model"
            and part in MODEL_RENAMES
            and (part not in fields or i == len(parts) - 1)
        ):
            raise ConfigError(here, f"was renamed to 'model.{MODEL_RENAMES[part]}'")
        if part not in fields:
            section = ".".join(parts[:i]) or "config"
            raise ConfigError(here, f"unknown key; valid keys of '{section}' are {sorted(fields)}")
        if is_section(fields[part]):
            if i == len(parts) - 1:
                raise ConfigError(here, "is a section; override one of its fields")
            cls = type(fields[part].default)
        elif i < len(parts) - 1:
            raise ConfigError(here, "is a value, not a section")
        else:
            return allowed_types(cls, part)
    raise ConfigError(path, "empty override")


def parse_value(path: str, text: str) -> Any:
    """The command-line string `text` as a value of field `path`'s type."""
    types = _field_types(path)
    if type(None) in types and text in ("None", "none", "null"):
        return None
    if bool in types:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
    for t in (int, float):
        if t in types:
            try:
                return t(text)
            except ValueError:
                continue
    if str in types:
        return text
    names = " or ".join("None" if t is type(None) else t.__name__ for t in types)
    raise ConfigError(path, f"expected {names}, got {text!r}")


def split_args(argv: Sequence[str]) -> tuple[str | None, list[tuple[str, str]], list[str]]:
    """argv -> (config file, [(dotted path, value text)], the other arguments)."""
    path, overrides, rest = None, [], []
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if name == "--config" or name.startswith("--config."):
            if not eq:
                if not args:
                    raise ConfigError("", f"{name} is missing its value")
                value = args.pop(0)
            if name == "--config":
                path = value
            else:
                overrides.append((name[len("--config.") :], value))
        else:
            rest.append(arg)
    return path, overrides, rest


def load_experiment(
    path: str | None, overrides: Sequence[tuple[str, str]] = (), base: dict[str, Any] | None = None
) -> ExperimentConfig:
    """The validated experiment of config file `path` (or of the config dict `base`, e.g. a
    checkpoint's saved config) with command-line `overrides` applied."""
    if path is None and base is None:
        raise ConfigError(
            "", "--config is required: an experiment file, e.g. experiments/configs/quickstart.py"
        )
    values = load_config_file(path) if base is None else base
    for dotted, text in overrides:
        set_path(values, dotted, parse_value(dotted, text))
    return from_dict(ExperimentConfig, values)
