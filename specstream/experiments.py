"""Experiments: ablation grids over every switch, a resumable runner and a
JSONL result store.

A *grid* maps dotted field paths to lists of values::

    {"cache.policy": ["streaming"],
     "cache.compress_every": [1, 16, 32, 64],
     "cache.max_drop": [None, 256],
     "speculative.k": [2, 4],
     "generation.temperature": [0.0]}

The sections are ``cache`` (:class:`~specstream.CacheConfig`), ``speculative``
(:class:`~specstream.SpeculativeConfig`) and ``generation``
(:class:`GenerationSettings`); the fields are read from the dataclasses, so
every switch added to them is sweepable at once. A grid is validated before
anything runs: an unknown field, a value of the wrong type, an empty axis or
a combination the config classes reject raises :class:`GridError` naming the
field.

For each configuration the runner measures what the protocol asks for
(TPOT, TTFT, total and prefill time, PPL, peak memory; median of
``repeats`` runs):

- ``"ppl"``: :func:`specstream.eval.perplexity` of the data slice streamed
  token by token through the cache: PPL, its relative change against the
  full-cache baseline of the same model and slice (``ppl_delta``; the
  baseline is measured once and stored as its own row, ``kind="baseline"``),
  timings, KV bytes, peak RSS, evictions and the keys each token saw;
- ``"generate"``: generation after a prompt taken from the slice, with the
  draft when one is given: tokens/s, TPOT, TTFT, acceptance rate, mean
  accepted length and the speedup over target-only decoding timed in the
  same run.

Every finished row is appended to a JSONL file as one ``write`` of one line,
flushed and fsynced, under a file lock. Rows are keyed by a hash of the full
configuration, the model identity (config and weight bytes), the data slice
(its token ids), the measurement settings and the code version (package
version + git commit; ``SPECSTREAM_CODE_VERSION`` overrides it), so a killed
or extended sweep resumes where it stopped and never recomputes a row.
Results load as a pandas DataFrame with :func:`load_results`.

Python::

    from specstream import experiments as ex
    df = ex.run_sweep({"cache.policy": ["streaming"], "cache.window": [128, 256],
                       "speculative.k": [2, 4]},
                      target="default", draft="default", data="wikitext-2-test",
                      tokens=512, repeats=2, out="sweeps/demo")

Command line (the sweep file's ``[run]`` table holds the keyword arguments,
``[grid]`` the grid; TOML has no null, so write ``"none"`` for None)::

    python -m specstream sweep examples/sweep_default.toml --out sweeps/demo [--shard I/N]
    python -m specstream merge sweeps/demo
    python -m specstream plot sweeps/demo/results.jsonl --out figs/

Shards (``--shard I/N``, or ``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT``)
take every N-th configuration and write ``results.shard-I-of-N.jsonl``;
``merge`` unites them into ``results.jsonl`` without duplicates.
``--executor slurm`` submits the shards as a Slurm job array via submitit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from .generation import CacheConfig, SpeculativeConfig

__all__ = [
    "GridError",
    "GenerationSettings",
    "SECTIONS",
    "grid_fields",
    "Grid",
    "Point",
    "RunSpec",
    "Sweep",
    "ResultStore",
    "Runner",
    "run_sweep",
    "load_results",
    "merge",
    "comparable",
    "code_version",
    "model_identity",
    "parse_shard",
    "submit_slurm",
    "TIMING_COLUMNS",
    "RESULTS_FILE",
]

PathLike = Union[str, "os.PathLike[str]"]

RESULTS_FILE = "results.jsonl"
_SHARD_GLOB = "results*.jsonl"
SCHEMA = 1


class GridError(ValueError):
    """A sweep that cannot run; ``field`` is the dotted path at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


# ----------------------------------------------------------------- settings

@dataclass(frozen=True)
class GenerationSettings:
    """Settings of the generation run of a configuration (the ``generation.``
    section of a grid).

    The prompt is the first ``prompt_tokens`` ids of the data slice; then
    ``max_new_tokens`` are generated greedily (``temperature=0``) or sampled
    with ``seed``. ``speculate=False`` decodes with the target alone even
    when a draft is given.
    """

    max_new_tokens: int = 64
    prompt_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    speculate: bool = True

    def __post_init__(self) -> None:
        for name, lo in (("max_new_tokens", 2), ("prompt_tokens", 1), ("top_k", 0), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"GenerationSettings.{name} must be an integer, got {v!r}")
            if v < lo:
                raise ValueError(f"GenerationSettings.{name} must be >= {lo}, got {v}")
        for name in ("temperature", "top_p"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"GenerationSettings.{name} must be a finite number, got {v!r}")
        if self.temperature < 0:
            raise ValueError(f"GenerationSettings.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"GenerationSettings.top_p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.speculate, bool):
            raise TypeError(f"GenerationSettings.speculate must be a bool, got {self.speculate!r}")


#: Grid sections -> the dataclass whose fields they sweep.
SECTIONS: dict[str, type] = {
    "cache": CacheConfig,
    "speculative": SpeculativeConfig,
    "generation": GenerationSettings,
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
        if typing.get_origin(hint) is Union or (sys.version_info >= (3, 10) and _is_union_type(hint)):
            optional = type(None) in args
            args = tuple(a for a in args if a is not type(None))
            hint = args[0] if len(args) == 1 else args
        origin = typing.get_origin(hint) or hint
        return origin, optional


def _is_union_type(hint: Any) -> bool:
    import types

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


# --------------------------------------------------------------------- grid

def _canon(obj: Any) -> Any:
    """JSON-ready canonical form (tuples -> lists, numpy scalars -> Python)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _canon(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _canon(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canon(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(_canon(obj), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Point:
    """One configuration of a grid: the three config objects and the grid
    values that produced it (``params``, in axis order)."""

    cache: CacheConfig
    speculative: SpeculativeConfig
    generation: GenerationSettings
    params: tuple = ()

    def flat(self) -> dict[str, Any]:
        """Every field of every section as ``{"cache.window": 128, ...}``."""
        out = {}
        for section in SECTIONS:
            obj = getattr(self, section)
            for f in dataclasses.fields(obj):
                out[f"{section}.{f.name}"] = _canon(getattr(obj, f.name))
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
                values.setdefault(p, set()).update(json.dumps(_canon(v)) for v in vs)
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
                k = _hash(point.flat())
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


# ------------------------------------------------------------ identities

_IDENTITY_CACHE: dict[tuple, str] = {}


def _file_digest(path: Path, full_limit: int = 256 << 20, part: int = 8 << 20) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(f"{path.name}:{size}:".encode())
    with open(path, "rb") as f:
        if size <= full_limit:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:  # very large files: both ends plus the size
            h.update(f.read(part))
            f.seek(size - part)
            h.update(f.read(part))
    return h.hexdigest()


def model_identity(path: PathLike) -> str:
    """sha256 over a model directory's config.json, weight files and
    tokenizer.json (weights over 256 MiB: size plus both ends)."""
    d = Path(path)
    files = sorted(p for p in d.iterdir() if p.is_file() and (
        p.name in ("config.json", "tokenizer.json") or p.suffix == ".safetensors"
        or p.name.endswith(".safetensors.index.json")))
    if not any(p.name == "config.json" for p in files):
        raise FileNotFoundError(f"{d}: no config.json (not a model directory)")
    sig = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (str(d.resolve()), sig)
    if key not in _IDENTITY_CACHE:
        h = hashlib.sha256()
        for p in files:
            h.update(_file_digest(p).encode())
        _IDENTITY_CACHE[key] = h.hexdigest()
    return _IDENTITY_CACHE[key]


_CODE_VERSION: Optional[tuple] = None


def code_version() -> str:
    """Package version plus the git commit when the package runs from a git
    checkout (``0.1.0+g1a2b3c4d5e6f``); ``SPECSTREAM_CODE_VERSION`` overrides."""
    env = os.environ.get("SPECSTREAM_CODE_VERSION")
    if env:
        return env
    return _git_info()[0]


def _git_info() -> tuple:
    """(code version, dirty or None)."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        from . import __version__

        version, dirty = __version__, None
        pkg = Path(__file__).resolve().parent
        try:
            top = subprocess.run(["git", "-C", str(pkg), "rev-parse", "--show-toplevel"], capture_output=True,
                                 text=True, timeout=10)
            # only our own checkout, not a repository that happens to contain site-packages
            if top.returncode == 0 and (Path(top.stdout.strip()) / "specstream").resolve() == pkg:
                head = subprocess.run(["git", "-C", str(pkg), "rev-parse", "HEAD"], capture_output=True,
                                      text=True, timeout=10)
                if head.returncode == 0:
                    version = f"{version}+g{head.stdout.strip()[:12]}"
                    st = subprocess.run(["git", "-C", str(pkg), "status", "--porcelain", "--untracked-files=no"],
                                        capture_output=True, text=True, timeout=30)
                    dirty = bool(st.stdout.strip()) if st.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            pass
        _CODE_VERSION = (version, dirty)
    return _CODE_VERSION


# ---------------------------------------------------------------- run spec

_MEASURES = ("ppl", "generate")


@dataclass(frozen=True)
class RunSpec:
    """What a sweep runs on (the ``[run]`` table of a sweep file).

    ``target``/``draft``: ``"default"`` (the bundled pair), a model
    directory, or (Python only) a loaded :class:`~specstream.Model`; ``draft``
    None means no speculation. ``data``: a bundled text name
    (``"wikitext-2-test"``, ``"pg2554"``), a ``.txt`` file (tokenized with the
    target's tokenizer), a ``.npy`` file of token ids, or (Python only) an
    array of ids. ``tokens`` ids from ``offset`` form the slice. ``measure``:
    ``"ppl"`` and/or ``"generate"`` (default: ppl, plus generate when a
    draft is given or the grid sweeps speculative/generation fields).
    ``chunk``: tokens per forward in the perplexity pass (1 = as decoding
    sees them). ``threads``: the C core's thread count (None: unchanged).
    ``skip_invalid``: drop combinations the config classes reject instead of
    failing. ``baseline``: measure the full-cache reference row.
    """

    target: Any = "default"
    draft: Any = None
    data: Any = "wikitext-2-test"
    tokens: int = 512
    offset: int = 0
    repeats: int = 2
    chunk: int = 1
    dtype: str = "f32"
    measure: Optional[tuple] = None
    threads: Optional[int] = None
    skip_invalid: bool = False
    baseline: bool = True
    save_nll: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        for name, lo in (("tokens", 2), ("offset", 0), ("repeats", 1), ("chunk", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise GridError(f"run.{name}", f"must be an integer, got {v!r}")
            if v < lo:
                raise GridError(f"run.{name}", f"must be >= {lo}, got {v}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise GridError("run.threads", f"must be a positive integer or omitted, got {self.threads!r}")
        from .model import normalize_dtype

        try:
            normalize_dtype(self.dtype)
        except ValueError as e:
            raise GridError("run.dtype", str(e)) from None
        if self.measure is not None:
            m = (self.measure,) if isinstance(self.measure, str) else tuple(self.measure)
            bad = [x for x in m if x not in _MEASURES]
            if bad or not m:
                raise GridError("run.measure", f"must be a non-empty list of {list(_MEASURES)}, got {self.measure!r}")
            object.__setattr__(self, "measure", m)
        for name in ("skip_invalid", "baseline", "save_nll"):
            if not isinstance(getattr(self, name), bool):
                raise GridError(f"run.{name}", f"must be true or false, got {getattr(self, name)!r}")
        for name in ("target", "draft"):
            v = getattr(self, name)
            if v is None and name == "draft":
                continue
            if isinstance(v, str) and v.lower() == "none" and name == "draft":
                object.__setattr__(self, name, None)
                continue
            if isinstance(v, (str, os.PathLike)):
                if str(v) != "default" and not (Path(v) / "config.json").is_file():
                    raise GridError(f"run.{name}", f"{v!s}: not 'default' and not a model directory (no config.json)")
            elif not hasattr(v, "_core"):
                raise GridError(f"run.{name}", f"expected 'default', a model directory or a Model, got {v!r}")
        if isinstance(self.data, (str, os.PathLike)):
            _data_source(self.data)  # raises GridError when unknown

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        for k in d:
            if k not in known:
                hint = difflib.get_close_matches(k, known, n=1)
                raise GridError(f"run.{k}", "unknown setting" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                                + f"; known: {', '.join(sorted(known))}")
        return cls(**dict(d))


def _data_source(data: Any) -> tuple[str, Any]:
    """("bundled", name) | ("text", path) | ("ids", path)."""
    from .defaults import BUNDLED_TEXTS, _ALIASES

    s = str(data)
    if s in BUNDLED_TEXTS or s in _ALIASES:
        return "bundled", _ALIASES.get(s, s)
    p = Path(s)
    if p.is_file():
        if p.suffix == ".npy":
            return "ids", p
        return "text", p
    raise GridError("run.data", f"{s!r} is neither a bundled text ({', '.join(sorted(BUNDLED_TEXTS))}) "
                                "nor an existing .txt/.npy file")


@dataclass
class Sweep:
    """A run spec plus a grid (what a sweep file holds)."""

    run: RunSpec
    grid: Grid
    slurm: dict = field(default_factory=dict)
    source: Optional[str] = None

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: Optional[str] = None) -> "Sweep":
        for k in doc:
            if k not in ("run", "grid", "base", "slurm"):
                raise GridError(k, "unknown table in a sweep file (expected [run], [grid], [base], [slurm])")
        if "grid" not in doc:
            raise GridError("grid", "the sweep file has no [grid] table")
        run = RunSpec.from_dict(doc.get("run", {}))
        grid = Grid(doc["grid"], base=doc.get("base"))
        return cls(run=run, grid=grid, slurm=dict(doc.get("slurm", {})), source=source)

    @classmethod
    def from_toml(cls, path: PathLike) -> "Sweep":
        try:
            import tomllib  # type: ignore[import-not-found]
        except ModuleNotFoundError:  # Python < 3.11
            import tomli as tomllib  # type: ignore[no-redef]
        p = Path(path)
        try:
            with open(p, "rb") as f:
                doc = tomllib.load(f)
        except FileNotFoundError:
            raise
        except Exception as e:  # tomllib.TOMLDecodeError
            raise GridError(str(p), f"not valid TOML: {e}") from None
        return cls.from_dict(doc, source=str(p))

    def points(self) -> list[Point]:
        return self.grid.points(skip_invalid=self.run.skip_invalid)

    def validate(self) -> list[Point]:
        """Everything that can be checked without running: the points, and
        settings that only make sense together."""
        points = self.points()
        measure = _resolve_measure(self.run, self.grid)
        swept = self.grid.sections_swept()
        if "generate" not in measure:
            for section in ("speculative", "generation"):
                if section in swept:
                    path = next(p for p in self.grid.axes if p.startswith(section + "."))
                    raise GridError(path, f"has no effect: run.measure is {list(measure)} (add 'generate')")
        if "generate" in measure:
            for p in points:
                if p.generation.prompt_tokens >= self.run.tokens:
                    raise GridError("generation.prompt_tokens",
                                    f"{p.generation.prompt_tokens} must be smaller than run.tokens ({self.run.tokens})")
            if self.run.draft is None and "speculative" in swept:
                if any(p.speculative.method == "draft" and p.generation.speculate for p in points):
                    path = next(p for p in self.grid.axes if p.startswith("speculative."))
                    raise GridError(path, "speculative settings need a draft model (run.draft) "
                                          "or speculative.method = 'lookup'")
        return points


def _resolve_measure(run: RunSpec, grid: Grid) -> tuple:
    if run.measure is not None:
        return tuple(run.measure)
    m = ["ppl"]
    if run.draft is not None or grid.sections_swept() & {"speculative", "generation"}:
        m.append("generate")
    return tuple(m)


# ------------------------------------------------------------------- store

#: Columns that vary between runs of the same configuration (timings,
#: memory high-water marks, bookkeeping); :func:`comparable` drops them.
TIMING_COLUMNS = (
    "tpot_ms", "ttft_ms", "prefill_ms", "total_ms", "tpot_vs_full", "peak_rss_bytes",
    "gen_tokens_per_s", "gen_tpot_ms", "gen_ttft_ms", "gen_prefill_ms", "gen_total_ms", "gen_peak_rss_bytes",
    "speedup", "target_only_tokens_per_s", "draft_ms", "verify_ms",
    "wall_s", "started_at", "host", "git_dirty", "ppl_reused", "gen_reused", "threads", "cpu_kernels",
    "peak_rss_per_run", "gen_peak_rss_per_run", "python",
)


def _json_safe(v: Any) -> Any:
    v = _canon(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    return v


@contextlib.contextmanager
def _locked(fd: int) -> Any:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _read_rows(path: Path) -> list[dict]:
    """Rows of a JSONL file; an incomplete last line (a killed writer) and
    lines that do not parse are skipped with a warning."""
    if not path.is_file():
        return []
    rows = []
    data = path.read_bytes()
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                print(f"warning: {path}: ignoring an incomplete last line (interrupted write)", file=sys.stderr)
            else:
                print(f"warning: {path}:{i + 1}: ignoring a line that is not JSON", file=sys.stderr)
            continue
        if isinstance(row, dict) and "key" in row:
            rows.append(row)
    return rows


class ResultStore:
    """An append-only JSONL file of result rows, one JSON object per line,
    unique by ``row["key"]`` (the first row with a key wins when reading)."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._rows: dict[str, dict] = {}
        self._size = -1
        self._reload()

    def _reload(self) -> None:
        self._size = self.path.stat().st_size if self.path.is_file() else 0
        for row in _read_rows(self.path):
            self._rows.setdefault(row["key"], row)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: str) -> Optional[dict]:
        return self._rows.get(key)

    def rows(self) -> list[dict]:
        return list(self._rows.values())

    def append(self, row: Mapping[str, Any]) -> dict:
        """Appends one row durably: one write of one line, flush, fsync;
        returns the row as it will read back (NaN -> None, tuples -> lists).

        A previous writer killed mid-line leaves no newline at the end of
        the file: that fragment is cut off first, so every line stays whole.
        """
        if "key" not in row:
            raise ValueError("a result row needs a 'key'")
        if row["key"] in self._rows:
            return self._rows[row["key"]]
        line = (json.dumps(_json_safe(dict(row)), sort_keys=True, allow_nan=False) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            with _locked(fd):
                size = os.fstat(fd).st_size
                if size != self._size:  # another process appended: it may have written this key
                    self._reload()
                    if row["key"] in self._rows:
                        return self._rows[row["key"]]
                if size:
                    os.lseek(fd, size - 1, os.SEEK_SET)
                    if os.read(fd, 1) != b"\n":
                        # cut the fragment after the last complete line
                        with open(self.path, "rb") as f:
                            tail = f.read()
                        cut = tail.rfind(b"\n") + 1
                        os.ftruncate(fd, cut)
                view = memoryview(line)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
                self._size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        stored = json.loads(line)
        self._rows[row["key"]] = stored
        return stored


def _store_files(directory: Path) -> list[Path]:
    """results.jsonl first, then shard files in name order."""
    files = sorted(directory.glob(_SHARD_GLOB))
    main = directory / RESULTS_FILE
    return ([main] if main in files else []) + [f for f in files if f != main]


def _unique_rows(files: Iterable[Path]) -> list[dict]:
    seen: dict[str, dict] = {}
    for f in files:
        for row in _read_rows(f):
            seen.setdefault(row["key"], row)
    return list(seen.values())


def comparable(df: "Any") -> "Any":
    """``df`` without the timing and bookkeeping columns, sorted by key:
    what must be identical between two runs of the same sweep."""
    cols = [c for c in df.columns if c not in TIMING_COLUMNS]
    return df[cols].sort_values("key").reset_index(drop=True)


def load_results(path: PathLike) -> "Any":
    """Result rows as a pandas DataFrame (one row per key).

    ``path``: a JSONL file or a sweep directory (its results.jsonl and
    shard files, united). List values (e.g. ``cache.structural_ids``)
    become tuples; null metrics become NaN.
    """
    p = Path(path)
    if p.is_dir():
        rows = _unique_rows(_store_files(p))
    elif p.is_file():
        rows = _unique_rows([p])
    else:
        raise FileNotFoundError(f"{p}: no such results file or sweep directory")
    return _frame(rows)


def _frame(rows: Sequence[Mapping[str, Any]]) -> "Any":
    import pandas as pd

    df = pd.DataFrame(list(rows))
    for c in df.columns:
        if df[c].dtype == object and df[c].map(lambda v: isinstance(v, list)).any():
            df[c] = df[c].map(lambda v: tuple(v) if isinstance(v, list) else v)
    return df


def merge(directory: PathLike, out: Optional[PathLike] = None) -> int:
    """Unites ``directory``'s results.jsonl and shard files into ``out``
    (default: ``directory/results.jsonl``), one row per key, written
    atomically (temporary file + rename). Returns the number of rows."""
    from ._atomic import atomic_open

    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no such sweep directory")
    files = _store_files(d)
    if not files:
        raise FileNotFoundError(f"{d}: no results*.jsonl files to merge")
    rows = _unique_rows(files)
    target = Path(out) if out is not None else d / RESULTS_FILE
    with atomic_open(target, "w") as f:
        for row in rows:
            f.write(json.dumps(_json_safe(row), sort_keys=True, allow_nan=False) + "\n")
    return len(rows)


# ------------------------------------------------------------------ runner

def parse_shard(text: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> tuple[int, int]:
    """``"I/N"`` (0 <= I < N) -> (I, N); without text, from
    ``SLURM_ARRAY_TASK_ID`` (minus ``SLURM_ARRAY_TASK_MIN``) and
    ``SLURM_ARRAY_TASK_COUNT`` when set, else (0, 1)."""
    env = os.environ if env is None else env
    if text is None:
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            i = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
            return _check_shard(i, int(env["SLURM_ARRAY_TASK_COUNT"]), "SLURM_ARRAY_TASK_ID/COUNT")
        return 0, 1
    try:
        i_s, n_s = str(text).split("/")
        return _check_shard(int(i_s), int(n_s), "--shard")
    except ValueError as e:
        if isinstance(e, GridError):
            raise
        raise GridError("--shard", f"expected I/N with 0 <= I < N, got {text!r}") from None


def _check_shard(i: int, n: int, what: str) -> tuple[int, int]:
    if n < 1 or not 0 <= i < n:
        raise GridError(what, f"shard {i}/{n}: need 0 <= I < N")
    return i, n


def shard_file(directory: PathLike, shard: tuple[int, int]) -> Path:
    i, n = shard
    return Path(directory) / (RESULTS_FILE if n == 1 else f"results.shard-{i}-of-{n}.jsonl")


def _reset_peak_rss() -> bool:
    """Resets the process's RSS high-water mark (Linux); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    from .model import _peak_rss_bytes

    return _peak_rss_bytes()


def _median(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(statistics.median(xs)) if xs else math.nan


#: Columns each measurement part contributes (reused across rows that share it).
_PPL_COLS = ("ppl", "nll_mean", "tpot_ms", "ttft_ms", "prefill_ms", "total_ms", "kv_bytes", "weight_bytes",
             "mem_bytes", "peak_rss_bytes", "peak_rss_per_run", "evictions", "evicted_tokens", "visible_min",
             "visible_mean", "visible_max")
_GEN_COLS = ("speculating", "gen_tokens_per_s", "gen_tpot_ms", "gen_ttft_ms", "gen_prefill_ms", "gen_total_ms",
             "gen_kv_bytes", "gen_peak_rss_bytes", "new_tokens", "tokens_sha", "acceptance_rate",
             "mean_accepted_length", "tokens_per_target_forward", "drafted", "accepted", "speedup",
             "target_only_tokens_per_s", "draft_ms", "verify_ms", "gen_peak_rss_per_run")


class Runner:
    """Measures points of a sweep into a store, resuming from what the
    store (and its sibling shard files) already hold.

    ``out``: the sweep directory; rows go to ``results.jsonl`` (or the
    shard's own file). ``models``: optional preloaded ``(target, draft)``.
    """

    def __init__(self, run: RunSpec, out: PathLike, grid: Optional[Grid] = None,
                 shard: tuple[int, int] = (0, 1), progress: bool = True,
                 models: Optional[tuple] = None) -> None:
        self.run = run
        self.grid = grid
        self.dir = Path(out)
        self.shard = _check_shard(*shard, "shard")
        self.store = ResultStore(shard_file(self.dir, self.shard))
        self.progress = progress
        self.measure = _resolve_measure(run, grid) if grid is not None else (run.measure or ("ppl",))
        self._models = models
        self._gen_ref = grid.points(skip_invalid=True)[0].generation if grid is not None else None
        self._ids: Optional[np.ndarray] = None
        self._known: dict[str, dict] = {}
        self._parts: dict[str, dict] = {}
        for row in _unique_rows(_store_files(self.dir)) if self.dir.is_dir() else []:
            self._known.setdefault(row["key"], row)
            for part, cols in (("ppl_key", _PPL_COLS), ("gen_key", _GEN_COLS)):
                if row.get(part) and row[part] not in self._parts:
                    self._parts[row[part]] = {c: row.get(c) for c in cols}
        if run.threads is not None:
            from . import set_num_threads

            set_num_threads(run.threads)
        self._ident = self._identities()

    # -- identities and data (cheap: no weights are loaded)

    def _model_dir(self, which: str) -> Optional[Path]:
        v = getattr(self.run, which)
        if v is None:
            return None
        if isinstance(v, (str, os.PathLike)):
            if str(v) == "default":
                from .defaults import default_model_dir

                return default_model_dir(which)
            return Path(v)
        if getattr(v, "path", None) is None:
            raise GridError(f"run.{which}", "a Model given to a sweep must have been loaded from a directory")
        return Path(v.path)

    def _identities(self) -> dict[str, Any]:
        tdir = self._model_dir("target")
        ddir = self._model_dir("draft")
        ident = {
            "target": str(self.run.target) if isinstance(self.run.target, (str, os.PathLike)) else str(tdir),
            "target_id": model_identity(tdir),
            "draft": None if ddir is None else (str(self.run.draft) if isinstance(self.run.draft, (str, os.PathLike))
                                                 else str(ddir)),
            "draft_id": None if ddir is None else model_identity(ddir),
            "dtype": self.run.dtype,
        }
        ids = self.data_ids()
        ident.update(
            data=self._data_name(),
            offset=self.run.offset,
            tokens=self.run.tokens,
            data_sha=hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int32).tobytes()).hexdigest(),
            repeats=self.run.repeats,
            chunk=self.run.chunk,
            code_version=code_version(),
        )
        return ident

    def _data_name(self) -> str:
        d = self.run.data
        if isinstance(d, (str, os.PathLike)):
            kind, v = _data_source(d)
            return v if kind == "bundled" else str(v)
        return "<ids>"

    def _tokenizer_for_data(self) -> Any:
        if self._models is not None and getattr(self._models[0], "tokenizer", None) is not None:
            return self._models[0].tokenizer
        t = self.run.target
        if hasattr(t, "_core"):
            if t.tokenizer is None:
                raise GridError("run.data", "the target model has no tokenizer: give token ids (.npy or an array)")
            return t.tokenizer
        path = self._model_dir("target") / "tokenizer.json"
        if not path.is_file():
            raise GridError("run.data", f"the target model has no tokenizer ({path} missing): "
                                        "give token ids (a .npy file or an array) instead of text")
        from .tokenizer import Tokenizer

        return Tokenizer.from_file(path)

    def data_ids(self) -> np.ndarray:
        """The token ids of the data slice."""
        if self._ids is None:
            d = self.run.data
            if isinstance(d, (str, os.PathLike)):
                kind, v = _data_source(d)
                if kind == "ids":
                    all_ids = np.load(v)
                else:
                    from .defaults import default_text

                    text = default_text(v) if kind == "bundled" else Path(v).read_text(encoding="utf-8")
                    all_ids = self._tokenizer_for_data().encode(text)
            else:
                all_ids = d
            from .model import as_token_ids

            all_ids = as_token_ids(np.asarray(all_ids).reshape(-1), "run.data")
            start, stop = self.run.offset, self.run.offset + self.run.tokens
            if stop > len(all_ids):
                raise GridError("run.tokens", f"offset {start} + tokens {self.run.tokens} exceeds the data "
                                              f"({len(all_ids)} tokens)")
            self._ids = all_ids[start:stop].copy()
        return self._ids

    # -- models (loaded on first need)

    def models(self) -> tuple:
        if self._models is None:
            from .model import load

            def get(which: str) -> Any:
                v = getattr(self.run, which)
                if v is None:
                    return None
                if hasattr(v, "_core"):
                    return v
                return load(self._model_dir(which), dtype=self.run.dtype)

            target, draft = get("target"), get("draft")
            if draft is not None and getattr(draft, "tokenizer", None) is None:
                draft.tokenizer = getattr(target, "tokenizer", None)
            self._models = (target, draft)
        return self._models

    # -- keys

    def _speculating(self, point: Point) -> bool:
        return point.generation.speculate and (
            (self.run.draft is not None and point.speculative.method == "draft")
            or point.speculative.method == "lookup")

    def ppl_key(self, point: Point) -> str:
        i = self._ident
        return _hash({"part": "ppl", "cache": point.cache, "target_id": i["target_id"], "dtype": i["dtype"],
                      "data_sha": i["data_sha"], "repeats": i["repeats"], "chunk": i["chunk"],
                      "code_version": i["code_version"], "schema": SCHEMA})

    def gen_key(self, point: Point) -> str:
        i = self._ident
        spec = self._speculating(point)
        return _hash({"part": "gen", "cache": point.cache, "speculative": point.speculative if spec else None,
                      "generation": point.generation, "target_id": i["target_id"],
                      "draft_id": i["draft_id"] if spec and point.speculative.method == "draft" else None,
                      "dtype": i["dtype"], "data_sha": i["data_sha"], "repeats": i["repeats"],
                      "code_version": i["code_version"], "schema": SCHEMA})

    def row_key(self, point: Point, kind: str = "config") -> str:
        return _hash({"kind": kind, "point": point.flat(), "ident": self._ident, "measure": self.measure,
                      "baseline": self.run.baseline, "schema": SCHEMA})

    def baseline_point(self) -> Point:
        """Full cache, target only; generation settings of the grid's first
        configuration (so the prompt and length match the sweep's)."""
        gen = self._gen_ref if self._gen_ref is not None else GenerationSettings()
        return Point(CacheConfig(), SpeculativeConfig(), dataclasses.replace(gen, speculate=False))

    # -- measuring

    def _measure_ppl(self, point: Point) -> dict:
        from .eval import perplexity

        target, _ = self.models()
        reset = _reset_peak_rss()
        res = perplexity(target, self.data_ids(), cache=point.cache, chunk=self.run.chunk, repeats=self.run.repeats)
        vis = res.visible_stats
        m = {
            "ppl": res.ppl,
            "nll_mean": float(np.mean(res.nll, dtype=np.float64)),
            "tpot_ms": res.tpot_s * 1e3,
            "ttft_ms": res.ttft_s * 1e3,
            "prefill_ms": res.prefill_s * 1e3,
            "total_ms": res.total_s * 1e3,
            "kv_bytes": int(res.cache_bytes),
            "weight_bytes": int(target.weight_bytes),
            "mem_bytes": int(res.cache_bytes) + int(target.weight_bytes),
            "peak_rss_bytes": _peak_rss(),
            "peak_rss_per_run": reset,
            "evictions": int(len(res.evictions)),
            "evicted_tokens": int(res.evictions[:, 1].sum()) if len(res.evictions) else 0,
            "visible_min": vis["min"],
            "visible_mean": vis["mean"],
            "visible_max": vis["max"],
        }
        if self.run.save_nll:
            res.to_json(self.dir / "nll" / f"{self.ppl_key(point)[:16]}.json")
        return m

    def _measure_gen(self, point: Point) -> dict:
        target, draft = self.models()
        g = point.generation
        spec = self._speculating(point)
        prompt = self.data_ids()[: g.prompt_tokens]
        kwargs = dict(max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_k=g.top_k, top_p=g.top_p,
                      seed=g.seed, cache=point.cache)
        reset = _reset_peak_rss()
        stats, tokens = [], None
        for _ in range(self.run.repeats):
            if spec:
                res = target.generate(prompt, draft=draft if point.speculative.method == "draft" else None,
                                      speculative=point.speculative, measure_speedup=True, **kwargs)
            else:
                res = target.generate(prompt, draft=None, speculative=None, **kwargs)
            stats.append(res.stats)
            if tokens is None:
                tokens = res.tokens
        s0 = stats[0]

        def med(name: str, scale: float = 1.0) -> float:
            return _median([getattr(s, name) * scale if getattr(s, name) is not None else math.nan for s in stats])

        m = {
            "speculating": spec,
            "gen_tokens_per_s": med("tokens_per_s"),
            "gen_tpot_ms": med("tpot_s", 1e3),
            "gen_ttft_ms": med("ttft_s", 1e3),
            "gen_prefill_ms": med("prefill_s", 1e3),
            "gen_total_ms": _median([(s.ttft_s + s.decode_s) * 1e3 for s in stats]),
            "gen_kv_bytes": int(s0.cache_bytes),
            "gen_peak_rss_bytes": _peak_rss(),
            "new_tokens": int(s0.new_tokens),
            "tokens_sha": hashlib.sha256(np.asarray(tokens, dtype=np.int32).tobytes()).hexdigest()[:16],
            "acceptance_rate": s0.acceptance_rate if spec else math.nan,
            "mean_accepted_length": s0.mean_accepted_length if spec else math.nan,
            "tokens_per_target_forward": s0.tokens_per_target_forward,
            "drafted": int(s0.drafted),
            "accepted": int(s0.accepted),
            "speedup": med("speedup") if spec else math.nan,
            "target_only_tokens_per_s": _median([s.tokens_per_s / s.speedup for s in stats if s.speedup])
            if spec else med("tokens_per_s"),
            "draft_ms": med("draft_s", 1e3),
            "verify_ms": med("verify_s", 1e3),
            "gen_peak_rss_per_run": reset,
        }
        return m

    def _row(self, point: Point, kind: str, baseline: Optional[dict]) -> tuple[dict, bool]:
        """(row, computed) for ``point``: from the store if known."""
        key = self.row_key(point, kind)
        if key in self.store:
            return self.store.get(key), False
        if key in self._known:  # a sibling shard file has it: copy, do not recompute
            return self.store.append(self._known[key]), False
        t0 = time.perf_counter()
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        row: dict[str, Any] = {"key": key, "kind": kind, "schema": SCHEMA, "name": self.run.name,
                               "label": "full cache (baseline)" if kind == "baseline" else point.label,
                               "grid_axes": [p for p, _ in point.params], "measure": list(self.measure)}
        row.update(point.flat())
        row.update(self._ident)
        if "ppl" in self.measure:
            pk = self.ppl_key(point)
            row["ppl_key"] = pk
            row["ppl_reused"] = pk in self._parts
            if pk not in self._parts:
                self._parts[pk] = self._measure_ppl(point)
            row.update(self._parts[pk])
            if kind == "baseline":
                baseline = row
            if baseline is not None:
                row["ppl_full"] = baseline["ppl"]
                row["ppl_delta"] = row["ppl"] / baseline["ppl"] - 1.0
                row["tpot_vs_full"] = row["tpot_ms"] / baseline["tpot_ms"] if baseline.get("tpot_ms") else math.nan
        if "generate" in self.measure:
            gk = self.gen_key(point)
            row["gen_key"] = gk
            row["gen_reused"] = gk in self._parts
            if gk not in self._parts:
                self._parts[gk] = self._measure_gen(point)
            row.update(self._parts[gk])
        from . import cpu_kernels, get_num_threads

        version, dirty = _git_info()
        row.update(wall_s=time.perf_counter() - t0, started_at=started, host=socket.gethostname(),
                   threads=get_num_threads(), cpu_kernels=cpu_kernels(), git_dirty=dirty,
                   python=platform.python_version())
        row = self.store.append(row)
        self._known[key] = row
        return row, True

    def run_point(self, point: Point) -> dict:
        """The row of one point (measured now, or from the store)."""
        baseline = self.baseline_row() if ("ppl" in self.measure and self.run.baseline) else None
        return self._row(point, "config", baseline)[0]

    def baseline_row(self) -> dict:
        """The full-cache reference row (measured once per store)."""
        return self._row(self.baseline_point(), "baseline", None)[0]

    def run_points(self, points: Sequence[Point], on_row: Optional[Callable[[dict, bool], None]] = None) -> list[dict]:
        """Runs this shard's share of ``points``; returns their rows (plus the
        baseline first, when measured)."""
        from tqdm import tqdm

        i, n = self.shard
        mine = [p for j, p in enumerate(points) if j % n == i]
        keys = [self.row_key(p) for p in mine]
        todo = sum(1 for k in keys if k not in self.store and k not in self._known)
        with_baseline = "ppl" in self.measure and self.run.baseline
        base_key = self.row_key(self.baseline_point(), "baseline") if with_baseline else None
        base_done = not with_baseline or base_key in self.store or base_key in self._known
        rows: list[dict] = []
        bar = tqdm(total=len(mine) + 1, initial=len(mine) - todo + int(base_done), desc=f"sweep {self.run.name or ''}".strip()
                   + (f" [{i}/{n}]" if n > 1 else ""), unit="cfg", disable=not self.progress, dynamic_ncols=True,
                   file=sys.stderr)
        try:
            baseline = None
            if with_baseline:
                bar.set_postfix_str("full-cache baseline")
                baseline, computed = self._row(self.baseline_point(), "baseline", None)
                rows.append(baseline)
                if on_row:
                    on_row(baseline, computed)
            if not base_done:
                bar.update(1)
            for p, k in zip(mine, keys):
                done = k in self.store or k in self._known
                if not done:
                    bar.set_postfix_str(p.label[:60])
                row, computed = self._row(p, "config", baseline)
                rows.append(row)
                if on_row:
                    on_row(row, computed)
                if not done:
                    bar.update(1)
        finally:
            bar.close()
        return rows


def run_sweep(grid: Union[Grid, Mapping[str, Sequence[Any]], Sequence[Mapping]], out: PathLike,
              shard: Union[str, tuple[int, int], None] = (0, 1), progress: bool = True,
              models: Optional[tuple] = None, **run: Any) -> "Any":
    """Runs a grid and returns this shard's rows as a DataFrame.

    ``grid``: a :class:`Grid` or its axes. ``out``: the sweep directory
    (``results.jsonl`` in it, or this shard's file). ``run``: the
    :class:`RunSpec` fields (target, draft, data, tokens, offset, repeats,
    ...). Everything is validated before the first measurement; rows already
    in the store are not recomputed.
    """
    spec = run.pop("spec", None) or RunSpec.from_dict(run)
    sweep = Sweep(run=spec, grid=grid if isinstance(grid, Grid) else Grid(grid))
    if isinstance(shard, str) or shard is None:
        shard = parse_shard(shard)
    return _frame(run_sweep_obj(sweep, out, shard=shard, progress=progress, models=models))


def run_sweep_obj(sweep: Sweep, out: PathLike, shard: tuple[int, int] = (0, 1), progress: bool = True,
                  models: Optional[tuple] = None, on_row: Optional[Callable[[dict, bool], None]] = None) -> list[dict]:
    """Validates ``sweep`` and runs this shard of it into ``out``; returns rows."""
    points = sweep.validate()
    runner = Runner(sweep.run, out, grid=sweep.grid, shard=shard, progress=progress, models=models)
    return runner.run_points(points, on_row=on_row)


# ------------------------------------------------------------------ slurm

def _run_shard_job(doc: dict, out: str, i: int, n: int) -> int:
    """Body of one Slurm array task (must be importable: submitit pickles it)."""
    sweep = Sweep.from_dict(doc)
    rows = run_sweep_obj(sweep, out, shard=(i, n), progress=False)
    return len(rows)


def submit_slurm(doc: Mapping[str, Any], out: PathLike, shards: int, params: Optional[Mapping[str, Any]] = None,
                 cluster: Optional[str] = None, wait: bool = False) -> list:
    """Submits a sweep (its dict form, as read from TOML) as a Slurm job
    array of ``shards`` tasks with submitit; each task runs its shard into
    ``out``. ``params`` go to ``executor.update_parameters`` (e.g.
    ``timeout_min``, ``slurm_partition``, ``gpus_per_node``,
    ``slurm_array_parallelism``). ``cluster``: submitit's cluster (None:
    auto; "debug" runs in this process). With ``wait``, waits and merges.
    """
    try:
        import submitit  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError("--executor slurm needs the 'submitit' package (pip install submitit); "
                           "or run each shard yourself with --shard I/N / a Slurm array") from None
    Sweep.from_dict(doc).validate()  # fail here, not on the cluster
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise GridError("--shards", f"must be a positive integer, got {shards!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ex = submitit.AutoExecutor(folder=str(out / "slurm" / "%j"), cluster=cluster)
    p = {"timeout_min": 60, "name": "specstream-sweep"}
    p.update(params or {})
    ex.update_parameters(**p)
    docs = [dict(doc)] * shards
    jobs = ex.map_array(_run_shard_job, docs, [str(out)] * shards, list(range(shards)), [shards] * shards)
    if wait:
        for j in jobs:
            j.result()
        merge(out)
    return jobs


# ---------------------------------------------------------------------- CLI

def register_cli(sub: Any) -> None:
    """Adds the ``sweep``, ``merge`` and ``plot`` subcommands to an argparse
    subparsers object (used by ``python -m specstream``)."""
    s = sub.add_parser("sweep", help="run an ablation grid from a TOML sweep file (resumable)",
                       description="Runs the grid of a sweep file ([run] + [grid] tables) and appends one JSONL "
                                   "row per configuration to OUT/results.jsonl (or the shard's file); rerunning "
                                   "resumes. Fields: " + ", ".join(grid_fields()))
    s.add_argument("grid", help="sweep file (TOML)")
    s.add_argument("--out", required=True, help="sweep directory")
    s.add_argument("--shard", default=None, help="I/N: run every N-th configuration from the I-th (0-based); "
                                                 "default from SLURM_ARRAY_TASK_ID/COUNT, else 0/1")
    s.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local: run here; slurm: submit a job array with submitit")
    s.add_argument("--shards", type=int, default=None, help="array tasks for --executor slurm "
                                                            "(default: [slurm] shards, else min(configs, 16))")
    s.add_argument("--wait", action="store_true", help="with --executor slurm: wait for the array, then merge")
    s.add_argument("--dry-run", action="store_true", help="validate and list the configurations, run nothing")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sweep)

    m = sub.add_parser("merge", help="unite a sweep directory's shard files into results.jsonl")
    m.add_argument("dir")
    m.add_argument("--out", default=None, help="merged file (default: DIR/results.jsonl)")
    m.set_defaults(func=cmd_merge)

    p = sub.add_parser("plot", help="Pareto fronts, acceptance vs k and recommended configurations")
    p.add_argument("results", help="results.jsonl or a sweep directory")
    p.add_argument("--out", required=True, help="figure directory (pareto*.png)")
    p.set_defaults(func=cmd_plot)


def cmd_sweep(args: Any) -> int:
    sweep = Sweep.from_toml(args.grid)
    points = sweep.validate()
    out = Path(args.out)
    if args.dry_run:
        print(f"{len(points)} configurations, measure {list(_resolve_measure(sweep.run, sweep.grid))}")
        for p in points:
            print("  " + p.label)
        return 0
    if args.executor == "slurm":
        try:
            import tomllib  # type: ignore[import-not-found]
        except ModuleNotFoundError:
            import tomli as tomllib  # type: ignore[no-redef]
        with open(args.grid, "rb") as f:
            doc = tomllib.load(f)
        params = dict(doc.get("slurm", {}))
        shards = args.shards or params.pop("shards", None) or min(len(points), 16)
        params.pop("shards", None)
        jobs = submit_slurm(doc, out, int(shards), params, wait=args.wait)
        print(f"submitted {len(jobs)} array tasks: {', '.join(str(j.job_id) for j in jobs[:4])}"
              + (" ..." if len(jobs) > 4 else ""))
        if not args.wait:
            print(f"when they finish: python -m specstream merge {out}")
        return 0
    shard = parse_shard(args.shard)
    counts = {"computed": 0, "reused": 0}

    def on_row(row: dict, computed: bool) -> None:
        counts["computed" if computed else "reused"] += 1

    rows = run_sweep_obj(sweep, out, shard=shard, progress=not args.no_progress, on_row=on_row)
    path = shard_file(out, shard)
    print(f"{len(rows)} rows ({counts['computed']} measured, {counts['reused']} from the store) in {path}")
    if shard[1] > 1:
        print(f"after every shard: python -m specstream merge {out}")
    return 0


def cmd_merge(args: Any) -> int:
    n = merge(args.dir, args.out)
    print(f"{n} unique rows -> {args.out or Path(args.dir) / RESULTS_FILE}")
    return 0


def cmd_plot(args: Any) -> int:
    from . import plots

    df = load_results(args.results)
    written = plots.plot_all(df, args.out, nll_dir=_nll_dir(args.results))
    for p in written:
        print(p)
    rec = plots.recommend(df)
    if len(rec):
        cols = [c for c in ("regime", "label", "x_metric", "x", "ppl_delta", "kv_bytes", "meets_tolerance")
                if c in rec.columns]
        print(rec[cols].to_string(index=False))
    return 0


def _nll_dir(results: PathLike) -> Optional[Path]:
    p = Path(results)
    d = (p if p.is_dir() else p.parent) / "nll"
    return d if d.is_dir() else None
