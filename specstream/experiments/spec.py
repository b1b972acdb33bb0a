"""Sweep specifications: what a sweep runs on (:class:`RunSpec`, the
``[run]`` table of a sweep file) and the whole sweep (:class:`Sweep`: run
spec + grid, read from TOML), validated before anything is measured."""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from ..hub import is_repo_id, resolve_model_dir
from .grid import Grid, GridError, Point
from .identity import PathLike
from .settings import ModelSettings

#: The RunSpec (and ModelSettings) field holding each model's revision.
_REVISION_FIELDS = {"target": "revision", "draft": "draft_revision"}
#: What a sweep can measure (``run.measure``).
_MEASURES = ("ppl", "generate")


@dataclass(frozen=True)
class RunSpec:
    """What a sweep runs on (the ``[run]`` table of a sweep file).

    ``target``/``draft``: ``"default"`` (the bundled pair), a model
    directory, a Hugging Face repo id (``"EleutherAI/pythia-160m"``, found in
    the local cache, never downloaded) or (Python only) a loaded
    :class:`~specstream.Model`; ``draft`` None means no speculation.
    ``revision``/``draft_revision``: the repo's branch, tag or commit hash
    (None: ``main``; a grid may sweep them as ``model.revision`` /
    ``model.draft_revision`` instead). ``data``: a bundled text name
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
    revision: Optional[str] = None
    draft_revision: Optional[str] = None
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
        from ..model import normalize_dtype

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
        if isinstance(self.draft, str) and self.draft.lower() == "none":
            object.__setattr__(self, "draft", None)
        for which, field_name in _REVISION_FIELDS.items():
            revision = getattr(self, field_name)
            if revision is not None and (not isinstance(revision, str) or not revision.strip()):
                raise GridError(f"run.{field_name}", f"must be a branch, tag or commit hash, got {revision!r}")
            if which == "draft" and self.draft is None:
                if revision is not None:
                    raise GridError("run.draft_revision", "is set, but there is no run.draft")
                continue
            _check_model_source(which, getattr(self, which))
        if isinstance(self.data, (str, os.PathLike)):
            data_source(self.data)  # raises GridError when unknown

    def revision_of(self, which: str, model: ModelSettings) -> Optional[str]:
        """The revision of the ``"target"`` or ``"draft"`` that a
        configuration with ``model`` settings runs: the grid's, else the run's."""
        field_name = _REVISION_FIELDS[which]
        swept = getattr(model, field_name)
        return swept if swept is not None else getattr(self, field_name)

    def model_dir(self, which: str, model: ModelSettings = ModelSettings()) -> Optional[Path]:
        """The directory of the ``"target"`` or ``"draft"`` (None without a
        draft) for a configuration with ``model`` settings. A repo id is
        resolved in the local Hugging Face cache, never downloaded; a
        GridError names the setting at fault."""
        source = getattr(self, which)
        if source is None:
            return None
        field_name = _REVISION_FIELDS[which]
        revision = self.revision_of(which, model)
        if getattr(model, field_name) is not None:
            at_fault = f"model.{field_name}"
        else:
            at_fault = f"run.{field_name}" if revision is not None else f"run.{which}"
        if hasattr(source, "_core"):  # a loaded Model
            if revision is not None:
                raise GridError(at_fault, f"a loaded Model has no revisions: give run.{which} as a repo id")
            if source.path is None:
                raise GridError(f"run.{which}", "a Model given to a sweep must have been loaded from a directory")
            return Path(source.path)
        if str(source) == "default":
            if revision is not None:
                raise GridError(at_fault, f"the bundled default models have no revisions: give run.{which} as a "
                                          "Hugging Face repo id")
            from ..defaults import default_model_dir

            return default_model_dir(which)
        try:
            return resolve_model_dir(source, revision)
        except (FileNotFoundError, ValueError) as e:
            raise GridError(at_fault, str(e)) from None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        for k in d:
            if k not in known:
                hint = difflib.get_close_matches(k, known, n=1)
                raise GridError(f"run.{k}", "unknown setting" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                                + f"; known: {', '.join(sorted(known))}")
        return cls(**dict(d))


def _check_model_source(which: str, source: Any) -> None:
    """``run.target`` / ``run.draft`` has a form a sweep can load (whether a
    repo id's revisions are cached is checked by :meth:`Sweep.validate`)."""
    if hasattr(source, "_core"):
        return
    if not isinstance(source, (str, os.PathLike)):
        raise GridError(f"run.{which}", "expected 'default', a model directory, a Hugging Face repo id or a Model, "
                                        f"got {source!r}")
    if str(source) == "default":
        return
    if Path(source).is_dir():
        if not (Path(source) / "config.json").is_file():
            raise GridError(f"run.{which}", f"{source!s}: not a model directory (no config.json)")
        return
    if not (isinstance(source, str) and is_repo_id(source)):
        raise GridError(f"run.{which}", f"{source!s}: not 'default', not a model directory and not a Hugging Face "
                                        "repo id ('org/name')")


def data_source(data: Any) -> tuple[str, Any]:
    """Where ``run.data`` comes from: ("bundled", name) | ("text", path) |
    ("ids", path)."""
    from ..defaults import BUNDLED_TEXTS, _ALIASES

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
        return cls.from_dict(read_toml(path), source=str(path))

    def points(self) -> list[Point]:
        return self.grid.points(skip_invalid=self.run.skip_invalid)

    def validate(self) -> list[Point]:
        """Everything that can be checked without running: the points,
        settings that only make sense together, and that every checkpoint
        the points run is found (a repo id's revisions in the local cache)."""
        points = self.points()
        measure = measures(self.run, self.grid)
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
        self._check_models(points)
        return points

    def _check_models(self, points: list[Point]) -> None:
        """Each revision is given in one place, and the checkpoints every
        configuration runs are in the local cache."""
        for field_name in _REVISION_FIELDS.values():
            path = f"model.{field_name}"
            if (path in self.grid.axes or path in self.grid.base) and getattr(self.run, field_name) is not None:
                raise GridError(path, f"also set as run.{field_name}: give the revision in one place")
        if self.run.draft is None and any(p.model.draft_revision is not None for p in points):
            raise GridError("model.draft_revision", "is set, but there is no run.draft")
        for model in dict.fromkeys(p.model for p in points):
            for which in _REVISION_FIELDS:
                self.run.model_dir(which, model)


def measures(run: RunSpec, grid: Grid) -> tuple:
    """What a sweep measures: ``run.measure``, or by default "ppl", plus
    "generate" when there is a draft or the grid sweeps generation."""
    if run.measure is not None:
        return tuple(run.measure)
    m = ["ppl"]
    if run.draft is not None or grid.sections_swept() & {"speculative", "generation"}:
        m.append("generate")
    return tuple(m)


def read_toml(path: PathLike) -> dict[str, Any]:
    """A sweep file's tables; GridError naming the file when it is not TOML."""
    try:
        import tomllib  # type: ignore[import-not-found]
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    with open(path, "rb") as f:
        try:
            return tomllib.load(f)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise GridError(str(path), f"not valid TOML: {e}") from None
