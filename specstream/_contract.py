"""The configuration contract with the C core.

The core declares every configuration struct as a field list (name, type,
default, limits, choices, documentation; ``csrc/include/specstream.h``) and
checks configurations itself. This module reads those tables, so that the
Python dataclasses take their defaults and choices from them and hand their
values to the core for checking: a field, a limit or a rule exists once, in
C.

Kinds: ``"model"``, ``"cache"``, ``"speculative"``, ``"sampling"``.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import Any

from . import _core

__all__ = ["schema", "field", "default", "choices", "check", "values", "ConfigTypeError"]

#: A configuration value of the wrong type: both a TypeError and a ValueError.
ConfigTypeError = _core.ConfigTypeError


@functools.lru_cache(maxsize=None)
def _schema(kind: str) -> tuple:
    return tuple(_core.config_schema(kind))


def schema(kind: str) -> list[dict[str, Any]]:
    """The core's description of every field of a configuration kind, in
    declaration order: name, type, default, min, max, min_open, max_open,
    choices, specials, doc."""
    return [dict(f) for f in _schema(kind)]


def field(kind: str, name: str) -> dict[str, Any]:
    """One field's description."""
    for f in _schema(kind):
        if f["name"] == name:
            return dict(f)
    raise KeyError(f"the core's {kind} configuration has no field {name!r}")


def default(kind: str, name: str) -> Any:
    """The core's default of a field, as a Python value (specials as None or
    their name, choices as their name)."""
    return field(kind, name)["default"]


def choices(kind: str, name: str) -> tuple[str, ...]:
    """The names a choice field accepts, in the core's order."""
    return tuple(field(kind, name)["choices"] or ())


def values(config: Any) -> dict[str, Any]:
    """A dataclass configuration as the dict of field values the core takes."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def check(config: Any, kind: str) -> None:
    """Has the core check a frozen dataclass configuration (raising its
    ValueError / ConfigTypeError naming the field) and stores the values as
    the core holds them (numpy numbers as Python ones, id lists as tuples).
    Numbers keep the digits they were given: the core stores some as float32,
    but 0.8 should read back as 0.8."""
    checked = _core.config_check(kind, values(config))
    for name, value in checked.items():
        given = getattr(config, name)
        if isinstance(value, float) and isinstance(given, numbers.Real) and not isinstance(given, bool):
            value = float(given)
        object.__setattr__(config, name, value)


def check_fields_match(cls: type, kind: str) -> None:
    """Raises unless a dataclass declares exactly the core's fields, in its
    order (called when the module defining the dataclass is imported, so
    that the two can never drift apart)."""
    ours = [f.name for f in dataclasses.fields(cls)]
    theirs = [f["name"] for f in _schema(kind)]
    if ours != theirs:
        raise ImportError(f"{cls.__name__} fields {ours} differ from the core's {kind} fields {theirs}: "
                          "rebuild the extension (pip install -e .)")
