"""The machinery every config section shares: errors that name a dotted field, choice fields that
are declared once and validated from that declaration, and registries for choices that user
projects may extend.

A section is a frozen dataclass deriving from `Section`. A choice field is declared with
`choice(default, CHOICES)`, where `CHOICES` is a tuple (a closed set) or a `Registry` (an open set:
rocket's built-ins plus whatever a user registers); `Section.__post_init__` checks every choice
field against its declaration, then runs the section's own `validate()`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is unknown, out of range, or inconsistent with another value (or, with
    an empty `field`, the config file itself cannot be used).

    `field` is the dotted path of the offending field. A section's checks name it relative to the
    section; `Section` makes it absolute from the section's place in `ExperimentConfig`
    (`model.mod.capacity`, also for a section built on its own), and the loaders prefix what is
    still relative, so the message always names the field as it is written in a config file or on
    the command line.
    """

    def __init__(self, field: str, msg: str, absolute: bool = False):
        super().__init__(f"config field '{field}': {msg}" if field else msg)
        self.field, self.msg, self.absolute = field, msg, absolute

    def __reduce__(self) -> tuple[type, tuple[str, str, bool]]:  # picklable across processes
        return ConfigError, (self.field, self.msg, self.absolute)

    def under(self, prefix: str) -> ConfigError:
        """The same error, with the field named from an enclosing section (`prefix` ends in '.');
        an absolute path is kept."""
        if self.absolute or not self.field:
            return self
        return ConfigError(f"{prefix}{self.field}", self.msg)


def check(cond: bool, field: str, msg: str) -> None:
    """Raises `ConfigError(field, msg)` unless `cond`."""
    if not cond:
        raise ConfigError(field, msg)


class Registry(Generic[T]):
    """An open set of named implementations behind one config choice.

    rocket declares the built-in names here, in the config package, so a config validates without
    importing the layers that implement them; the implementing module attaches each built-in's
    implementation with `register`, and a user project adds its own names the same way:

        @ATTENTION_KINDS.register("my_attention")
        def my_attention(q_bthd, k_bskd, v_bskd, mask_bts, *, power=None): ...

    after which `AttentionConfig(kind="my_attention")` validates and the model builds it.
    """

    def __init__(self, what: str, builtins: tuple[str, ...]):
        self.what = what
        self.builtins = builtins
        self._impls: dict[str, T] = {}

    def register(self, name: str, impl: T | None = None, *, overwrite: bool = False) -> Any:
        """Registers `impl` under `name` (or decorates: `@registry.register(name)`). Raises on a
        name registered before unless `overwrite` (a built-in name may be attached once)."""

        def add(obj: T) -> T:
            if not isinstance(name, str) or not name:
                raise ValueError(f"a {self.what} name must be a non-empty string, got {name!r}")
            if name in self._impls and not overwrite:
                raise ValueError(f"{self.what} {name!r} is registered already (pass overwrite=True)")
            self._impls[name] = obj
            return obj

        return add if impl is None else add(impl)

    def names(self) -> tuple[str, ...]:
        """Built-in names first, then user-registered ones in registration order."""
        return self.builtins + tuple(n for n in self._impls if n not in self.builtins)

    def get(self, name: str) -> T:
        """The implementation of `name`; ValueError naming the available ones otherwise."""
        if name not in self._impls:
            raise ValueError(f"unknown {self.what} {name!r}; available: {self.names()}")
        return self._impls[name]

    def __contains__(self, name: object) -> bool:
        return name in self.builtins or name in self._impls

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return repr(self.names())


Choices = tuple[str, ...] | Registry


def choice(default: str, choices: Choices) -> Any:
    """A dataclass field whose value must be one of `choices` (checked by `Section`)."""
    return dataclasses.field(default=default, metadata={"choices": choices})


def choices_of(cls: type, name: str) -> Choices:
    """The declaration behind choice field `name` of section `cls`."""
    return {f.name: f for f in dataclasses.fields(cls)}[name].metadata["choices"]


def section_path(cls: type) -> str | None:
    """Where section `cls` sits in `ExperimentConfig` (`"model.mod"`; `""` for the experiment
    itself), or None for a section outside it."""
    from rocket.config.experiment import ExperimentConfig  # the root, defined on top of this module

    def walk(node: type, prefix: str) -> str | None:
        if node is cls:
            return prefix.rstrip(".")
        for f in dataclasses.fields(node):
            if dataclasses.is_dataclass(f.default):
                found = walk(type(f.default), f"{prefix}{f.name}.")
                if found is not None:
                    return found
        return None

    return walk(ExperimentConfig, "")


class Section:
    """Base of every config section: checks choice fields, then calls `validate()`; an error names
    the field by its full dotted path (`section_path`)."""

    def __post_init__(self) -> None:
        try:
            for f in dataclasses.fields(self):  # type: ignore[arg-type]
                allowed = f.metadata.get("choices")
                value = getattr(self, f.name)
                if allowed is not None and value not in allowed:
                    raise ConfigError(f.name, f"must be one of {tuple(allowed)}, got {value!r}")
            self.validate()
        except ConfigError as e:
            path = None if e.absolute or not e.field else section_path(type(self))
            if path is None:
                raise
            raise ConfigError(f"{path}.{e.field}" if path else e.field, e.msg, absolute=True) from None

    def validate(self) -> None:
        """Range and consistency checks of the section (raise `ConfigError`)."""


def positive(section: Any, *names: str) -> None:
    """Checks that each named field of `section` is >= 1 (integers) or > 0 (floats)."""
    for name in names:
        value = getattr(section, name)
        check(value is not None and value > 0, name, f"must be positive, got {value}")


def non_negative(section: Any, *names: str) -> None:
    for name in names:
        check(getattr(section, name) >= 0, name, f"must be >= 0, got {getattr(section, name)}")


def optional_positive(section: Any, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        check(value is None or value >= 1, name, f"must be >= 1 (or None), got {value}")
