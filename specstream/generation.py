"""Configuration and results of generation: cache policies, speculative decoding,
sampling, and the statistics every call reports.

Every field of :class:`CacheConfig` and :class:`SpeculativeConfig` is a switch
that experiments can sweep; the classes validate themselves on construction,
so a bad value fails with a message naming the field before any work starts.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Union

import numpy as np

__all__ = [
    "CACHE_POLICIES",
    "CacheConfig",
    "SpeculativeConfig",
    "GenerationStats",
    "GenerationResult",
]

#: Policy name -> the C core's enum value (specstream.h, ss_cache_policy).
CACHE_POLICIES: dict[str, int] = {"full": 0, "window": 1, "streaming": 2, "recompute": 3, "h2o": 4,
                                  "snapkv": 5, "keynorm": 6}
#: Refresh selections -> the core's enum (ss_refresh_select).
REFRESH_SELECTIONS: dict[str, int] = {"uniform": 0, "structural": 1, "entropy": 2}
_SCORE_POLICIES = ("h2o", "snapkv", "keynorm")
_DRAFT_KINDS: dict[str, int] = {"draft": 1, "lookup": 2}


#: Largest token count a cache field may hold: the C core sizes caches in int
#: (window + compress_every + n_sink + a batch must not overflow it).
MAX_CACHE_TOKENS = 2**29


def _check_int(owner: str, name: str, value: Any, minimum: int, maximum: int = MAX_CACHE_TOKENS) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{owner}.{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{owner}.{name} must be >= {minimum}, got {value}")
    if value > maximum:
        raise ValueError(f"{owner}.{name} must be <= {maximum}, got {value}")


def _check_number(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{owner}.{name} must be a number, got {value!r}")


@dataclass(frozen=True)
class CacheConfig:
    """Which keys and values a model keeps while it reads a stream.

    Policies:
        ``full``: keep everything (memory grows with the sequence).
        ``window``: the most recent ``window`` tokens only, no sinks (the
        policy whose perplexity collapses once the first tokens are gone).
        ``streaming``: StreamingLLM, the first ``n_sink`` tokens plus the most
        recent ``window``; keys take their position in the cache as rotary
        position.
        ``recompute``: for every token, re-encode the last ``window`` tokens
        from scratch (the quality reference; quadratic cost).

        ``h2o``, ``snapkv``, ``keynorm``: score-based baselines; besides the
        ``n_sink`` sinks and the ``window`` most recent tokens they keep
        ``heavy`` evicted tokens with the highest accumulated attention (H2O),
        the highest attention from the queries since the last eviction,
        max-pooled over +-3 neighbours (SnapKV-style vote), or the lowest key
        L2 norm.

    Lazy eviction (all windowed policies):
        ``compress_every`` (R): the cache may hold up to R - 1 keys beyond its
        budget and then evicts in one batch; R = 1 evicts at every step. (R is
        length-based: it is the "slack" of an adaptive scheme, Delta = R - 1.)
        ``max_drop``: evict at most this many keys per step, spreading a
        larger eviction over the following steps (None: unlimited).
        ``overlap``: after a batch eviction keep this many keys beyond the
        budget (fewer keys dropped per batch, a softer transition); < R.
        ``entropy_threshold`` (> 0): evict at once, without waiting for R,
        when the newest token's predictive entropy (nats) exceeds it.

    Refresh tokens (window and streaming): ``refresh_budget`` evicted tokens
    are kept as dynamic sinks, chosen from each evicted span by ``refresh``:
    ``uniform`` (evenly spaced), ``structural`` (ids in ``structural_ids``,
    e.g. newlines and full stops; derived from the model's tokenizer when
    empty) or ``entropy`` (highest predictive entropy); the newest
    ``refresh_budget`` are kept.

    Data-dependent choices (refresh, heavy tokens, the entropy trigger) are
    made when tokens are committed: exactly sequential when tokens come one
    at a time (generation, ``chunk=1``), lagging inside larger batches.
    """

    policy: str = "full"
    n_sink: int = 4
    window: int = 1024
    capacity: Optional[int] = None
    compress_every: int = 1
    max_drop: Optional[int] = None
    overlap: int = 0
    heavy: int = 0
    refresh_budget: int = 0
    refresh: str = "uniform"
    structural_ids: tuple = ()
    entropy_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.policy not in CACHE_POLICIES:
            raise ValueError(
                f"CacheConfig.policy: unknown policy {self.policy!r} (choose from {', '.join(CACHE_POLICIES)})"
            )
        _check_int("CacheConfig", "n_sink", self.n_sink, 0)
        _check_int("CacheConfig", "window", self.window, 1)
        _check_int("CacheConfig", "compress_every", self.compress_every, 1)
        _check_int("CacheConfig", "overlap", self.overlap, 0)
        _check_int("CacheConfig", "heavy", self.heavy, 0)
        _check_int("CacheConfig", "refresh_budget", self.refresh_budget, 0)
        if self.capacity is not None:
            _check_int("CacheConfig", "capacity", self.capacity, 1)
        if self.max_drop is not None:
            _check_int("CacheConfig", "max_drop", self.max_drop, 1)
        if self.policy in ("streaming",) + _SCORE_POLICIES and self.window < self.n_sink:
            raise ValueError(
                f"CacheConfig.window ({self.window}) is smaller than CacheConfig.n_sink ({self.n_sink})"
            )
        if self.overlap >= self.compress_every:
            raise ValueError(
                f"CacheConfig.overlap ({self.overlap}) must be smaller than "
                f"CacheConfig.compress_every ({self.compress_every}): otherwise nothing is ever evicted"
            )
        if self.refresh not in REFRESH_SELECTIONS:
            raise ValueError(f"CacheConfig.refresh must be one of {', '.join(REFRESH_SELECTIONS)}, got {self.refresh!r}")
        object.__setattr__(self, "structural_ids", tuple(int(i) for i in self.structural_ids))
        if any(i < 0 for i in self.structural_ids):
            raise ValueError("CacheConfig.structural_ids must be non-negative token ids")
        if isinstance(self.entropy_threshold, bool) or not isinstance(self.entropy_threshold, (int, float)) \
                or not math.isfinite(self.entropy_threshold) or self.entropy_threshold < 0:
            raise ValueError(f"CacheConfig.entropy_threshold must be a finite number >= 0, got {self.entropy_threshold!r}")
        if self.policy in _SCORE_POLICIES:
            if self.heavy < 1:
                raise ValueError(f"CacheConfig.heavy must be >= 1 for policy {self.policy!r} (tokens kept by score)")
            if self.refresh_budget:
                raise ValueError("CacheConfig.refresh_budget applies to the window and streaming policies only")
        elif self.heavy:
            raise ValueError(f"CacheConfig.heavy applies to h2o, snapkv and keynorm, not {self.policy!r}")
        if self.refresh_budget:
            if self.policy not in ("window", "streaming"):
                raise ValueError(f"CacheConfig.refresh_budget applies to window/streaming, not {self.policy!r}")
            if self.refresh_budget > self.window:
                raise ValueError(
                    f"CacheConfig.refresh_budget ({self.refresh_budget}) is larger than the cache window ({self.window})")

    @property
    def bounded(self) -> bool:
        """True when memory stays fixed however long the stream is."""
        return self.policy != "full"

    @property
    def budget(self) -> Optional[int]:
        """Keys a query sees at most (before lazy slack); the capacity for ``full``."""
        if self.policy == "full":
            return self.capacity
        if self.policy == "recompute":
            return self.window
        sinks = 0 if self.policy == "window" else self.n_sink
        return sinks + self.window + self.heavy + self.refresh_budget

    def _to_core(self, needed: int, tokenizer: Any = None) -> tuple:
        """The tuple the C core takes; ``needed`` sizes a full cache without a
        capacity; ``tokenizer`` supplies default structural ids."""
        if self.policy != "full":
            capacity = max(1, min(needed, MAX_CACHE_TOKENS))  # unused by bounded policies
        elif self.capacity is not None:
            capacity = self.capacity
        elif needed > MAX_CACHE_TOKENS:
            raise ValueError(
                f"a full cache for {needed} tokens exceeds the limit of {MAX_CACHE_TOKENS}: "
                "use a bounded CacheConfig.policy (window/streaming) for streams this long"
            )
        else:
            capacity = max(1, needed)
        structural = None
        if self.refresh_budget and self.refresh == "structural":
            ids = self.structural_ids or (structural_token_ids(tokenizer) if tokenizer is not None else ())
            if not ids:
                raise ValueError("CacheConfig.refresh='structural' needs structural_ids (or a model with a tokenizer)")
            structural = np.asarray(ids, dtype=np.int32)
        return (
            CACHE_POLICIES[self.policy],
            0 if self.policy in ("full", "window", "recompute") else self.n_sink,
            self.window,
            capacity,
            self.compress_every,
            self.max_drop or 0,
            self.overlap,
            self.heavy,
            self.refresh_budget,
            REFRESH_SELECTIONS[self.refresh],
            structural,
            float(self.entropy_threshold),
        )


_STRUCTURAL_CHARS = set("\n.!?;:\"'")


_structural_cache: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()


def structural_token_ids(tokenizer: Any) -> tuple:
    """Ids of tokens that mark structure: any newline, or ending in sentence
    punctuation or a quote (after stripping spaces). Cached per tokenizer."""
    try:
        return _structural_cache[tokenizer]
    except (KeyError, TypeError):
        pass
    out = []
    for i in range(int(tokenizer.vocab_size)):
        text = tokenizer.decode([i])
        stripped = text.rstrip(" ")
        if "\n" in text or (stripped and stripped[-1] in _STRUCTURAL_CHARS):
            out.append(i)
    try:
        _structural_cache[tokenizer] = tuple(out)
    except TypeError:  # not weak-referenceable: no cache
        pass
    return tuple(out)


@dataclass(frozen=True)
class SpeculativeConfig:
    """How drafts are proposed and verified.

    ``method="draft"`` uses the draft model passed to ``generate``;
    ``method="lookup"`` proposes the tokens that followed the last n-gram of
    the context where it occurred before (prompt lookup, no draft model).
    ``k`` tokens are proposed per step; with ``adaptive=True`` k is re-chosen
    every step within [k_min, k_max] to maximise expected tokens per unit time
    (1 - a^(k+1)) / ((1 - a)(1 + k c)) given an EMA (``ema_decay``) of the
    acceptance rate a and a cost ratio c = draft time per token / target time
    per verification. ``cost_ratio`` sets c: ``None`` (default) takes the
    ratio of the models' weight bytes (what bounds batch-1 decode on a CPU;
    0 for prompt lookup), a number fixes it, and ``"measured"`` follows an EMA
    of the step timings. The first two keep sampled output a function of the
    seed alone; with ``"measured"`` k, and so the random stream, depends on
    the machine's timing (the better choice where the draft is bound by
    latency rather than bytes, e.g. on a GPU).

    ``forced_acceptance`` is a benchmark knob: the verifier accepts each draft
    with that probability regardless of the models, so speed can be measured
    at a chosen acceptance rate. Output is then NOT the target's.
    """

    k: int = 5
    adaptive: bool = False
    k_min: int = 1
    k_max: int = 8
    ema_decay: float = 0.8
    cost_ratio: Union[None, float, str] = None
    method: str = "draft"
    lookup_ngram: int = 3
    forced_acceptance: Optional[float] = None

    def __post_init__(self) -> None:
        _check_int("SpeculativeConfig", "k", self.k, 1)
        if self.k > 64:
            raise ValueError(f"SpeculativeConfig.k must be <= 64, got {self.k}")
        if not isinstance(self.adaptive, bool):
            raise TypeError(f"SpeculativeConfig.adaptive must be a bool, got {self.adaptive!r}")
        _check_int("SpeculativeConfig", "k_min", self.k_min, 1)
        _check_int("SpeculativeConfig", "k_max", self.k_max, 1)
        if self.k_max < self.k_min or self.k_max > 64:
            raise ValueError(
                f"SpeculativeConfig needs k_min <= k_max <= 64, got k_min={self.k_min} k_max={self.k_max}"
            )
        _check_number("SpeculativeConfig", "ema_decay", self.ema_decay)
        if not (0.0 <= float(self.ema_decay) < 1.0):
            raise ValueError(f"SpeculativeConfig.ema_decay must be in [0, 1), got {self.ema_decay}")
        if isinstance(self.cost_ratio, str):
            if self.cost_ratio != "measured":
                raise ValueError(f"SpeculativeConfig.cost_ratio must be None, a number or 'measured', "
                                 f"got {self.cost_ratio!r}")
        elif self.cost_ratio is not None:
            _check_number("SpeculativeConfig", "cost_ratio", self.cost_ratio)
            if not (0.0 <= float(self.cost_ratio) <= 1e3):
                raise ValueError(f"SpeculativeConfig.cost_ratio must be in [0, 1000], got {self.cost_ratio}")
        if self.method not in _DRAFT_KINDS:
            raise ValueError(f"SpeculativeConfig.method must be 'draft' or 'lookup', got {self.method!r}")
        _check_int("SpeculativeConfig", "lookup_ngram", self.lookup_ngram, 1)
        if self.forced_acceptance is not None:
            _check_number("SpeculativeConfig", "forced_acceptance", self.forced_acceptance)
        if self.forced_acceptance is not None and not (0.0 <= float(self.forced_acceptance) <= 1.0):
            raise ValueError(
                f"SpeculativeConfig.forced_acceptance must be in [0, 1] or None, got {self.forced_acceptance}"
            )

    def _to_core(self, enabled: bool, bytes_ratio: float) -> tuple:
        """The core's tuple; bytes_ratio = draft / target weight bytes (0 without a draft model)."""
        kind = _DRAFT_KINDS[self.method] if enabled else 0
        forced = -1.0 if self.forced_acceptance is None else float(self.forced_acceptance)
        cost = (-1.0 if self.cost_ratio == "measured" else
                float(bytes_ratio) if self.cost_ratio is None else float(self.cost_ratio))
        return (kind, self.k, int(self.adaptive), self.k_min, self.k_max, float(self.ema_decay), cost,
                self.lookup_ngram, forced)


@dataclass
class GenerationStats:
    """Timings (seconds), counters and memory of one generate call.

    TTFT covers the prompt and the first new token; TPOT is the mean time per
    token after the first. For speculative runs: ``acceptance_rate`` =
    accepted / drafted tokens, ``mean_accepted_length`` = new tokens per
    verification step (accepted + the one the target adds).
    """

    new_tokens: int
    prefill_s: float
    ttft_s: float
    decode_s: float
    tpot_s: float
    tokens_per_s: float
    target_forwards: int
    draft_s: float = 0.0
    verify_s: float = 0.0
    drafted: int = 0
    accepted: int = 0
    acceptance_rate: float = math.nan
    mean_accepted_length: float = math.nan
    tokens_per_target_forward: float = math.nan
    cache_bytes: int = 0
    weight_bytes: int = 0
    peak_rss_bytes: int = 0
    seed: Optional[int] = None
    speedup: Optional[float] = None
    """tokens/s of this run over target-only decoding, when measured."""

    @property
    def overhead_s(self) -> float:
        """Decode time spent outside the draft and target forwards."""
        return max(0.0, self.decode_s - self.draft_s - self.verify_s)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["overhead_s"] = self.overhead_s
        return d

    @classmethod
    def _from_core(cls, raw: dict[str, Any], weight_bytes: int, peak_rss: int, seed: Optional[int]) -> "GenerationStats":
        n = int(raw["new_tokens"])
        decode_s = float(raw["decode_s"])
        steps = int(raw["draft_steps"])
        drafted, accepted = int(raw["drafted"]), int(raw["accepted"])
        forwards = int(raw["target_forwards"])
        return cls(
            new_tokens=n,
            prefill_s=float(raw["prefill_s"]),
            ttft_s=float(raw["ttft_s"]),
            decode_s=decode_s,
            tpot_s=decode_s / (n - 1) if n > 1 else math.nan,
            tokens_per_s=(n - 1) / decode_s if n > 1 and decode_s > 0 else math.nan,
            target_forwards=forwards,
            draft_s=float(raw["draft_s"]),
            verify_s=float(raw["verify_s"]),
            drafted=drafted,
            accepted=accepted,
            acceptance_rate=accepted / drafted if drafted else math.nan,
            mean_accepted_length=(accepted + steps) / steps if steps else math.nan,
            tokens_per_target_forward=(n - 1) / forwards if forwards else math.nan,
            cache_bytes=int(raw["cache_bytes"]),
            weight_bytes=weight_bytes,
            peak_rss_bytes=peak_rss,
            seed=seed,
        )


@dataclass
class GenerationResult:
    """What ``Model.generate`` returns: the new token ids (no prompt) and stats."""

    tokens: np.ndarray
    stats: GenerationStats
    text: Optional[str] = field(default=None)
    """The decoded text of ``tokens`` when the model has a tokenizer."""

    def __len__(self) -> int:
        return len(self.tokens)
