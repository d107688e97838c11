"""Typed option sections that validate themselves (the building block of :mod:`.config`).

A section is a dataclass deriving from :class:`Section`: constructing one checks every field
against its declared type (``Literal`` choices included) and runs the section's own range
checks, so a section object is valid wherever it exists — built from YAML, from ``key=value``
overrides or directly in Python. Each method declares its section next to its code
(``methods/kd.py: KDConfig``); :mod:`.config` assembles them into the run's ``Config``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from ensemble_distill.errors import ConfigError


class InvalidValue(ConfigError):
    """A config value of the wrong type or out of its range.

    ``key`` is relative to the section that found it; the loader names the full dotted key
    (:meth:`under`), so a section checks its fields without knowing where it sits.
    """

    def __init__(self, key: str, requirement: str, value: Any, *, show_type: bool = False) -> None:
        self.key, self.requirement, self.value, self.show_type = key, requirement, value, show_type
        shown = f"{value!r} ({type(value).__name__})" if show_type else repr(value)
        super().__init__(f"config key {key!r} {requirement}, got {shown}; fix the value")

    def under(self, prefix: str) -> InvalidValue:
        """The same error with ``prefix`` (``"kd."``) before the key."""
        return InvalidValue(
            prefix + self.key, self.requirement, self.value, show_type=self.show_type
        )


def require(ok: bool, key: str, requirement: str, value: Any) -> None:
    """Raise :class:`InvalidValue` unless ``ok``: ``require(lr > 0, "lr", "must be > 0", lr)``."""
    if not ok:
        raise InvalidValue(key, requirement, value)


def positive(section: Any, *keys: str) -> None:
    """Each named field of ``section`` is > 0."""
    for key in keys:
        value = getattr(section, key)
        require(value > 0, key, "must be > 0", value)


def at_least(section: Any, low: float, *keys: str) -> None:
    """Each named field of ``section`` is >= ``low``."""
    for key in keys:
        value = getattr(section, key)
        require(value >= low, key, f"must be >= {low}", value)


def unit_interval(section: Any, *keys: str) -> None:
    """Each named field of ``section`` lies in [0, 1]."""
    for key in keys:
        value = getattr(section, key)
        require(0.0 <= value <= 1.0, key, "must lie in [0, 1]", value)


class Section:
    """Base of every config section: fields type-checked on construction, then :meth:`check`."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            kind, value = hints[item.name], getattr(self, item.name)
            if dataclasses.is_dataclass(kind) and isinstance(value, kind):
                continue  # a section: valid since it was built
            object.__setattr__(self, item.name, check_type(value, kind, item.name))
        self.check()

    def check(self) -> None:
        """The section's range checks; raise :class:`InvalidValue` naming the field."""


def check_type(value: Any, kind: Any, key: str) -> Any:
    """``value`` if it has type ``kind``, converted where YAML is loose (ints and exponent
    strings as floats, booleans for ``"true"``/``"false"`` choices); else raise."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return _check_union(value, kind, key)
    if origin is typing.Literal:
        return _check_choice(value, typing.get_args(kind), key)
    if dataclasses.is_dataclass(kind):
        raise InvalidValue(key, "must be a mapping of its keys to values", value)
    if kind is type(None) and value is None:
        return None
    if origin is list:
        (item_kind,) = typing.get_args(kind)
        if isinstance(value, list):
            return [check_type(v, item_kind, f"{key}[{i}]") for i, v in enumerate(value)]
    elif kind is dict and isinstance(value, dict):
        return value
    elif kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    elif kind is float and isinstance(value, str) and _is_float(value):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    elif kind is float and isinstance(value, float):
        require(value == value and abs(value) != float("inf"), key, "must be finite", value)
        return value
    elif isinstance(kind, type) and isinstance(value, kind) and not _bool_as_int(kind, value):
        return value
    raise _type_error(key, value, kind)


def _check_union(value: Any, kind: Any, key: str) -> Any:
    options = [option for option in typing.get_args(kind) if option is not type(None)]
    if value is None and len(options) < len(typing.get_args(kind)):
        return None
    if len(options) == 1:  # X | None: X's own message names the bad item
        return check_type(value, options[0], key)
    for option in options:
        try:
            return check_type(value, option, key)
        except ConfigError:
            continue
    raise _type_error(key, value, kind)


def _check_choice(value: Any, choices: tuple[Any, ...], key: str) -> Any:
    if isinstance(value, bool) and str(value).lower() in choices:
        return str(value).lower()  # YAML reads teacher.vectorize=true as a boolean
    if isinstance(value, str) and value in choices:
        return value
    raise InvalidValue(key, f"must be one of {', '.join(map(str, choices))}", value)


def _bool_as_int(kind: type, value: Any) -> bool:
    return kind is int and isinstance(value, bool)  # True is an int to Python, not to a config


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity")


def _type_error(key: str, value: Any, kind: Any) -> InvalidValue:
    want = getattr(kind, "__name__", None) or str(kind).replace("typing.", "")
    return InvalidValue(key, f"must be {want}", value, show_type=True)
