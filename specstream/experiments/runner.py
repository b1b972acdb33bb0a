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
from .settings import GenerationSettings
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
        self.measure = measures(run, grid) if grid is not None else (run.measure or ("ppl",))
        self._models = models
        self._gen_ref = grid.points(skip_invalid=True)[0].generation if grid is not None else None
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
        self._ident = self._identities()

    # -- identities and data (cheap: no weights are loaded)

    def _model_dir(self, which: str) -> Optional[Path]:
        v = getattr(self.run, which)
        if v is None:
            return None
        if isinstance(v, (str, os.PathLike)):
            if str(v) == "default":
                from ..defaults import default_model_dir

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
            kind, v = data_source(d)
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

    def models(self) -> tuple:
        if self._models is None:
            from ..model import load

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
        return config_hash({"part": "ppl", "cache": point.cache, "target_id": i["target_id"], "dtype": i["dtype"],
                      "data_sha": i["data_sha"], "repeats": i["repeats"], "chunk": i["chunk"],
                      "code_version": i["code_version"], "schema": SCHEMA})

    def gen_key(self, point: Point) -> str:
        i = self._ident
        spec = self._speculating(point)
        return config_hash({"part": "gen", "cache": point.cache, "speculative": point.speculative if spec else None,
                      "generation": point.generation, "target_id": i["target_id"],
                      "draft_id": i["draft_id"] if spec and point.speculative.method == "draft" else None,
                      "dtype": i["dtype"], "data_sha": i["data_sha"], "repeats": i["repeats"],
                      "code_version": i["code_version"], "schema": SCHEMA})

    def row_key(self, point: Point, kind: str = "config") -> str:
        return config_hash({"kind": kind, "point": point.flat(), "ident": self._ident, "measure": self.measure,
                      "baseline": self.run.baseline, "schema": SCHEMA})

    def baseline_point(self) -> Point:
        """Full cache, target only; generation settings of the grid's first
        configuration (so the prompt and length match the sweep's)."""
        gen = self._gen_ref if self._gen_ref is not None else GenerationSettings()
        return Point(CacheConfig(), SpeculativeConfig(), dataclasses.replace(gen, speculate=False))

    # -- measuring

    def _measure_ppl(self, point: Point) -> dict:
        from ..eval import perplexity

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
    return as_frame(run_sweep_obj(sweep, out, shard=shard, progress=progress, models=models))


def run_sweep_obj(sweep: Sweep, out: PathLike, shard: tuple[int, int] = (0, 1), progress: bool = True,
                  models: Optional[tuple] = None, on_row: Optional[Callable[[dict, bool], None]] = None) -> list[dict]:
    """Validates ``sweep`` and runs this shard of it into ``out``; returns rows."""
    points = sweep.validate()
    runner = Runner(sweep.run, out, grid=sweep.grid, shard=shard, progress=progress, models=models)
    return runner.run_points(points, on_row=on_row)
