"""Plots and recommendations from sweep results (matplotlib, Agg backend).

- :func:`pareto_front`: which rows no other row beats on both axes;
- :func:`plot_pareto`: TPOT (or tokens/s, KV bytes, ...) vs PPL delta with
  the front highlighted and labelled;
- :func:`plot_nll`: token-level NLL with eviction boundaries (a
  :class:`~specstream.eval.PerplexityResult`, or a saved ``nll/*.json``);
- :func:`plot_acceptance`: acceptance rate, mean accepted length and speedup
  vs the number of drafted tokens k;
- :func:`recommend`: recommended configurations per regime (short text, long
  text, extreme memory), each picked from the Pareto front by a stated rule;
- :func:`plot_all`: everything above for a results table (what ``python -m
  specstream plot`` writes).

Every function takes the DataFrame of :func:`specstream.experiments.load_results`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from .experiments.grid import SECTIONS

__all__ = ["pareto_front", "plot_pareto", "plot_nll", "plot_acceptance", "recommend", "plot_all",
           "config_columns", "varying_columns", "labels"]

PathLike = Union[str, "os.PathLike[str]"]

#: Larger is better for these metrics (everything else: smaller is better).
MAXIMIZE = {"gen_tokens_per_s", "speedup", "acceptance_rate", "mean_accepted_length", "target_only_tokens_per_s"}

_AXIS_LABELS = {
    "tpot_ms": "TPOT (ms/token, perplexity pass)",
    "gen_tpot_ms": "TPOT (ms/token, generation)",
    "gen_tokens_per_s": "tokens/s (generation)",
    "ppl_delta": "PPL change vs full cache",
    "kv_bytes": "KV cache bytes",
    "mem_bytes": "weights + KV bytes",
    "total_ms": "total time (ms)",
    "speedup": "speedup vs target only",
}


def _plt() -> Any:
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _configs(df: Any) -> Any:
    """The configuration rows (not the baseline)."""
    return df[df["kind"] == "config"] if "kind" in df.columns else df


def config_columns(df: Any) -> list[str]:
    """The dotted config columns (``cache.window``, ``speculative.k``,
    ``model.revision``, ...)."""
    return [c for c in df.columns if c.split(".", 1)[0] in SECTIONS and "." in c]


def varying_columns(df: Any) -> list[str]:
    """Config columns that take more than one value among ``df``'s configurations."""
    rows = _configs(df)
    cols = config_columns(rows)
    if "grid_axes" in rows.columns and len(rows):  # the sweep's own axis order first
        axes = [a for a in rows["grid_axes"].iloc[0] or () if a in cols] if isinstance(
            rows["grid_axes"].iloc[0], (list, tuple)) else []
        cols = axes + [c for c in cols if c not in axes]
    out = []
    for c in cols:
        vals = rows[c].map(lambda v: json.dumps(v, default=str))
        if vals.nunique(dropna=False) > 1:
            out.append(c)
    return out


def labels(df: Any, columns: Optional[Sequence[str]] = None, drop_sections: Sequence[str] = ()) -> list[str]:
    """Short labels: ``window=128 R=16 k=2``. Without ``columns``, each row
    shows the axes its own grid varied (``grid_axes``, as stored by the
    runner), else the config columns that vary across ``df``."""
    cols = list(columns) if columns is not None else varying_columns(df)
    own = columns is None and "grid_axes" in df.columns
    every = list(dict.fromkeys(cols + ([a for axes in df["grid_axes"] if isinstance(axes, (list, tuple))
                                        for a in axes if a in df.columns] if own else [])))
    names = [c.split(".", 1)[1] for c in every]
    short = {c: (n if names.count(n) == 1 else c) for c, n in zip(every, names)}
    alias = {"compress_every": "R"}
    out = []
    for _, row in df.iterrows():
        if row.get("kind") == "baseline":
            out.append("full cache")
            continue
        row_cols = cols
        if own and isinstance(row["grid_axes"], (list, tuple)) and len(row["grid_axes"]):
            row_cols = [a for a in row["grid_axes"] if a in df.columns]
        parts = []
        for c in row_cols:
            if c.split(".", 1)[0] in drop_sections:
                continue
            v = row[c]
            if isinstance(v, float):
                v = "none" if math.isnan(v) else f"{v:g}"
            elif isinstance(v, (tuple, list)):
                v = ",".join(map(str, v)) or "()"
            elif v is None:
                v = "none"
            parts.append(f"{alias.get(short[c], short[c])}={v}")
        out.append(" ".join(parts) or "config")
    return out


def pareto_front(df: Any, x: str = "tpot_ms", y: str = "ppl_delta") -> np.ndarray:
    """Boolean mask of the rows on the Pareto front of (x, y): no other row
    is at least as good on both and strictly better on one. Smaller is
    better except for the metrics in :data:`MAXIMIZE`; rows with a missing
    value are never on the front."""
    xs = df[x].to_numpy(dtype=float) * (-1.0 if x in MAXIMIZE else 1.0)
    ys = df[y].to_numpy(dtype=float) * (-1.0 if y in MAXIMIZE else 1.0)
    ok = np.isfinite(xs) & np.isfinite(ys)
    mask = np.zeros(len(df), dtype=bool)
    for i in np.flatnonzero(ok):
        better_eq = ok & (xs <= xs[i]) & (ys <= ys[i])
        strictly = better_eq & ((xs < xs[i]) | (ys < ys[i]))
        mask[i] = not strictly.any()
    return mask


#: Metrics of the perplexity pass: they depend on the cache configuration only.
_CACHE_METRICS = {"ppl", "ppl_delta", "nll_mean", "tpot_ms", "ttft_ms", "prefill_ms", "total_ms", "kv_bytes",
                  "mem_bytes", "tpot_vs_full", "evictions", "evicted_tokens", "visible_min", "visible_mean",
                  "visible_max"}


def _speed_metric(df: Any) -> str:
    """gen_tpot_ms when generation was measured for every configuration,
    else the perplexity pass's tpot_ms."""
    rows = _configs(df)
    if "gen_tpot_ms" in rows.columns and len(rows) and np.isfinite(rows["gen_tpot_ms"].to_numpy(dtype=float)).all():
        return "gen_tpot_ms"
    return "tpot_ms"


def plot_pareto(df: Any, x: Optional[str] = None, y: str = "ppl_delta", path: Optional[PathLike] = None,
                title: Optional[str] = None, ax: Any = None, annotate: int = 12, percent: bool = True) -> Any:
    """Scatter of every configuration with the Pareto front of (x, y)
    highlighted, connected and labelled (at most ``annotate`` labels); the
    full-cache baseline is a star. Saved to ``path`` when given."""
    plt = _plt()
    x = x or _speed_metric(df)
    rows = _configs(df).copy()
    rows = rows[np.isfinite(rows[x].to_numpy(dtype=float)) & np.isfinite(rows[y].to_numpy(dtype=float))]
    if not len(rows):
        raise ValueError(f"no configuration has both {x!r} and {y!r} measured")
    cache_only = {x, y} <= _CACHE_METRICS and "ppl_key" in rows.columns
    if cache_only:  # configurations differing only in speculation share these numbers: one point each
        rows = rows.drop_duplicates("ppl_key")
    front = pareto_front(rows, x, y)
    lab = labels(rows, drop_sections=("speculative", "generation") if cache_only else ())
    scale = 100.0 if (percent and y == "ppl_delta") else 1.0
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(9, 6))
    else:
        fig = ax.figure
    xv, yv = rows[x].to_numpy(dtype=float), rows[y].to_numpy(dtype=float) * scale
    ax.scatter(xv[~front], yv[~front], s=22, color="0.6", alpha=0.8, label="dominated")
    order = np.argsort(xv[front])
    ax.plot(xv[front][order], yv[front][order], "-o", color="tab:red", ms=7, lw=1.5, label="Pareto front")
    front_idx = np.flatnonzero(front)[order]
    step = max(1, math.ceil(len(front_idx) / max(1, annotate)))
    for j, i in enumerate(front_idx):
        if j % step == 0:  # alternate above/below so neighbours do not overprint
            ax.annotate(lab[i], (xv[i], yv[i]), textcoords="offset points",
                        xytext=(6, 5 if (j // step) % 2 == 0 else -11), fontsize=7, color="tab:red")
    base = df[df["kind"] == "baseline"] if "kind" in df.columns else df.iloc[0:0]
    if len(base) and x in base.columns and np.isfinite(float(base[x].iloc[0])):
        by = (float(base[y].iloc[0]) if y in base.columns and base[y].notna().iloc[0] else 0.0) * scale
        ax.scatter([float(base[x].iloc[0])], [by], marker="*", s=160, color="black", zorder=5,
                   label="full cache (baseline)")
    ax.axhline(0.0, color="0.3", lw=0.6, ls=":")
    ax.set_xlabel(_AXIS_LABELS.get(x, x))
    ax.set_ylabel(_AXIS_LABELS.get(y, y) + (" (%)" if scale == 100.0 else ""))
    if title is None:
        meta = []
        for c in ("data", "tokens"):
            if c in rows.columns and rows[c].nunique() == 1:
                meta.append(f"{c}={rows[c].iloc[0]}")
        title = f"Pareto front: {x} vs {y}" + (f" ({', '.join(meta)})" if meta else "")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    if own:
        fig.tight_layout()
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=100)
            plt.close(fig)
    return fig


def _result_from_json(path: PathLike) -> Any:
    """A PerplexityResult rebuilt from ``PerplexityResult.to_json`` output
    (enough to plot: NLL, eviction log, cache)."""
    from .eval import PerplexityResult
    from .generation import CacheConfig

    doc = json.loads(Path(path).read_text())
    nll = np.asarray(doc["nll"], dtype=np.float32)
    ev = np.asarray(doc.get("eviction_log", []), dtype=np.int64).reshape(-1, 3)
    cache = CacheConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in doc["cache"].items()})
    return PerplexityResult(nll=nll, visible=np.zeros(len(nll) + 1, dtype=np.int32), evictions=ev, cache=cache,
                            ttft_s=doc.get("ttft_s", math.nan), tpot_s=doc.get("tpot_s", math.nan),
                            prefill_s=doc.get("prefill_s", math.nan), total_s=doc.get("total_s", math.nan),
                            chunk=doc.get("chunk", 1), repeats=doc.get("repeats", 1),
                            cache_bytes=doc.get("cache_bytes", 0), peak_rss_bytes=doc.get("peak_rss_bytes", 0))


def plot_nll(result: Any, path: Optional[PathLike] = None, smooth: int = 32, title: Optional[str] = None) -> Any:
    """Token-level NLL with eviction boundaries: ``result`` is a
    :class:`~specstream.eval.PerplexityResult` or the path of its JSON (the
    runner saves one per cache configuration under ``DIR/nll/``)."""
    if isinstance(result, (str, os.PathLike)):
        result = _result_from_json(result)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return result.plot(path, smooth=smooth, title=title)


def plot_acceptance(df: Any, path: Optional[PathLike] = None, title: Optional[str] = None) -> Any:
    """Acceptance rate, mean accepted length and speedup vs k (median over
    the other settings, with their min-max range)."""
    plt = _plt()
    rows = _configs(df)
    rows = rows[rows.get("speculating", False) == True]  # noqa: E712 (pandas mask)
    if "speculative.k" not in rows.columns or not len(rows):
        raise ValueError("no speculative rows (speculative.k) to plot")
    g = rows.groupby("speculative.k")
    ks = np.array(sorted(g.groups))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, col, name in zip(axes, ("acceptance_rate", "mean_accepted_length", "speedup"),
                             ("acceptance rate", "mean accepted length", "speedup vs target only")):
        if col not in rows.columns:
            ax.set_visible(False)
            continue
        med = g[col].median().reindex(ks).to_numpy(dtype=float)
        lo = g[col].min().reindex(ks).to_numpy(dtype=float)
        hi = g[col].max().reindex(ks).to_numpy(dtype=float)
        ax.plot(ks, med, "-o", color="tab:blue")
        ax.fill_between(ks, lo, hi, color="tab:blue", alpha=0.15, lw=0)
        if col == "speedup":
            ax.axhline(1.0, color="0.3", lw=0.6, ls=":")
        ax.set_xlabel("k (drafted tokens per step)")
        ax.set_ylabel(name)
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    fig.suptitle(title or "speculative decoding vs k (median, min-max over other settings)", fontsize=10)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig


# ------------------------------------------------------------ recommendations

def _pick_front(rows: Any, x: str, y: str, tol: float, rule: str, quality_weight: float = 2.0,
                tiebreak: str = "") -> tuple:
    """(index label, meets tolerance, front size) of the pick on the (x, y) front."""
    rows = rows[np.isfinite(rows[x].to_numpy(dtype=float)) & np.isfinite(rows[y].to_numpy(dtype=float))]
    if not len(rows):
        return None, False, 0
    front = rows[pareto_front(rows, x, y)]
    ok = front[front[y] <= tol]
    meets = bool(len(ok))
    if not meets:  # nothing within tolerance: the best quality on the front
        return front[y].idxmin(), False, len(front)
    xs = ok[x].to_numpy(dtype=float) * (-1.0 if x in MAXIMIZE else 1.0)
    if rule == "fastest":
        # ties on x (e.g. the same cache with different k) go to the better
        # quality, then to the faster ``tiebreak`` metric
        tb = ok[tiebreak].to_numpy(dtype=float) if tiebreak in ok.columns else np.zeros(len(ok))
        tb = np.where(np.isfinite(tb), tb, np.inf) * (-1.0 if tiebreak in MAXIMIZE else 1.0)
        order = np.lexsort((tb, ok[y].to_numpy(dtype=float), xs))
        return ok.index[int(order[0])], True, len(front)
    # knee: closest to the utopia point after scaling both axes to [0, 1]
    # over the front, quality weighted by ``quality_weight``
    fx = front[x].to_numpy(dtype=float) * (-1.0 if x in MAXIMIZE else 1.0)
    fy = front[y].to_numpy(dtype=float)
    sx = (xs - fx.min()) / (np.ptp(fx) or 1.0)
    sy = (ok[y].to_numpy(dtype=float) - fy.min()) / (np.ptp(fy) or 1.0)
    return ok.index[int(np.argmin(np.hypot(sx, quality_weight * sy)))], True, len(front)


def recommend(df: Any, x: Optional[str] = None, short_tol: float = 0.03, long_tol: float = 0.05,
              memory_tol: float = 0.10, long_tokens: int = 4096, quality_weight: float = 2.0) -> Any:
    """Recommended configurations per regime, each picked from a Pareto front:

    - ``short text`` (slices of <= ``long_tokens`` tokens, e.g. WikiText
      4k): the fastest front point of (speed, PPL delta) whose PPL delta is
      <= ``short_tol`` (speed first);
    - ``long text`` (longer slices, e.g. a 20k-token book): the knee of the
      same front among points with PPL delta <= ``long_tol``: the point
      closest to the ideal corner with both axes scaled over the front and
      quality weighted ``quality_weight`` times (quality first);
    - ``extreme memory``: the front of (KV bytes, PPL delta): the smallest
      cache with PPL delta <= ``memory_tol``.

    When only one slice length was swept, both text regimes use it (the
    ``basis`` column says which rows a regime was picked from). Speed
    ``x`` defaults to the generation TPOT when measured, else the perplexity
    pass's TPOT. When no point meets a tolerance, the front's best-quality
    point is returned with ``meets_tolerance=False``. Returns a DataFrame,
    one row per regime, with the rule, the basis, the label, the metrics
    and the configuration's columns.
    """
    import pandas as pd

    rows = _configs(df)
    if "ppl_delta" not in rows.columns:
        return pd.DataFrame()
    rows = rows[np.isfinite(rows["ppl_delta"].to_numpy(dtype=float))]
    if not len(rows):
        return pd.DataFrame()
    x = x or _speed_metric(rows)
    lab = dict(zip(rows.index, labels(rows)))
    tokens = rows["tokens"] if "tokens" in rows.columns else pd.Series(0, index=rows.index)
    short_rows, long_rows = rows[tokens <= long_tokens], rows[tokens > long_tokens]
    basis = {"short text": f"slices of <= {long_tokens} tokens", "long text": f"slices of > {long_tokens} tokens",
             "extreme memory": "every slice"}
    if not len(short_rows):
        short_rows, basis["short text"] = rows, f"every slice (none of <= {long_tokens} tokens was swept)"
    if not len(long_rows):
        long_rows, basis["long text"] = rows, f"every slice (none longer than {long_tokens} tokens was swept)"
    regimes = [
        ("short text", short_rows, x, short_tol, "fastest",
         f"fastest on the ({x}, ppl_delta) front with ppl_delta <= {short_tol:.0%}"),
        ("long text", long_rows, x, long_tol, "knee",
         f"knee of the ({x}, ppl_delta) front (quality x{quality_weight:g}) with ppl_delta <= {long_tol:.0%}"),
        ("extreme memory", rows, "kv_bytes", memory_tol, "fastest",
         f"smallest KV cache on the (kv_bytes, ppl_delta) front with ppl_delta <= {memory_tol:.0%}"),
    ]
    out = []
    cfg_cols = config_columns(rows)
    for regime, sub, metric, tol, rule, text in regimes:
        if metric not in sub.columns:
            continue
        idx, meets, n_front = _pick_front(sub, metric, "ppl_delta", tol, rule, quality_weight, tiebreak=x)
        if idx is None:
            continue
        r = sub.loc[idx]
        rec = {"regime": regime, "rule": text, "basis": basis[regime], "label": lab.get(idx, ""), "x_metric": metric,
               "x": float(r[metric]), "ppl_delta": float(r["ppl_delta"]), "meets_tolerance": meets,
               "front_size": n_front}
        for c in ("ppl", "tpot_ms", "gen_tpot_ms", "gen_tokens_per_s", "speedup", "acceptance_rate", "kv_bytes",
                  "data", "tokens", "key"):
            if c in r.index:
                rec[c] = r[c]
        for c in cfg_cols:
            rec[c] = r[c]
        out.append(rec)
    return pd.DataFrame(out)


# ------------------------------------------------------------------- all

def plot_all(df: Any, out: PathLike, nll_dir: Optional[PathLike] = None, max_nll: int = 3) -> list[Path]:
    """Writes every applicable figure for a results table into ``out``:

    ``pareto.png`` (perplexity-pass TPOT vs PPL delta), ``pareto_generation.png``
    (generation TPOT vs PPL delta, when generation was measured; the
    tokens/s front is the same set), ``pareto_memory.png`` (KV bytes vs PPL
    delta), ``acceptance_vs_k.png`` (when k varies), ``nll_*.png`` for the
    baseline and up to ``max_nll`` front configurations (when ``nll_dir``
    holds their saved NLLs), and ``recommendations.csv``/``.json``.
    Returns the paths written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rows = _configs(df)

    def has(*cols: str) -> bool:
        """Some configuration has every one of ``cols`` measured."""
        if not all(c in rows.columns for c in cols):
            return False
        ok = np.ones(len(rows), dtype=bool)
        for c in cols:
            ok &= np.isfinite(rows[c].to_numpy(dtype=float))
        return bool(ok.any())

    if has("tpot_ms", "ppl_delta"):
        plot_pareto(df, "tpot_ms", "ppl_delta", out / "pareto.png")
        written.append(out / "pareto.png")
    if has("gen_tpot_ms", "ppl_delta"):
        plot_pareto(df, "gen_tpot_ms", "ppl_delta", out / "pareto_generation.png")
        written.append(out / "pareto_generation.png")
    if has("kv_bytes", "ppl_delta"):
        plot_pareto(df, "kv_bytes", "ppl_delta", out / "pareto_memory.png",
                    title="Pareto front: KV cache bytes vs PPL change")
        written.append(out / "pareto_memory.png")
    if "speculative.k" in rows.columns and "speculating" in rows.columns \
            and rows.loc[rows["speculating"] == True, "speculative.k"].nunique() > 1:  # noqa: E712
        plot_acceptance(df, out / "acceptance_vs_k.png")
        written.append(out / "acceptance_vs_k.png")
    if nll_dir is not None and "ppl_key" in df.columns and has("tpot_ms", "ppl_delta"):
        front = rows[pareto_front(rows, "tpot_ms", "ppl_delta")].sort_values("tpot_ms")
        picks = list(front["ppl_key"].drop_duplicates())
        if len(picks) > max_nll:  # spread over the front
            picks = [picks[int(round(i))] for i in np.linspace(0, len(picks) - 1, max_nll)]
        base = df[df["kind"] == "baseline"]["ppl_key"].tolist() if "kind" in df.columns else []
        for j, key in enumerate(base[:1] + picks):
            f = Path(nll_dir) / f"{str(key)[:16]}.json"
            if f.is_file():
                name = "nll_baseline.png" if (base and key == base[0] and j == 0) else f"nll_front_{j}.png"
                row = df[df["ppl_key"] == key].iloc[0]
                label = "full cache" if row.get("kind") == "baseline" else labels(rows.loc[[row.name]])[0] \
                    if row.name in rows.index else ""
                res = _result_from_json(f)
                plot_nll(res, out / name, title=f"{label}: PPL {res.ppl:.2f}, {len(res.evictions)} evictions (red)")
                written.append(out / name)
    rec = recommend(df)
    if len(rec):
        rec.to_csv(out / "recommendations.csv", index=False)
        (out / "recommendations.json").write_text(rec.to_json(orient="records", indent=1, default_handler=str))
        written += [out / "recommendations.csv", out / "recommendations.json"]
    return written
