"""Typed option sections that validate themselves (the building block of :mod:`.config`).

A section is a dataclass deriving from :class:`Section`: constructing one checks every field
against its declared type (``Literal`` choices included) and runs the section's own range
checks, so a section object is valid wherever it exists — built from YAML, from ``key=value``
overrides or directly in Python. Each method declares its section next to its code
(``methods/kd.py: KDConfig``); :mod:`.config` assembles them into the run's ``Config``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import types
import typing
from typing import Any

from ensemble_distill.errors import ConfigError

# A number as written in a config: ASCII digits only, so that Python's float() extensions
# (``1_000``, Arabic-Indic or other Unicode digits, surrounding spaces) are not numbers here.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
INT64 = 2**63  # every int option must fit torch's and NumPy's int64
_SHOWN = reprlib.Repr()  # a huge or deeply nested value is shown cut short, on one line
_SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlevel = 80, 80, 3
_SHOWN.maxlist = _SHOWN.maxdict = _SHOWN.maxtuple = _SHOWN.maxset = 6


class InvalidValue(ConfigError):
    """A config value of the wrong type or out of its range.

    ``key`` is relative to the section that found it; the loader names the full dotted key
    (:meth:`under`), so a section checks its fields without knowing where it sits.
    """

    def __init__(self, key: str, requirement: str, value: Any, *, show_type: bool = False) -> None:
        self.key, self.requirement, self.value, self.show_type = key, requirement, value, show_type
        shown = _SHOWN.repr(value)
        shown = f"{shown} ({type(value).__name__})" if show_type else shown
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
    strings as floats, booleans for ``"true"``/``"false"`` choices); else raise. Checked once
    here for every key: floats finite (NaN, ±inf and 1e400 refused), ints within int64, texts
    non-empty, free-form mappings keyed by argument names with finite floats inside."""
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
        for name in value:  # keyword arguments (model_args, dataset_args): names only
            ok = isinstance(name, str) and name.isidentifier()
            require(ok, key, "must map argument names (like widths) to values", name)
        _check_finite_inside(value, key)
        return value
    elif kind is float and isinstance(value, int | float | str) and not isinstance(value, bool):
        if not isinstance(value, str) or is_number(value):  # YAML 1.1 reads 1e-3 as a string
            return _finite_float(value, key)
    elif kind is str and isinstance(value, str):
        require(value.strip() != "" and "\x00" not in value, key, "must be a non-empty text", value)
        return value
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        require(-INT64 <= value < INT64, key, "must fit in 64 bits (|value| < 2**63)", value)
        return value
    elif isinstance(kind, type) and isinstance(value, kind) and not _bool_as_int(kind, value):
        return value
    raise _type_error(key, value, kind)


def is_number(text: str) -> bool:
    """``text`` is a decimal number in ASCII digits (``1``, ``-2.5``, ``1e-3``); unlike
    ``float()``, not ``1_000``, Unicode digits, ``nan`` or ``inf``."""
    return _NUMBER.fullmatch(text) is not None


def _finite_float(value: int | float | str, key: str) -> float:
    """``value`` as a float, refused when NaN, infinite or too large for a float (1e400)."""
    try:
        number = float(value)
    except OverflowError:  # an int past 1.8e308
        number = math.inf
    require(math.isfinite(number), key, "must be a finite number", value)
    return number


def _check_finite_inside(value: Any, key: str) -> None:
    """No NaN or infinite float anywhere in a free-form mapping (``model_args``)."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for name, item in items:
        inner = f"{key}.{name}" if isinstance(value, dict) else f"{key}[{name}]"
        if isinstance(item, float):
            require(math.isfinite(item), inner, "must be a finite number", item)
        elif isinstance(item, dict | list | tuple):
            _check_finite_inside(item, inner)


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


def _type_error(key: str, value: Any, kind: Any) -> InvalidValue:
    want = getattr(kind, "__name__", None) or str(kind).replace("typing.", "")
    return InvalidValue(key, f"must be {want}", value, show_type=True)
