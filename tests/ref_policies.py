"""Per-(layer, head) KV cache policies in float64 NumPy: the ground truth for csrc/cache/.

Written from docs/CACHE_POLICIES.md alone (its rules are quoted in the
docstrings below), never from the C code, on top of the GPT-NeoX math of
reference.py. Tokens are decoded one at a time.

Entry point::

    tr = policy_trace(ref, ids, policy="h2o", n_sink=4, window=16, heavy=8)
    tr.logits          # [n, vocab_rows]
    tr.events          # Event(step, dropped): the positions that left the run
    tr.heavy_sets      # [t][layer][head] -> heavy-set positions after step t
    tr.visible         # [t][layer][head] -> the keys token t's query saw

The keyword names are CacheConfig's: policy, n_sink, window, heavy,
compress_every, max_drop (0 or None: unlimited), overlap, positions
("text" | "cache"), share ("head" | "layer" | "model"), scorer (the base
scorer of the allocators adakv, pyramidkv, headaware), history
(scissorhands), adakv_floor, pyramid_beta.

How the reference stays exact in both position modes: the unrotated key and
the value of every token are kept for every layer and head, and keys are
rotated only at attention time, at text positions or at cache slots, so the
way the engine stores keys cannot leak in.

Where the page leaves a choice open, the resolution is stated where it is
made (look for "Resolution:").
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple, Sequence

import numpy as np

from reference import RefModel, rotate, softmax

__all__ = [
    "POLICIES", "SCORERS", "SHARES", "CacheFields", "Event", "PolicyTrace", "policy_trace", "cache_fields",
    "run_schedule", "keep_best", "snapkv_pool", "adakv_select", "pyramid_budgets", "headaware_budgets",
    "selection_units", "scissorhands_counts", "ScorerState", "AttentionLog", "with_salient_heads",
]

POLICIES = ("window", "streaming", "h2o", "snapkv", "keynorm", "scissorhands", "adakv", "pyramidkv", "headaware")
SCORERS = ("h2o", "snapkv", "keynorm", "scissorhands")
ALLOCATOR_SCORER = {"adakv": "snapkv", "pyramidkv": "snapkv", "headaware": "h2o"}  # "[default in brackets]"
SHARES = ("head", "layer", "model")
POSITIONS = ("text", "cache")
SNAPKV_REACH = 3  # "max-pooled over their 3 neighbours on each side (a 7-wide window)"
MAX_HISTORY = 64  # scissorhands: "history <= 64"


# ----------------------------------------------------------------- test models


def with_salient_heads(ref: RefModel, scale: float = 16.0, seed: int = 0) -> RefModel:
    """The model with a large random query bias per head.

    In the random test models attention is nearly uniform, so the oldest keys
    always have the largest accumulated attention and H2O only ever keeps the
    oldest candidates: a test would not notice if scores were ignored. A
    query bias makes every query of a head lean toward one direction, so
    some keys get much more attention than others - heavy hitters, which
    differ between heads, as in trained models.
    """
    c = ref.cfg
    weights = dict(ref.w)
    rng = np.random.default_rng(seed)
    for l in range(c.n_layer):
        name = f"gpt_neox.layers.{l}.attention.query_key_value.bias"
        bias = weights[name].reshape(c.n_head, 3, c.head_dim).copy()  # per head: q, k, v
        bias[:, 0] += scale * rng.standard_normal((c.n_head, c.head_dim))
        weights[name] = bias.reshape(-1)
    return RefModel(c, weights)


# ----------------------------------------------------------------- the fields


class CacheFields(NamedTuple):
    """The cache parameters after checking, with every default resolved.

    ``n_sink`` is the effective number of sinks (0 for ``window``, which has
    none, as CacheConfig says), ``scorer`` the scorer that rates candidates
    (the policy itself for plain score policies, None for window/streaming).
    """

    policy: str
    n_sink: int
    window: int
    heavy: int
    compress_every: int
    max_drop: int
    overlap: int
    positions: str
    share: str
    scorer: str | None
    history: int
    adakv_floor: float
    pyramid_beta: float


def cache_fields(policy: str, window: int, n_sink: int = 4, heavy: int = 0, compress_every: int = 1,
                 max_drop: int | None = 0, overlap: int = 0, positions: str | None = None, share: str = "head",
                 scorer: str | None = None, history: int = 32, adakv_floor: float = 0.2,
                 pyramid_beta: float = 20) -> CacheFields:
    """Checks the fields and resolves the defaults of docs/CACHE_POLICIES.md.

    * positions: "Default: 'cache' for window/streaming, 'text' for score
      policies."
    * scorer: the allocators wrap a base scorer, "adakv [snapkv]",
      "pyramidkv [snapkv]", "headaware [h2o]"; the plain score policies are
      their own scorer; window/streaming have none.

    Resolution: window/streaming keep no heavy keys here (``heavy`` must be
    0; their refresh tokens are "unchanged" and stay in reference.py).
    adakv and headaware split a layer's slots between its heads, so they
    need ``share="head"``; pyramidkv budgets differ per layer, so it takes
    "head" or "layer" but not "model". pyramid_beta must be >= 1 so that
    m_top <= m (no negative budget).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    max_drop = 0 if max_drop is None else max_drop
    if n_sink < 0 or window < 1 or heavy < 0 or compress_every < 1 or max_drop < 0 or overlap < 0:
        raise ValueError(f"need n_sink >= 0, window >= 1, heavy >= 0, compress_every >= 1, max_drop >= 0, "
                         f"overlap >= 0; got {n_sink}, {window}, {heavy}, {compress_every}, {max_drop}, {overlap}")
    if share not in SHARES:
        raise ValueError(f"share must be one of {SHARES}, got {share!r}")
    if not 1 <= history <= MAX_HISTORY:
        raise ValueError(f"history must be in [1, {MAX_HISTORY}], got {history}")
    if not 0.0 <= adakv_floor <= 1.0:
        raise ValueError(f"adakv_floor must be in [0, 1], got {adakv_floor}")
    if not pyramid_beta >= 1:
        raise ValueError(f"pyramid_beta must be >= 1, got {pyramid_beta}")
    if policy in ("window", "streaming"):
        if heavy:
            raise ValueError(f"{policy} keeps no heavy keys (heavy must be 0, got {heavy})")
        if scorer is not None:
            raise ValueError(f"{policy} has no scorer, got {scorer!r}")
    elif policy in ALLOCATOR_SCORER:
        scorer = ALLOCATOR_SCORER[policy] if scorer is None else scorer
        if scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got {scorer!r}")
        allowed = ("head", "layer") if policy == "pyramidkv" else ("head",)
        if share not in allowed:
            raise ValueError(f"{policy} needs share in {allowed}, got {share!r}")
    else:
        if scorer not in (None, policy):
            raise ValueError(f"policy {policy!r} is its own scorer, got scorer={scorer!r}")
        scorer = policy
    if positions is None:
        positions = "cache" if policy in ("window", "streaming") else "text"
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    return CacheFields(policy=policy, n_sink=0 if policy == "window" else n_sink, window=window, heavy=heavy,
                       compress_every=compress_every, max_drop=max_drop, overlap=overlap, positions=positions,
                       share=share, scorer=scorer, history=history, adakv_floor=float(adakv_floor),
                       pyramid_beta=pyramid_beta)


# ----------------------------------------------------------------- the schedule


def run_schedule(n: int, n_sink: int, window: int, heavy: int, compress_every: int = 1, max_drop: int = 0,
                 overlap: int = 0) -> list[range]:
    """spans[t]: the positions that leave the run before token t joins (an
    empty range when none do). Shared by every layer and head.

    The page: "Before token t >= s is appended, with size = s + (t - f) + c
    keys in the cache, where c is the number of heavy keys of a (layer, head)
    once its set is full and 0 before (score policies: c = min(m, keys
    dropped from the run so far); window/streaming: c = 0): if a
    max_drop-limited eviction is still draining, or size + 1 > B + R - 1
    (window/streaming: s + w + R - 1), then drop = (t - f) + 1 - (w + o) (the
    run is cut to w - 1 + o keys before t joins); if drop > 0 the positions
    D = [f, f + drop) leave the run (with max_drop > 0, at most max_drop of
    them, the rest on the following steps) and f += drop."

    ``heavy`` is m; window/streaming pass 0, which makes c = 0 and
    B = s + w, their rule. Keys dropped so far are f - s.

    Resolution: c = min(m, f - s), as the bracket says (it is what a plain
    head holds: each selection keeps min(m, |H| + |D|)). The other reading,
    "m once full, else 0", differs only when a first eviction drops fewer
    than m keys (it drops m + R - o), which needs overlap > R (CacheConfig
    documents overlap < R).
    "The rest on the following steps": while draining, drop is recomputed
    every step from the run's length, and draining ends once a step drops
    all it needs (or needs nothing). Such a drain ignores c, so a drain that
    starts before the heavy set is full can leave more than B + R - 1 keys
    (with max_drop = 1 it never ends and the cache settles at B + R - 1 + m).
    """
    s, w, m, r, o = n_sink, window, heavy, compress_every, overlap
    budget = s + w + m
    f, draining = s, False
    spans = []
    for t in range(n):
        span = range(f, f)
        if t >= s:
            c = min(m, f - s)
            size = s + (t - f) + c
            if draining or size + 1 > budget + r - 1:
                need = (t - f) + 1 - (w + o)
                if need > 0:
                    drop = need if max_drop == 0 else min(need, max_drop)
                    span = range(f, f + drop)
                    f += drop
                    draining = max_drop > 0 and need > drop
                else:
                    draining = False
        spans.append(span)
    return spans


# ----------------------------------------------------------------- selection


def _rel_gap(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def _margin(chosen: Sequence[float], rejected: Sequence[float]) -> float:
    """Smallest relative gap between a chosen and a rejected score. Exact
    ties are decided by position alone, which rounding cannot flip, so they
    do not count; inf when nothing was rejected."""
    gaps = [_rel_gap(a, b) for a in chosen for b in rejected if a != b]
    return min(gaps, default=math.inf)


def keep_best(cands: Sequence[int], score: dict[int, float], m: int) -> tuple[list[int], float]:
    """The m candidates to keep, sorted by position, and the decision margin.

    The page: "keeps the m best as its new heavy set (all of them if
    |C| <= m); the rest are evicted. Ties keep the larger position (the older
    key is evicted)."
    """
    ranked = sorted(cands, key=lambda p: (score[p], p), reverse=True)
    chosen, rejected = ranked[:m], ranked[m:]
    return sorted(chosen), _margin([score[p] for p in chosen], [score[p] for p in rejected])


def snapkv_pool(cands: Sequence[int], votes: dict[int, float]) -> dict[int, float]:
    """SnapKV's pooling: "at an eviction the candidates' votes, in position
    order, are max-pooled over their 3 neighbours on each side (a 7-wide
    window, clipped at the ends)". Neighbours are neighbours in the sorted
    candidate list, not in text positions."""
    c = sorted(cands)
    return {p: max(votes[q] for q in c[max(0, i - SNAPKV_REACH) : i + SNAPKV_REACH + 1]) for i, p in enumerate(c)}


def adakv_select(cands: Sequence[Sequence[int]], scores: Sequence[dict[int, float]], m: int,
                 floor_keep: int) -> tuple[list[list[int]], float]:
    """AdaKV: one layer's new heavy sets, per head, and the decision margin.

    The page: "a layer's H * m heavy slots are shared by its heads. At each
    eviction every head first keeps its floor(adakv_floor * m) best
    candidates; the remaining slots go to the best of all other candidates
    of the layer, scores compared across heads (ties: larger position, then
    lower head index)." ``cands[h]`` and ``scores[h]`` are head h's
    candidates and their scores; ``floor_keep`` is floor(adakv_floor * m).

    Resolution: "all of them if |C| <= m" reads, for the layer, as: when the
    layer's candidates number at most H * m, every head keeps all of its own.
    """
    n_head = len(cands)
    slots = n_head * m
    if sum(len(c) for c in cands) <= slots:
        return [sorted(c) for c in cands], math.inf
    kept: list[list[int]] = []
    margin = math.inf
    for h in range(n_head):
        first, gap = keep_best(cands[h], scores[h], floor_keep)
        kept.append(first)
        margin = min(margin, gap)
    rest = [(scores[h][p], p, -h) for h in range(n_head) for p in cands[h] if p not in kept[h]]
    rest.sort(reverse=True)  # score, then larger position, then lower head index (larger -h)
    free = slots - sum(len(k) for k in kept)
    for _, p, neg_h in rest[:free]:
        kept[-neg_h].append(p)
    margin = min(margin, _margin([r[0] for r in rest[:free]], [r[0] for r in rest[free:]]))
    return [sorted(k) for k in kept], margin


def _round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def pyramid_budgets(heavy: int, n_layer: int, beta: float = 20) -> list[int]:
    """PyramidKV: the heavy keys per head of each layer.

    The page: "layer l keeps m_l heavy keys per head, decreasing linearly
    with depth: m_top = max(1, round(m / pyramid_beta)), m_0 = 2m - m_top,
    m_l = m_0 + l (m_top - m_0) / (L - 1) rounded down, the remainder given
    to the lowest layers so that the layers hold L * m in all."

    Computed in exact rationals. Resolution: "round" is half up (C's
    round() for positive values, not Python's half-to-even); "the remainder
    given to the lowest layers" is one key each to layers 0, 1, ...
    (at most L - 2 keys: layers 0 and L - 1 lose nothing to rounding down,
    so the top layer keeps m_top); a single layer keeps m (L - 1 = 0 leaves the
    formula undefined, and L * m = m); m = 0 gives zeros.
    """
    if heavy == 0:
        return [0] * n_layer
    if n_layer == 1:
        return [heavy]
    m = Fraction(heavy)
    m_top = max(1, _round_half_up(m / Fraction(beta)))
    m_0 = 2 * m - m_top
    out = [math.floor(m_0 + Fraction(l) * (m_top - m_0) / (n_layer - 1)) for l in range(n_layer)]
    for l in range(n_layer * heavy - sum(out)):
        out[l] += 1
    return out


def headaware_budgets(outside_mass: np.ndarray, heavy: int) -> tuple[list[int], float]:
    """Head-aware compression: one layer's heavy keys per head, and the
    decision margin.

    The page: "each head's share of its layer's H * m heavy slots follows a
    keep ratio r = 0.5 + 0.5 * importance, where importance is the head's
    mean attention mass on keys outside its recent window ... min-max
    normalised within the layer (all equal: importance 1). Budgets are
    fixed at the first eviction: m_h = floor(H m r_h / sum r), remainders to
    the largest fractional parts, at least 1 each."

    ``outside_mass[h]`` is head h's mean mass. Resolution: equal fractional
    parts give the remainder to the lower head index. "At least 1 each" never
    binds once m >= 1 (r lies in [0.5, 1], so H m r_h / sum r >= m / 2, and
    for m = 1 every head below 1 has a larger fractional part than any head
    above it): it is asserted, not enforced. m = 0 gives zeros.

    The margin covers the data-dependent steps: the min-max spread (when it
    is not exactly 0), each share's distance to an integer (when it is not
    exactly one), and the gap between fractional parts that did and did not
    get a remainder.
    """
    n_head = len(outside_mass)
    if heavy == 0:
        return [0] * n_head, math.inf
    lo, hi = float(outside_mass.min()), float(outside_mass.max())
    margin = math.inf
    if hi == lo:
        importance = np.ones(n_head)
    else:
        importance = (outside_mass - lo) / (hi - lo)
        margin = _rel_gap(hi, lo)
    ratio = 0.5 + 0.5 * importance
    share = n_head * heavy * ratio / ratio.sum()
    budgets = [math.floor(x) for x in share]
    frac = [float(x) - b for x, b in zip(share, budgets)]
    margin = min([margin] + [min(f, 1 - f) / float(x) for f, x in zip(frac, share) if f != 0])
    order = sorted(range(n_head), key=lambda h: (-frac[h], h))
    extra = n_head * heavy - sum(budgets)
    for h in order[:extra]:
        budgets[h] += 1
    margin = min(margin, _margin([frac[h] for h in order[:extra]], [frac[h] for h in order[extra:]]))
    assert min(budgets) >= 1, budgets  # see the docstring: the "at least 1" clause holds by construction
    return budgets, margin


def selection_units(share: str, n_layer: int, n_head: int) -> list[list[tuple[int, int]]]:
    """The (layer, head) members of each selection unit.

    The page: "share='head' (default): every (layer, head) selects alone,
    with its own scores. 'layer': the heads of a layer select together, one
    set for all, by scores summed over the layer's heads. 'model': one set
    for every layer and head, by scores summed over all."
    """
    pairs = [[(l, h) for h in range(n_head)] for l in range(n_layer)]
    if share == "head":
        return [[p] for layer in pairs for p in layer]
    if share == "layer":
        return pairs
    return [[p for layer in pairs for p in layer]]


# ----------------------------------------------------------------- scorers


class AttentionLog(NamedTuple):
    """What one query saw at one (layer, head): the key positions and their
    attention probabilities (same order)."""

    keys: np.ndarray
    probs: np.ndarray


def scissorhands_counts(log: Sequence[AttentionLog], cands: Sequence[int]) -> tuple[dict[int, int], float]:
    """Scissorhands: per candidate, the number of queries in ``log`` (the
    last ``history`` queries of the stream at one (layer, head)) "that
    attended to k with p_q(k) > 1 / n_q, where n_q is the number of keys q
    attended to". Also the margin: the smallest relative gap between such a
    p_q(k) and 1 / n_q."""
    counts = dict.fromkeys(cands, 0)
    margin = math.inf
    for q in log:
        uniform = 1.0 / len(q.keys)
        for k, p in zip(q.keys.tolist(), q.probs.tolist()):
            if k in counts:
                counts[k] += p > uniform
                margin = min(margin, _rel_gap(p, uniform))
    return counts, margin


class ScorerState:
    """Every scorer's state, per (layer, head, key position), fed by each query.

    * received[l, h, k]: h2o, "the sum of p_q(k) over every query q since k
      entered the cache, k's own included" (a key never returns once evicted,
      so summing over the queries that saw k is exactly that);
    * votes[l, h, k]: snapkv, the same sum over "the queries since the
      previous eviction"; :meth:`restart_votes` clears it, "after every
      eviction all votes restart at 0";
    * key_norm[l, h, k]: keynorm, ||K_k|| of that head's key;
    * log[q][l][h]: scissorhands, what each query attended to.
    """

    def __init__(self, n_layer: int, n_head: int, n: int) -> None:
        self.received = np.zeros((n_layer, n_head, n))
        self.votes = np.zeros((n_layer, n_head, n))
        self.key_norm = np.zeros((n_layer, n_head, n))
        self.log: list[list[list[AttentionLog]]] = []

    def add_key(self, layer: int, t: int, k: np.ndarray) -> None:
        """Records token t's unrotated keys k [n_head, head_dim] of one layer."""
        self.key_norm[layer, :, t] = np.linalg.norm(k, axis=-1)

    def begin_query(self) -> None:
        """Opens the log of a new token's query (then add_query layer by layer, heads in order)."""
        self.log.append([[] for _ in range(self.received.shape[0])])

    def add_query(self, layer: int, head: int, keys: np.ndarray, probs: np.ndarray) -> None:
        """Records the newest query's attention at (layer, head)."""
        self.log[-1][layer].append(AttentionLog(keys, probs))
        self.received[layer, head, keys] += probs
        self.votes[layer, head, keys] += probs

    def restart_votes(self) -> None:
        self.votes[:] = 0.0

    def rate(self, scorer: str, members: Sequence[tuple[int, int]], cands: Sequence[int],
             history: int) -> tuple[dict[int, float], float]:
        """Scores (higher = keep) of the candidates of one selection unit,
        summed over its members (the share rule), and a margin for decisions
        hidden inside the scores (scissorhands' thresholds; inf otherwise).

        * h2o: score(k) = the sum of p_q(k) since k entered the cache;
        * snapkv: the votes, summed over the members, then max-pooled over
          the unit's candidate list. Resolution: pooling comes after the sum
          (a "layer"/"model" unit rates with its summed votes, as the older
          model-level reference does);
        * keynorm: score(k) = -||K_k||, summed over the members;
        * scissorhands: the number of the last ``history`` queries of the
          stream that attended to k above the uniform average, summed over
          the members.
        """
        cands = list(cands)
        margin = math.inf
        if scorer == "h2o":
            score = {p: float(sum(self.received[l, h, p] for l, h in members)) for p in cands}
        elif scorer == "snapkv":
            score = snapkv_pool(cands, {p: float(sum(self.votes[l, h, p] for l, h in members)) for p in cands})
        elif scorer == "keynorm":
            score = {p: -float(sum(self.key_norm[l, h, p] for l, h in members)) for p in cands}
        else:
            score = dict.fromkeys(cands, 0.0)
            for l, h in members:
                counts, gap = scissorhands_counts([step[l][h] for step in self.log[-history:]], cands)
                margin = min(margin, gap)
                for p in cands:
                    score[p] += counts[p]
        return score, margin


# ----------------------------------------------------------------- the trace


class Event(NamedTuple):
    """Before token ``step`` joined, the positions ``dropped`` (ascending)
    left the run; each selection unit then chose its heavy set from its old
    heavy set and these."""

    step: int
    dropped: tuple[int, ...]


class PolicyTrace(NamedTuple):
    """Everything :func:`policy_trace` decided and computed.

    ``fields``: the checked cache fields, defaults resolved; ``logits``:
    [n, vocab_rows]; ``events``: every step at which keys left the run;
    ``heavy_sets[t][l][h]``: the heavy-set positions (ascending) of (l, h)
    after step t's selection, i.e. those token t saw; ``visible[t][l][h]``:
    every key position token t's query saw at (l, h) (ascending, which is
    also cache order: sinks < heavy set < run); ``budgets``: [L, H] heavy
    keys each (layer, head) may hold, None where none is fixed (adakv
    shares H * m per layer; headaware before its first eviction);
    ``margin``: the smallest relative gap of any data-dependent decision
    that could have gone the other way (inf when none) - how far float32
    rounding may move scores before the engine decides differently. It is
    conservative: scissorhands counts every threshold comparison of the
    candidates of a selection that rejected something.
    """

    fields: CacheFields
    logits: np.ndarray
    events: list[Event]
    heavy_sets: list[tuple[tuple[tuple[int, ...], ...], ...]]
    visible: list[tuple[tuple[tuple[int, ...], ...], ...]]
    budgets: np.ndarray | None
    margin: float


def _fixed_budgets(fields: CacheFields, n_layer: int, n_head: int) -> np.ndarray | None:
    """Per-(layer, head) heavy budgets known before decoding starts."""
    if fields.policy in ("adakv", "headaware"):
        return None
    if fields.policy == "pyramidkv":
        per_layer = pyramid_budgets(fields.heavy, n_layer, fields.pyramid_beta)
        return np.repeat(np.array(per_layer, dtype=np.int64)[:, None], n_head, axis=1)
    return np.full((n_layer, n_head), fields.heavy, dtype=np.int64)


def policy_trace(ref: RefModel, ids: Sequence[int], **cache: object) -> PolicyTrace:
    """Decodes ``ids`` one token at a time under the cache policy ``cache``
    (the keyword arguments of :func:`cache_fields`) and records every decision.

    Step t:

    1. the schedule (:func:`run_schedule`) may move the span D out of the run;
       if so, each selection unit (:func:`selection_units`) keeps the best
       of "C = H ∪ D" by its scorer (:meth:`ScorerState.rate`) within its
       budget (:func:`keep_best`; adakv: :func:`adakv_select`; pyramidkv:
       :func:`pyramid_budgets`; headaware: :func:`headaware_budgets`, fixed at
       this first eviction), the rest are gone for good; then snapkv's votes
       restart;
    2. token t goes through the model. At (layer l, head h) its query sees
       the sinks [0, min(t + 1, s)), H(l, h) and the run [f, t]. With
       positions="text" keys sit at their text positions and the query at t;
       with "cache" "the keys a query sees, in the order sinks, heavy set
       (by position), run (by position), take positions 0, 1, ..., and the
       query the last one". The attention probabilities feed the scorers.

    Headaware's importance of a head: the mean over the queries before the
    first eviction of p summed over the keys k with s <= k < t - w + 1.
    """
    fields = cache_fields(**cache)  # type: ignore[arg-type]
    c = ref.cfg
    n_layer, n_head = c.n_layer, c.n_head
    s, w = fields.n_sink, fields.window
    x_all = ref._embed(ids)
    n = x_all.shape[0]
    # the schedule's m is ``heavy`` for every score policy: "pyramidkv: the schedule
    # uses the average m", and adakv/headaware share H * m per layer, m per head on average
    spans = run_schedule(n, s, w, fields.heavy, fields.compress_every, fields.max_drop, fields.overlap)
    units = selection_units(fields.share, n_layer, n_head)
    budgets = _fixed_budgets(fields, n_layer, n_head)

    keys = np.zeros((n_layer, n, n_head, c.head_dim))    # unrotated
    values = np.zeros((n_layer, n, n_head, c.head_dim))
    scores = ScorerState(n_layer, n_head, n)
    outside_mass = np.zeros((n_layer, n_head))  # headaware, summed over the queries before the first eviction
    queries_before = 0
    heavy: list[list[list[int]]] = [[[] for _ in range(n_head)] for _ in range(n_layer)]
    f = s  # the run is [f, t]

    logits = np.zeros((n, ref.vocab_rows))
    events: list[Event] = []
    heavy_sets, visible = [], []
    margin = math.inf

    for t in range(n):
        # 1. the eviction due before token t
        span = spans[t]
        if span:
            events.append(Event(t, tuple(span)))
            if fields.policy == "headaware" and budgets is None:
                budgets = np.zeros((n_layer, n_head), dtype=np.int64)
                for l in range(n_layer):
                    per_head, gap = headaware_budgets(outside_mass[l] / queries_before, fields.heavy)
                    budgets[l] = per_head
                    margin = min(margin, gap)
            heavy, gap = _select(fields, units, heavy, list(span), scores, budgets)
            margin = min(margin, gap)
            scores.restart_votes()
            f = span.stop
        # 2. token t through the model
        x = x_all[t : t + 1]
        scores.begin_query()
        seen = []
        for l in range(n_layer):
            q, k, v = ref._qkv(l, ref._ln(l, "input_layernorm", x))
            keys[l, t], values[l, t] = k[0], v[0]
            scores.add_key(l, t, k[0])
            heads = np.zeros((1, n_head, c.head_dim))
            seen_l = []
            for h in range(n_head):
                idx = np.array(list(range(min(t + 1, s))) + heavy[l][h] + list(range(f, t + 1)), dtype=np.int64)
                if fields.positions == "text":
                    key_pos, query_pos = idx, t
                else:
                    key_pos, query_pos = np.arange(len(idx)), len(idx) - 1
                kr = rotate(keys[l, idx, h][:, None, :], key_pos, c.rotary_dim, c.rotary_base)[:, 0]
                qr = rotate(q[:, h : h + 1], np.array([query_pos]), c.rotary_dim, c.rotary_base)[0, 0]
                p = softmax(kr @ qr / math.sqrt(c.head_dim))
                heads[0, h] = p @ values[l, idx, h]
                scores.add_query(l, h, idx, p)
                if fields.policy == "headaware" and budgets is None:
                    outside_mass[l, h] += p[(idx >= s) & (idx < t - w + 1)].sum()
                seen_l.append(tuple(idx.tolist()))
            seen.append(tuple(seen_l))
            x = ref._residual(l, x, ref._attn_out(l, heads))
        queries_before += 1
        logits[t] = ref._logits(x)[0]
        heavy_sets.append(tuple(tuple(tuple(hs) for hs in layer) for layer in heavy))
        visible.append(tuple(seen))
    return PolicyTrace(fields, logits, events, heavy_sets, visible, budgets, margin)


def _select(fields: CacheFields, units: list[list[tuple[int, int]]], heavy: list[list[list[int]]],
            dropped: list[int], scores: ScorerState,
            budgets: np.ndarray | None) -> tuple[list[list[list[int]]], float]:
    """New heavy sets of every (layer, head) after ``dropped`` left the run.

    The page: "each selection unit (a head, a layer or the model, per
    share) takes the candidates C = H ∪ D in position order, rates them with
    its scorer (higher = keep) and keeps the m best as its new heavy set".
    The members of a unit always hold the same set (they start empty and
    choose together), so the first member's set is the unit's.
    """
    new = [[list(hs) for hs in layer] for layer in heavy]
    margin = math.inf
    if fields.policy == "adakv":
        floor_keep = math.floor(fields.adakv_floor * fields.heavy)
        for l, layer in enumerate(heavy):
            cands = [sorted(hs + dropped) for hs in layer]
            rated, hidden = [], math.inf
            for h, cs in enumerate(cands):
                score, gap = scores.rate(fields.scorer, [(l, h)], cs, fields.history)
                rated.append(score)
                hidden = min(hidden, gap)
            new[l], gap = adakv_select(cands, rated, fields.heavy, floor_keep)
            if sum(map(len, cands)) > len(cands) * fields.heavy:  # something was rejected
                margin = min(margin, gap, hidden)
        return new, margin
    assert budgets is not None
    for members in units:
        l0, h0 = members[0]
        m = int(budgets[l0, h0])
        if m == 0:  # nothing to keep: no rating, no decision
            kept = []
        else:
            cands = sorted(heavy[l0][h0] + dropped)
            score, hidden = scores.rate(fields.scorer, members, cands, fields.history)
            kept, gap = keep_best(cands, score, m)
            if len(cands) > m:  # the hidden decisions matter only when something is rejected
                margin = min(margin, gap, hidden)
        for l, h in members:
            new[l][h] = list(kept)
    return new, margin
