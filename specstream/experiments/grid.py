"""Grids: which configurations a sweep runs.

A grid maps dotted field paths (``"cache.window"``) to lists of values. The
paths and their types are read from the dataclasses of :data:`SECTIONS`, so
every field added to them is sweepable at once; values are checked against
the field's type hint before anything runs, and every combination is built
(so the config classes' own checks fire) by :meth:`Grid.points`.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from ..generation import CacheConfig, SpeculativeConfig
from .identity import canonical, config_hash
from .settings import GenerationSettings, ModelSettings


class GridError(ValueError):
    """A sweep that cannot run; ``field`` is the dotted path at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


#: Grid sections -> the dataclass whose fields they sweep.
SECTIONS: dict[str, type] = {
    "cache": CacheConfig,
    "speculative": SpeculativeConfig,
    "generation": GenerationSettings,
    "model": ModelSettings,
}


@dataclass(frozen=True)
class _Field:
    path: str
    section: str
    name: str
    hint: Any
    default: Any

    @property
    def kind(self) -> tuple:
        """(base types, optional) from the type hint."""
        hint = self.hint
        optional = False
        args = typing.get_args(hint)
        if typing.get_origin(hint) is Union or _is_union_type(hint):
            optional = type(None) in args
            args = tuple(a for a in args if a is not type(None))
            hint = args[0] if len(args) == 1 else args
        origin = typing.get_origin(hint) or hint
        return origin, optional


def _is_union_type(hint: Any) -> bool:
    """``X | None`` hints (Python >= 3.10) are types.UnionType, not typing.Union."""
    return isinstance(hint, getattr(types, "UnionType", ()))


def grid_fields() -> dict[str, _Field]:
    """Every sweepable dotted path (``"cache.window"``, ``"speculative.k"``,
    ...) -> its field, discovered from the config dataclasses."""
    out = {}
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            out[f"{section}.{f.name}"] = _Field(f"{section}.{f.name}", section, f.name, hints[f.name], default)
    return out


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", str(t))


def _coerce(fld: _Field, value: Any) -> Any:
    """Checks one grid value against the field's type; returns its canonical
    form (int for whole floats of int fields is NOT done: 1.0 is a wrong type
    for an int field; ints are accepted for float fields and become floats)."""
    base, optional = fld.kind
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")
                         and base is not str):
        if optional:
            return None
        raise GridError(fld.path, f"None is not allowed (expects {_type_name(base)})")
    if base is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
    elif base is int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return int(value)
    elif base is float:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
            return float(value)
    elif base is str:
        if isinstance(value, str):
            return value
    elif base in (tuple, list):
        if isinstance(value, (list, tuple)):
            return tuple(value)
    else:  # a type this layer does not know: let the dataclass judge
        return value
    want = _type_name(base) + (" or None ('none' in TOML)" if optional else "")
    raise GridError(fld.path, f"value {value!r} has type {type(value).__name__}, expected {want}")


@dataclass(frozen=True)
class Point:
    """One configuration of a grid: the settings of each section and the
    grid values that produced it (``params``, in axis order)."""

    cache: CacheConfig
    speculative: SpeculativeConfig
    generation: GenerationSettings
    model: ModelSettings = ModelSettings()
    params: tuple = ()

    def flat(self) -> dict[str, Any]:
        """Every field of every section as ``{"cache.window": 128, ...}``."""
        out = {}
        for section in SECTIONS:
            obj = getattr(self, section)
            for f in dataclasses.fields(obj):
                out[f"{section}.{f.name}"] = canonical(getattr(obj, f.name))
        return out

    @property
    def label(self) -> str:
        """The grid values, short: ``policy=streaming window=128 k=2``."""
        return _label(dict(self.params)) or "defaults"

    @property
    def id(self) -> str:
        """A pytest-friendly id: ``window=128-k=2`` (also ``str(point)``)."""
        return self.label.replace(" ", "-") or "defaults"

    def __str__(self) -> str:
        return self.id


def _short_names(paths: Iterable[str]) -> dict[str, str]:
    paths = list(paths)
    names = [p.split(".", 1)[1] for p in paths]
    return {p: (n if names.count(n) == 1 else p) for p, n in zip(paths, names)}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v)) or "()"
    return str(v)


def _label(params: Mapping[str, Any]) -> str:
    short = _short_names(params)
    return " ".join(f"{short[p]}={_fmt(v)}" for p, v in params.items())


class Grid:
    """A validated grid: ``Grid({"cache.window": [128, 256], ...})``.

    ``axes`` may also be a list of such mappings (their configurations are
    united, in order, without duplicates). ``base`` fixes fields outside the
    grid. Construction validates field names, value types and empty axes;
    :meth:`points` builds every configuration (so the config classes'
    own checks fire) and raises on an invalid combination unless
    ``skip_invalid``.
    """

    def __init__(self, axes: Union[Mapping[str, Sequence[Any]], Sequence[Mapping[str, Sequence[Any]]]],
                 base: Optional[Mapping[str, Any]] = None) -> None:
        fields = grid_fields()
        subgrids = [axes] if isinstance(axes, Mapping) else list(axes)
        if not subgrids:
            raise GridError("grid", "no axes given")
        self.base: dict[str, Any] = {}
        for path, value in (base or {}).items():
            fld = self._field(fields, path)
            self.base[path] = _coerce(fld, value)
        self.subgrids: list[dict[str, list]] = []
        for sub in subgrids:
            if not isinstance(sub, Mapping):
                raise GridError("grid", f"expected a table of axes, got {type(sub).__name__}")
            checked: dict[str, list] = {}
            for path, values in sub.items():
                fld = self._field(fields, path)
                if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, np.ndarray)):
                    raise GridError(path, f"an axis must be a list of values, got {values!r}")
                values = list(values)
                if not values:
                    raise GridError(path, "empty axis (give at least one value)")
                checked[path] = [_coerce(fld, v) for v in values]
            self.subgrids.append(checked)

    @staticmethod
    def _field(fields: Mapping[str, _Field], path: Any) -> _Field:
        if not isinstance(path, str):
            raise GridError(str(path), "field paths must be strings like 'cache.window'")
        if path in fields:
            return fields[path]
        section = path.split(".", 1)[0]
        if "." not in path or section not in SECTIONS:
            hint = difflib.get_close_matches(path, list(fields), n=1)
            raise GridError(path, "unknown field: paths are <section>.<field> with section one of "
                                  f"{', '.join(SECTIONS)}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        names = [p for p in fields if p.startswith(section + ".")]
        hint = difflib.get_close_matches(path, names, n=1)
        raise GridError(path, f"unknown field of {SECTIONS[section].__name__}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + f"; known: {', '.join(n.split('.', 1)[1] for n in names)}")

    @property
    def axes(self) -> list[str]:
        """Every dotted path that some sub-grid sweeps, in first-seen order."""
        seen: dict[str, None] = {}
        for sub in self.subgrids:
            for p in sub:
                seen.setdefault(p)
        return list(seen)

    @property
    def varying(self) -> list[str]:
        """Paths that take more than one value over the grid (a sub-grid
        that does not set a path contributes its base or default value)."""
        fields = grid_fields()
        values: dict[str, set] = {}
        for p in self.axes:
            for sub in self.subgrids:
                vs = sub[p] if p in sub else [self.base.get(p, fields[p].default)]
                values.setdefault(p, set()).update(json.dumps(canonical(v)) for v in vs)
        return [p for p in self.axes if len(values[p]) > 1]

    def sections_swept(self) -> set[str]:
        return {p.split(".", 1)[0] for p in self.axes}

    def points(self, skip_invalid: bool = False) -> list[Point]:
        """Every configuration, each built (and so validated) now."""
        varying = set(self.varying)
        out: list[Point] = []
        seen: set[str] = set()
        for sub in self.subgrids:
            paths = list(sub)
            for combo in itertools.product(*(sub[p] for p in paths)):
                values = dict(self.base)
                values.update(zip(paths, combo))
                try:
                    point = _build_point(values)
                except (ValueError, TypeError) as e:
                    if skip_invalid:
                        continue
                    field_path = _field_in_message(str(e), values) or (paths[0] if paths else "grid")
                    raise GridError(field_path, f"invalid combination {_label(dict(zip(paths, combo)))}: {e}") from e
                params = tuple((p, v) for p, v in zip(paths, combo) if p in varying)
                point = dataclasses.replace(point, params=params)
                k = config_hash(point.flat())
                if k not in seen:
                    seen.add(k)
                    out.append(point)
        if not out:
            raise GridError("grid", "every combination is invalid (skip_invalid dropped them all)")
        return out

    def __len__(self) -> int:
        return len(self.points(skip_invalid=True))

    def __repr__(self) -> str:
        return f"Grid({self.subgrids if len(self.subgrids) > 1 else self.subgrids[0]!r})"


def _field_in_message(msg: str, values: Mapping[str, Any]) -> Optional[str]:
    """The dotted path a config error names (``CacheConfig.overlap`` -> ``cache.overlap``)."""
    best = None
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            token = f"{cls.__name__}.{f.name}"
            if token in msg:
                pos = msg.index(token)
                if best is None or pos < best[0]:
                    best = (pos, f"{section}.{f.name}")
    return best[1] if best else None


def _build_point(values: Mapping[str, Any]) -> Point:
    kwargs: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for path, v in values.items():
        section, name = path.split(".", 1)
        kwargs[section][name] = v
    return Point(**{s: cls(**kwargs[s]) for s, cls in SECTIONS.items()})
