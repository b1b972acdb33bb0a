"""Running a sweep: :class:`Runner` measures configurations into a result
store and resumes from what the store (and its sibling shard files) hold;
:func:`run_sweep` runs a whole grid, or one shard of it.

For each configuration the runner measures what ``run.measure`` asks for
(median of ``repeats`` runs): ``"ppl"``, the perplexity of the data slice
streamed through the cache, against a full-cache baseline row of the same
model and slice; ``"generate"``, generation after a prompt from the slice,
speculative when a draft is given. Measurement parts shared by several
configurations (the perplexity pass does not depend on ``speculative.k``)
are measured once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from ..generation import CacheConfig, SpeculativeConfig
from .grid import Grid, GridError, Point
from .identity import PathLike, code_version, config_hash, git_info, model_identity
from .settings import GenerationSettings, ModelSettings
from .spec import RunSpec, Sweep, data_source, measures
from .store import SCHEMA, ResultStore, as_frame, shard_file, store_files, unique_rows


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
    from ..model import _peak_rss_bytes

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
    shard's own file). ``models``: optional preloaded ``(target, draft)``
    (then the grid cannot sweep the ``model.`` section).
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
        self.measure = measures(run, grid) if grid is not None else (run.measure or ("ppl",))
        points = grid.points(skip_invalid=True) if grid is not None else []
        self._gen_ref = points[0].generation if points else None
        model_settings = list(dict.fromkeys(p.model for p in points)) or [ModelSettings()]
        self._model_ref = model_settings[0]  # its target's tokenizer turns a text into the data slice
        self._preloaded = models
        if models is not None and model_settings != [ModelSettings()]:
            raise GridError("model.revision", "preloaded models cannot take revisions from the grid")
        self._dirs: dict[tuple, Optional[Path]] = {}
        self._loaded: dict[str, tuple[Path, Any]] = {}
        self._idents: dict[tuple, dict[str, Any]] = {}
        self._ids: Optional[np.ndarray] = None
        self._known: dict[str, dict] = {}
        self._parts: dict[str, dict] = {}
        for row in unique_rows(store_files(self.dir)) if self.dir.is_dir() else []:
            self._known.setdefault(row["key"], row)
            for part, cols in (("ppl_key", _PPL_COLS), ("gen_key", _GEN_COLS)):
                if row.get(part) and row[part] not in self._parts:
                    self._parts[row[part]] = {c: row.get(c) for c in cols}
        if run.threads is not None:
            from .. import set_num_threads

            set_num_threads(run.threads)
        self._data_ident = self._data_identity()
        for model in model_settings:
            self._identity(model)  # a model that cannot be found fails now, before any measurement

    # -- identities and data (cheap: no weights are loaded)

    def _model_dir(self, which: str, model: ModelSettings) -> Optional[Path]:
        key = (which, self.run.revision_of(which, model))
        if key not in self._dirs:
            self._dirs[key] = self.run.model_dir(which, model)
        return self._dirs[key]

    def _model_name(self, which: str, directory: Path) -> str:
        source = getattr(self.run, which)
        return str(source) if isinstance(source, (str, os.PathLike)) else str(directory)

    def _identity(self, model: ModelSettings, with_draft: bool = True) -> dict[str, Any]:
        """What a row's numbers depend on besides its configuration: the
        target (and, ``with_draft``, the draft) at the revisions ``model``
        selects, identified by their bytes; the data slice; the settings of
        the measurement; the code version."""
        key = (model, with_draft)
        if key not in self._idents:
            tdir = self._model_dir("target", model)
            ddir = self._model_dir("draft", model) if with_draft else None
            ident = {
                "target": self._model_name("target", tdir),
                "target_revision": self.run.revision_of("target", model),
                "target_id": model_identity(tdir),
                "draft": None if ddir is None else self._model_name("draft", ddir),
                "draft_revision": None if ddir is None else self.run.revision_of("draft", model),
                "draft_id": None if ddir is None else model_identity(ddir),
            }
            ident.update(self._data_ident)
            self._idents[key] = ident
        return self._idents[key]

    def _data_identity(self) -> dict[str, Any]:
        ids = self.data_ids()
        return {
            "dtype": self.run.dtype,
            "data": self._data_name(),
            "offset": self.run.offset,
            "tokens": self.run.tokens,
            "data_sha": hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int32).tobytes()).hexdigest(),
            "repeats": self.run.repeats,
            "chunk": self.run.chunk,
            "code_version": code_version(),
        }

    def _data_name(self) -> str:
        d = self.run.data
        if isinstance(d, (str, os.PathLike)):
            kind, v = data_source(d)
            return v if kind == "bundled" else str(v)
        return "<ids>"

    def _tokenizer_for_data(self) -> Any:
        if self._preloaded is not None and getattr(self._preloaded[0], "tokenizer", None) is not None:
            return self._preloaded[0].tokenizer
        t = self.run.target
        if hasattr(t, "_core"):
            if t.tokenizer is None:
                raise GridError("run.data", "the target model has no tokenizer: give token ids (.npy or an array)")
            return t.tokenizer
        path = self._model_dir("target", self._model_ref) / "tokenizer.json"
        if not path.is_file():
            raise GridError("run.data", f"the target model has no tokenizer ({path} missing): "
                                        "give token ids (a .npy file or an array) instead of text")
        from ..tokenizer import Tokenizer

        return Tokenizer.from_file(path)

    def data_ids(self) -> np.ndarray:
        """The token ids of the data slice."""
        if self._ids is None:
            d = self.run.data
            if isinstance(d, (str, os.PathLike)):
                kind, v = data_source(d)
                if kind == "ids":
                    all_ids = np.load(v)
                else:
                    from ..defaults import default_text

                    text = default_text(v) if kind == "bundled" else Path(v).read_text(encoding="utf-8")
                    all_ids = self._tokenizer_for_data().encode(text)
            else:
                all_ids = d
            from ..model import as_token_ids

            all_ids = as_token_ids(np.asarray(all_ids).reshape(-1), "run.data")
            start, stop = self.run.offset, self.run.offset + self.run.tokens
            if stop > len(all_ids):
                raise GridError("run.tokens", f"offset {start} + tokens {self.run.tokens} exceeds the data "
                                              f"({len(all_ids)} tokens)")
            self._ids = all_ids[start:stop].copy()
        return self._ids

    # -- models (loaded on first need)

    def models(self, model: ModelSettings = ModelSettings(), with_draft: bool = True) -> tuple:
        """(target, draft) at the revisions ``model`` selects; draft None
        without ``run.draft`` or ``with_draft``. Loaded on first need; only
        the latest target and draft stay loaded, so a sweep over checkpoints
        holds one pair in memory."""
        if self._preloaded is not None:
            return self._preloaded
        target = self._loaded_model("target", model)
        draft = self._loaded_model("draft", model) if with_draft and self.run.draft is not None else None
        if draft is not None and getattr(draft, "tokenizer", None) is None:
            draft.tokenizer = getattr(target, "tokenizer", None)
        return target, draft

    def _loaded_model(self, which: str, model: ModelSettings) -> Any:
        source = getattr(self.run, which)
        if hasattr(source, "_core"):
            return source
        directory = self._model_dir(which, model)
        if which not in self._loaded or self._loaded[which][0] != directory:
            from ..model import load

            self._loaded.pop(which, None)  # release the previous checkpoint before mapping the next
            self._loaded[which] = (directory, load(directory, dtype=self.run.dtype))
        return self._loaded[which][1]

    # -- keys

    def _speculating(self, point: Point) -> bool:
        return point.generation.speculate and (
            (self.run.draft is not None and point.speculative.method == "draft")
            or point.speculative.method == "lookup")

    def _uses_draft_model(self, point: Point) -> bool:
        return self._speculating(point) and point.speculative.method == "draft"

    def ppl_key(self, point: Point) -> str:
        i = self._identity(point.model, with_draft=False)
        return config_hash({"part": "ppl", "cache": point.cache, "target_id": i["target_id"], "dtype": i["dtype"],
                            "data_sha": i["data_sha"], "repeats": i["repeats"], "chunk": i["chunk"],
                            "code_version": i["code_version"], "schema": SCHEMA})

    def gen_key(self, point: Point) -> str:
        spec = self._speculating(point)
        i = self._identity(point.model, with_draft=self._uses_draft_model(point))
        return config_hash({"part": "gen", "cache": point.cache, "speculative": point.speculative if spec else None,
                            "generation": point.generation, "target_id": i["target_id"], "draft_id": i["draft_id"],
                            "dtype": i["dtype"], "data_sha": i["data_sha"], "repeats": i["repeats"],
                            "code_version": i["code_version"], "schema": SCHEMA})

    def _row_identity(self, point: Point, kind: str) -> dict[str, Any]:
        return self._identity(point.model, with_draft=kind != "baseline")  # the baseline runs the target alone

    def row_key(self, point: Point, kind: str = "config") -> str:
        return config_hash({"kind": kind, "point": point.flat(), "ident": self._row_identity(point, kind),
                            "measure": self.measure, "baseline": self.run.baseline, "schema": SCHEMA})

    def baseline_point(self, model: ModelSettings = ModelSettings()) -> Point:
        """The reference of configurations with ``model`` settings: full
        cache, target only, at the same target revision; generation settings
        of the grid's first configuration (so the prompt and length match
        the sweep's)."""
        gen = self._gen_ref if self._gen_ref is not None else GenerationSettings()
        return Point(CacheConfig(), SpeculativeConfig(), dataclasses.replace(gen, speculate=False),
                     ModelSettings(revision=model.revision))

    # -- measuring

    def _measure_ppl(self, point: Point) -> dict:
        from ..eval import perplexity

        target, _ = self.models(point.model, with_draft=False)
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
        target, draft = self.models(point.model, with_draft=self._uses_draft_model(point))
        g = point.generation
        spec = self._speculating(point)
        prompt = self.data_ids()[: g.prompt_tokens]
        kwargs = dict(max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_k=g.top_k, top_p=g.top_p,
                      seed=g.seed, cache=point.cache)
        reset = _reset_peak_rss()
        stats, tokens = [], None
        for _ in range(self.run.repeats):
            if spec:
                res = target.generate(prompt, draft=draft, speculative=point.speculative, measure_speedup=True,
                                      **kwargs)
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
        row.update(self._row_identity(point, kind))
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
        from .. import cpu_kernels, get_num_threads

        version, dirty = git_info()
        row.update(wall_s=time.perf_counter() - t0, started_at=started, host=socket.gethostname(),
                   threads=get_num_threads(), cpu_kernels=cpu_kernels(), git_dirty=dirty,
                   python=platform.python_version())
        row = self.store.append(row)
        self._known[key] = row
        return row, True

    def run_point(self, point: Point) -> dict:
        """The row of one point (measured now, or from the store)."""
        baseline = self.baseline_row(point.model) if self._with_baseline() else None
        return self._row(point, "config", baseline)[0]

    def baseline_row(self, model: ModelSettings = ModelSettings()) -> dict:
        """The full-cache reference row of ``model``'s target (measured once per store)."""
        return self._row(self.baseline_point(model), "baseline", None)[0]

    def _with_baseline(self) -> bool:
        return "ppl" in self.measure and self.run.baseline

    def _is_known(self, key: str) -> bool:
        return key in self.store or key in self._known

    def run_points(self, points: Sequence[Point], on_row: Optional[Callable[[dict, bool], None]] = None) -> list[dict]:
        """Runs this shard's share of ``points``; returns their rows, each
        target revision's baseline (when measured) before its configurations.
        Configurations run grouped by their model settings, so that each
        checkpoint is loaded once."""
        from tqdm import tqdm

        i, n = self.shard
        groups: dict[ModelSettings, list[Point]] = {}
        for j, p in enumerate(points):
            if j % n == i:
                groups.setdefault(p.model, []).append(p)
        tasks: list[tuple[Point, str]] = []  # (point, kind), in the order they run
        with_baseline: set[Optional[str]] = set()  # target revisions whose baseline is queued
        for model, group in groups.items():
            if self._with_baseline() and model.revision not in with_baseline:
                with_baseline.add(model.revision)
                tasks.append((self.baseline_point(model), "baseline"))
            tasks.extend((p, "config") for p in group)
        done = [self._is_known(self.row_key(p, kind)) for p, kind in tasks]
        bar = tqdm(total=len(tasks), initial=sum(done), desc=f"sweep {self.run.name or ''}".strip()
                   + (f" [{i}/{n}]" if n > 1 else ""), unit="cfg", disable=not self.progress, dynamic_ncols=True,
                   file=sys.stderr)
        rows: list[dict] = []
        baselines: dict[Optional[str], dict] = {}  # target revision -> its baseline row
        try:
            for (p, kind), was_done in zip(tasks, done):
                if not was_done:
                    bar.set_postfix_str("full-cache baseline" if kind == "baseline" else p.label[:60])
                row, computed = self._row(p, kind, baselines.get(p.model.revision))
                if kind == "baseline":
                    baselines[p.model.revision] = row
                rows.append(row)
                if on_row:
                    on_row(row, computed)
                if not was_done:
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
    return as_frame(run_sweep_obj(sweep, out, shard=shard, progress=progress, models=models))


def run_sweep_obj(sweep: Sweep, out: PathLike, shard: tuple[int, int] = (0, 1), progress: bool = True,
                  models: Optional[tuple] = None, on_row: Optional[Callable[[dict, bool], None]] = None) -> list[dict]:
    """Validates ``sweep`` and runs this shard of it into ``out``; returns rows."""
    points = sweep.validate()
    runner = Runner(sweep.run, out, grid=sweep.grid, shard=shard, progress=progress, models=models)
    return runner.run_points(points, on_row=on_row)
