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

from . import _contract

__all__ = [
    "CACHE_POLICIES",
    "CacheConfig",
    "SpeculativeConfig",
    "GenerationStats",
    "GenerationResult",
]

#: Cache policy names, in the core's order.
CACHE_POLICIES: tuple[str, ...] = _contract.choices("cache", "policy")
#: How refresh tokens are picked, in the core's order.
REFRESH_SELECTIONS: tuple[str, ...] = _contract.choices("cache", "refresh")
#: Drafting methods, in the core's order ("none": target-only decoding).
SPECULATIVE_METHODS: tuple[str, ...] = _contract.choices("speculative", "method")
#: Largest token count a cache field may hold (the core sizes caches in int).
MAX_CACHE_TOKENS: int = int(_contract.field("cache", "window")["max"])


def _d(kind: str, name: str) -> Any:
    return _contract.default(kind, name)


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

        Score policies keep, besides the ``n_sink`` sinks and the
        ``window`` most recent tokens, ``heavy`` evicted tokens per head
        (each (layer, head) its own set, by its own attention), rated by:
        ``h2o`` (Zhang et al. 2023) the attention accumulated since the key
        entered; ``snapkv`` (Li et al. 2024) the attention of the queries
        since the last eviction, max-pooled over +-3 neighbours;
        ``keynorm`` (Devoto et al. 2024) the lowest key L2 norm;
        ``scissorhands`` (Liu et al. 2023) how many of the last ``history``
        queries gave the key more than average attention. Budget allocators
        over heads and layers (SnapKV scores unless ``scorer`` says
        otherwise): ``adakv`` (Feng et al. 2024) a layer's heads share its
        ``n_head * heavy`` slots by score, each keeping at least
        ``adakv_floor * heavy``; ``pyramidkv`` (Cai et al. 2024) budgets
        decreasing linearly with depth (the top layer keeps
        ``heavy / pyramid_beta``); ``headaware`` (H2O scores) per-head
        budgets from how much attention each head paid outside its recent
        window before the first eviction. docs/CACHE_POLICIES.md has the
        exact rules.

    Score policies' options: ``scorer`` swaps the rating (``auto``: the
    policy's own); ``share`` decides per ``head`` (default), per ``layer``
    (one set for a layer's heads, scores summed) or for the whole
    ``model`` (the project's first variant, kept as an ablation: decided
    at commit, so exact token by token only). ``positions``: ``text``
    (keys at their text positions, as the H2O/SnapKV papers) or ``cache``
    (StreamingLLM: keys at their places in the cache); ``auto`` picks
    ``cache`` for window/streaming and ``text`` for score policies.

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

    Heavy sets with ``share`` head or layer are decided token by token
    inside batches too (prefill chunks, speculative verification), so the
    result does not depend on how tokens are batched. Refresh tokens, the
    entropy trigger and ``share="model"`` are decided when tokens are
    committed: exactly sequential when tokens come one at a time
    (generation, ``chunk=1``), lagging inside larger batches.

    Names, defaults, limits and the rules between fields are the C core's
    (``_core.config_schema("cache")``); the core checks every instance.
    """

    policy: str = _d("cache", "policy")
    n_sink: int = _d("cache", "n_sink")
    window: int = _d("cache", "window")
    capacity: Optional[int] = _d("cache", "capacity")
    compress_every: int = _d("cache", "compress_every")
    max_drop: Optional[int] = _d("cache", "max_drop")
    overlap: int = _d("cache", "overlap")
    heavy: int = _d("cache", "heavy")
    scorer: str = _d("cache", "scorer")
    share: str = _d("cache", "share")
    positions: str = _d("cache", "positions")
    history: int = _d("cache", "history")
    adakv_floor: float = _d("cache", "adakv_floor")
    pyramid_beta: float = _d("cache", "pyramid_beta")
    refresh_budget: int = _d("cache", "refresh_budget")
    refresh: str = _d("cache", "refresh")
    structural_ids: tuple = _d("cache", "structural_ids")
    entropy_threshold: float = _d("cache", "entropy_threshold")

    def __post_init__(self) -> None:
        _contract.check(self, "cache")

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

    def _core_values(self, tokenizer: Any = None) -> dict[str, Any]:
        """The values the core takes; ``tokenizer`` supplies the structural
        ids that structural refresh needs when none are given."""
        values = _contract.values(self)
        if self.refresh_budget and self.refresh == "structural" and not self.structural_ids:
            ids = structural_token_ids(tokenizer) if tokenizer is not None else ()
            if not ids:
                raise ValueError("CacheConfig.refresh='structural' needs structural_ids (or a model with a tokenizer)")
            values["structural_ids"] = ids
        return values


_contract.check_fields_match(CacheConfig, "cache")

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

    Methods (every one verified by the target in ONE forward per step, with
    output identical to the target's: the same tokens when greedy, the same
    distribution when sampling):

    ``"draft"``: the draft model passed to ``generate`` proposes a chain of
    ``k`` tokens.
    ``"tree"``: the draft model proposes a token tree (SpecInfer / EAGLE-2
    style): at each depth up to ``k`` the ``branch`` most probable nodes are
    run through the draft in one batched forward and each gets ``branch``
    children (drawn without replacement when sampling); the ``max_nodes``
    most probable candidates are verified with tree attention and the
    multi-candidate rejection rule (a residual after each rejected sibling).
    ``"lookup"``: prompt lookup, the tokens that followed the last n-gram of
    the context where it occurred before (no draft model).
    ``"lookahead"``: Lookahead decoding (Fu et al. 2024; no draft model):
    Jacobi iterations over a window of ``lookahead_window`` columns feed an
    n-gram pool; up to ``lookahead_guesses`` n-grams of ``k`` tokens that
    followed the current token are verified in the same forward.
    ``"medusa"``: Medusa heads (``specstream.load_medusa``, passed as
    ``draft``) on the target's last hidden state propose a tree of depth
    ``k`` (``branch`` candidates per head, ``max_nodes`` kept).
    ``"none"``: the target alone.

    ``k`` tokens are proposed per step; with ``adaptive=True`` (draft chains) k is re-chosen
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

    Names, defaults, limits and rules are the C core's
    (``_core.config_schema("speculative")``).
    """

    k: int = _d("speculative", "k")
    adaptive: bool = _d("speculative", "adaptive")
    k_min: int = _d("speculative", "k_min")
    k_max: int = _d("speculative", "k_max")
    ema_decay: float = _d("speculative", "ema_decay")
    cost_ratio: Union[None, float, str] = _d("speculative", "cost_ratio")
    method: str = _d("speculative", "method")
    lookup_ngram: int = _d("speculative", "lookup_ngram")
    forced_acceptance: Optional[float] = _d("speculative", "forced_acceptance")
    branch: int = _d("speculative", "branch")
    max_nodes: int = _d("speculative", "max_nodes")
    lookahead_window: int = _d("speculative", "lookahead_window")
    lookahead_guesses: int = _d("speculative", "lookahead_guesses")

    def __post_init__(self) -> None:
        _contract.check(self, "speculative")

    @property
    def uses_draft_model(self) -> bool:
        """Whether this method proposes with a draft model."""
        return self.method in ("draft", "tree")

    @property
    def needs_draft(self) -> str:
        """What ``generate(draft=...)`` must be for this method: "model",
        "medusa" (heads) or "" (nothing)."""
        return "model" if self.uses_draft_model else "medusa" if self.method == "medusa" else ""

    def _core_values(self, enabled: bool) -> dict[str, Any]:
        """The values the core takes; not enabled: target-only decoding."""
        values = _contract.values(self)
        if not enabled:
            values["method"] = "none"
        return values


_contract.check_fields_match(SpeculativeConfig, "speculative")


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
    nodes_per_step: float = math.nan
    """Candidate tokens verified per target forward (tree methods: > k)."""
    acceptance_by_depth: tuple = ()
    """P(a candidate at depth d is accepted | the walk reached depth d - 1 and
    the tree offered candidates there), d = 1, 2, ..."""
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
            nodes_per_step=drafted / steps if steps else math.nan,
            acceptance_by_depth=tuple(a / t if t else math.nan
                                      for a, t in zip(raw.get("depth_accepted", ()), raw.get("depth_tried", ()))),
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
