"""Long-stream evaluation: perplexity of a text read through a cache policy.

:func:`perplexity` streams token ids through the C core the way generation
sees them (token by token by default), and records per-token NLL, every
eviction (step, keys dropped, keys kept), the keys each token saw, timings
(TTFT, TPOT, prefill, total; median over ``repeats``) and memory.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from ._atomic import write_text_atomic
from .generation import CacheConfig
from .model import Model, TokenIds, _peak_rss_bytes

__all__ = ["PerplexityResult", "perplexity"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class PerplexityResult:
    """Per-token NLL (natural log) of ``tokens[1:]`` and everything measured.

    ``evictions`` is an int64 array of rows (step, dropped, kept): before the
    token at stream position ``step`` was appended, ``dropped`` keys were
    evicted, leaving ``kept`` keys with it. ``visible[i]`` is how many keys
    token i attended to.
    """

    nll: np.ndarray
    visible: np.ndarray
    evictions: np.ndarray
    cache: CacheConfig
    ttft_s: float
    tpot_s: float
    prefill_s: float
    total_s: float
    chunk: int
    repeats: int
    cache_bytes: int
    peak_rss_bytes: int
    timings: list[dict[str, float]] = field(default_factory=list)

    @property
    def ppl(self) -> float:
        """exp(mean NLL)."""
        return float(math.exp(float(np.mean(self.nll, dtype=np.float64))))

    @property
    def visible_stats(self) -> dict[str, float]:
        """Min, mean and max number of keys a token attended to."""
        return {"min": int(self.visible.min()), "mean": float(self.visible.mean()), "max": int(self.visible.max())}

    def to_frame(self) -> "Any":
        """Per-token pandas DataFrame: position, target token NLL, visible keys,
        and whether an eviction happened right before that position."""
        import pandas as pd

        n = len(self.nll)
        evicted = np.zeros(n, dtype=np.int64)
        for step, dropped, _kept in self.evictions:
            if 0 <= step < n:
                evicted[step] += dropped
        return pd.DataFrame({
            "position": np.arange(n),
            "nll": self.nll,
            "visible": self.visible[:n],
            "evicted_before": evicted,
        })

    def summary(self) -> dict[str, Any]:
        """Scalars worth a results row (JSON-serialisable)."""
        return {
            "ppl": self.ppl,
            "tokens": int(len(self.nll) + 1),
            "ttft_s": self.ttft_s,
            "tpot_s": self.tpot_s,
            "prefill_s": self.prefill_s,
            "total_s": self.total_s,
            "evictions": int(len(self.evictions)),
            "evicted_tokens": int(self.evictions[:, 1].sum()) if len(self.evictions) else 0,
            "visible": self.visible_stats,
            "cache_bytes": self.cache_bytes,
            "peak_rss_bytes": self.peak_rss_bytes,
            "chunk": self.chunk,
            "repeats": self.repeats,
            "cache": {k: getattr(self.cache, k) for k in self.cache.__dataclass_fields__},
        }

    def to_json(self, path: Optional[PathLike] = None) -> str:
        """JSON of the summary plus per-token NLL and the eviction log;
        written atomically to ``path`` when given."""
        doc = dict(self.summary())
        doc["nll"] = [float(x) for x in self.nll]
        doc["eviction_log"] = self.evictions.tolist()
        text = json.dumps(doc)
        if path is not None:
            write_text_atomic(path, text)
        return text

    def plot(self, path: Optional[PathLike] = None, smooth: int = 32, title: Optional[str] = None) -> "Any":
        """NLL vs token position (moving average over ``smooth`` tokens) with
        eviction boundaries marked; saved to ``path`` when given."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 4))
        x = np.arange(len(self.nll))
        ax.plot(x, self.nll, lw=0.3, alpha=0.35, color="tab:blue", label="token NLL")
        if smooth > 1 and len(self.nll) >= smooth:
            kernel = np.ones(smooth) / smooth
            ax.plot(x[smooth - 1:], np.convolve(self.nll, kernel, mode="valid"), color="tab:blue",
                    label=f"moving mean ({smooth})")
        steps = self.evictions[:, 0] if len(self.evictions) else np.zeros(0)
        if 0 < len(steps) <= 400:
            for s in steps:
                ax.axvline(s, color="tab:red", lw=0.4, alpha=0.5)
        elif len(steps):
            ax.plot(steps, np.full(len(steps), float(np.max(self.nll))), "|", color="tab:red", ms=4)
        ax.set_xlabel("token position")
        ax.set_ylabel("NLL (nats)")
        c = self.cache
        ax.set_title(title or f"{c.policy} cache, PPL {self.ppl:.2f}, {len(steps)} evictions (red)")
        ax.legend(loc="upper right")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
            plt.close(fig)
        return fig


def perplexity(model: Model, ids: TokenIds, cache: Optional[CacheConfig] = None, chunk: int = 1,
               repeats: int = 1, record_evictions: bool = True) -> PerplexityResult:
    """Streams ``ids`` through ``model`` with ``cache`` and measures NLL and time.

    ``chunk=1`` feeds one token per forward, as generation does (the TPOT
    that matters); larger chunks give identical NLLs faster (each token
    still sees exactly what the policy shows it). Timings are medians over
    ``repeats`` runs; NLLs come from the first.

    Ctrl-C stops the evaluation within a chunk and raises
    ``KeyboardInterrupt`` whose ``partial`` attribute holds what was computed:
    the result of the runs completed, or else a result over the tokens
    evaluated so far (``None`` if there are none).
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a specstream Model, got {type(model).__name__}")
    arr = model._ids(ids)
    if len(arr) < 2:
        raise ValueError(f"perplexity needs at least 2 tokens, got {len(arr)}")
    cache = cache or CacheConfig()
    if not isinstance(cache, CacheConfig):
        raise TypeError(f"cache must be a CacheConfig, got {type(cache).__name__}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= 4096:
        raise ValueError(f"chunk must be an int in [1, 4096], got {chunk!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    first = None
    timings: list[dict[str, float]] = []
    for _ in range(repeats):
        nll, visible, events, first_s, rest_s, cache_bytes, done, interrupted = model._core.eval_nll(
            arr, cache._core_values(model.tokenizer), chunk, record_evictions)
        if interrupted:
            if first is None and done >= 1:
                # nll[t] came with token t: the first `done` are computed
                first = (nll[:done], visible[:done], events[events[:, 0] < done], cache_bytes)
                timings = [_timing(first_s, rest_s, done, chunk)]
            partial = None if first is None else _result(first, timings, cache, chunk)
            e = KeyboardInterrupt(f"perplexity interrupted after {done} of {len(arr)} tokens"
                                  f"{'' if partial is None else ' (results so far in .partial)'}")
            e.partial = partial  # type: ignore[attr-defined]
            raise e
        timings.append(_timing(first_s, rest_s, len(arr), chunk))
        if first is None:
            # the last commit already settles the eviction before a token that never comes
            first = (nll, visible, events[events[:, 0] < len(arr)], cache_bytes)
    return _result(first, timings, cache, chunk)


def _timing(first_s: float, rest_s: float, n: int, chunk: int) -> dict[str, float]:
    n_rest = n - chunk if chunk < n else 0
    return {
        "prefill_s": first_s,
        "ttft_s": first_s,
        "tpot_s": rest_s / n_rest if n_rest > 0 else math.nan,
        "total_s": first_s + rest_s,
    }


def _result(first: tuple, timings: list[dict[str, float]], cache: CacheConfig, chunk: int) -> PerplexityResult:
    med = {k: statistics.median(t[k] for t in timings) for k in timings[0]}
    nll, visible, events, cache_bytes = first
    return PerplexityResult(
        nll=nll, visible=visible, evictions=events, cache=cache, ttft_s=med["ttft_s"], tpot_s=med["tpot_s"],
        prefill_s=med["prefill_s"], total_s=med["total_s"], chunk=chunk, repeats=len(timings),
        cache_bytes=int(cache_bytes), peak_rss_bytes=_peak_rss_bytes(), timings=timings,
    )
