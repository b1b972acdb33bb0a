"""Tests of the per-(layer, head) cache-policy reference (tests/ref_policies.py) alone.

No engine here: the reference is checked against a second, literal
implementation of H2O (the issue's wording), against the older model-level
reference (RefModel.select_trace) where the two definitions coincide, against
RefModel.stream_logits and RefModel.forward where nothing heavy is kept or
nothing was evicted, against hand-worked values of its small functions, and
against the invariants docs/CACHE_POLICIES.md implies.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pytest

from conftest import token_ids
from reference import RefModel, rotate, softmax, stream_schedule
from ref_policies import (
    POLICIES, SCORERS, AttentionLog, ScorerState, adakv_select, cache_fields, headaware_budgets, keep_best,
    policy_trace, pyramid_budgets, run_schedule, scissorhands_counts, snapkv_pool, with_salient_heads,
)

SCORE_POLICIES = [p for p in POLICIES if p not in ("window", "streaming")]


def vocab(ref: RefModel) -> int:
    return ref.w["gpt_neox.embed_in.weight"].shape[0]


@pytest.fixture(scope="module")
def salient(refs) -> dict[str, RefModel]:
    return {name: with_salient_heads(ref) for name, ref in refs.items()}


def score_decisions(tr) -> int:
    """How many (eviction, layer, head) selections evicted keys that are
    neither the oldest nor the newest candidates: decisions position alone
    cannot explain."""
    count = 0
    for e in tr.events:
        before = [hs for layer in tr.heavy_sets[e.step - 1] for hs in layer]
        after = [hs for layer in tr.heavy_sets[e.step] for hs in layer]
        for old, new in zip(before, after):
            cands = sorted(set(old) | set(e.dropped))
            gone = [p for p in cands if p not in new]
            by_position = gone in (cands[: len(gone)], cands[len(cands) - len(gone) :])
            count += bool(gone) and not by_position
    return count


def first_event_step(events) -> int:
    return events[0].step if events else math.inf


# ----------------------------------------------------------------- H2O as the issue words it


def literal_h2o(ref: RefModel, ids: np.ndarray, n_sink: int, window: int, heavy: int, compress_every: int = 1,
                positions: str = "text") -> tuple[np.ndarray, list[list[list[tuple[int, ...]]]]]:
    """H2O written from the issue text alone, with none of ref_policies' machinery
    (no schedule, no run, no candidate sets): logits and, per step, the keys
    every (layer, head) holds once the token is added.

    "Each (layer, head) keeps at most n_sink + window + heavy keys. A key's
    score is the sum of the attention probabilities it received from every
    query of that (layer, head) since it entered the cache, its own query
    included. With compress_every=1, before a token's key is added to a full
    set, the key with the lowest score among those that are neither sinks
    (text position < n_sink) nor among the `window` most recent positions
    (the new token's included) is evicted; ties evict the older key. With
    compress_every=R, the set may grow R-1 past its budget and is then cut
    back to it by the same rule." (cut back to the budget once the new token
    is in, one key at a time.)
    """
    c = ref.cfg
    budget = n_sink + window + heavy
    x_all = ref._embed(ids)
    n = len(ids)
    keys = np.zeros((c.n_layer, n, c.n_head, c.head_dim))
    values = np.zeros((c.n_layer, n, c.n_head, c.head_dim))
    score = np.zeros((c.n_layer, c.n_head, n))
    held = [[[] for _ in range(c.n_head)] for _ in range(c.n_layer)]
    logits = np.zeros((n, ref.vocab_rows))
    history = []
    for t in range(n):
        for l in range(c.n_layer):
            for h in range(c.n_head):
                ks = held[l][h]
                if len(ks) + 1 > budget + compress_every - 1:
                    while len(ks) + 1 > budget:
                        open_ = [p for p in ks if p >= n_sink and p < t - window + 1]
                        ks.remove(min(open_, key=lambda p: (score[l, h, p], p)))
                ks.append(t)
        x = x_all[t : t + 1]
        for l in range(c.n_layer):
            q, k, v = ref._qkv(l, ref._ln(l, "input_layernorm", x))
            keys[l, t], values[l, t] = k[0], v[0]
            heads = np.zeros((1, c.n_head, c.head_dim))
            for h in range(c.n_head):
                idx = np.array(held[l][h])
                key_pos, query_pos = (idx, t) if positions == "text" else (np.arange(len(idx)), len(idx) - 1)
                kr = rotate(keys[l, idx, h][:, None, :], key_pos, c.rotary_dim, c.rotary_base)[:, 0]
                qr = rotate(q[:, h : h + 1], np.array([query_pos]), c.rotary_dim, c.rotary_base)[0, 0]
                p = softmax(kr @ qr / math.sqrt(c.head_dim))
                score[l, h, idx] += p
                heads[0, h] = p @ values[l, idx, h]
            x = ref._residual(l, x, ref._attn_out(l, heads))
        logits[t] = ref._logits(x)[0]
        history.append([[tuple(ks) for ks in layer] for layer in held])
    return logits, history


LITERAL_CASES = [
    # model, n_sink, window, heavy, compress_every, positions, n
    ("parallel", 2, 6, 4, 1, "text", 50),
    ("parallel", 0, 5, 3, 1, "text", 45),
    ("parallel", 4, 8, 2, 1, "text", 60),
    ("parallel", 1, 1, 5, 1, "text", 40),
    ("parallel", 2, 6, 4, 1, "cache", 50),
    ("parallel", 3, 4, 6, 3, "text", 50),
    ("sequential", 2, 5, 4, 1, "text", 40),
    ("sequential", 1, 4, 3, 4, "cache", 40),
]


@pytest.mark.parametrize("case", LITERAL_CASES, ids=["-".join(map(str, c)) for c in LITERAL_CASES])
def test_h2o_matches_the_literal_issue_text(salient, case):
    model, s, w, m, r, positions, n = case
    ref = salient[model]
    ids = token_ids(n, vocab(ref), seed=s + 10 * w + 100 * m + r)
    want_logits, want_held = literal_h2o(ref, ids, s, w, m, r, positions)
    tr = policy_trace(ref, ids, policy="h2o", n_sink=s, window=w, heavy=m, compress_every=r, positions=positions)
    for t in range(n):
        assert tr.visible[t] == tuple(tuple(layer) for layer in want_held[t]), f"step {t}"
        assert max(len(seen) for layer in tr.visible[t] for seen in layer) <= s + w + m + r - 1
    np.testing.assert_allclose(tr.logits, want_logits, rtol=1e-12, atol=1e-12)
    # not degenerate: heads choose differently, and scores decide, not positions
    assert any(len(set(layer)) > 1 for step in tr.heavy_sets for layer in step)
    assert score_decisions(tr) > 0


# ----------------------------------------------------------------- the older model-level reference
#
# RefModel.select_trace is the model-level variant (one pinned set D for every
# layer and head, scores summed over all of them, positions by place in the
# cache): share="model", positions="cache" here. The two schedules differ
# while the heavy set fills. select_trace does not count D in the cache size,
# so it starts evicting once the run exceeds window + R - 1 and drops R - o
# keys at a time into D (keeping all of them while |D| <= m); this page counts
# c = min(m, dropped so far), so nothing leaves before the cache holds
# B + R - 1 = s + w + m + R - 1 keys and the first eviction drops m + R - o at
# once. Once m keys have left, both rules are the same. Hence:
#
# * when m is a multiple of R - o (and max_drop never binds), select_trace's
#   early evictions drop exactly m keys, all kept, before the first eviction
#   here, at the same step as its (m / (R - o) + 1)-th; the two caches show
#   the same keys at every step. h2o and keynorm scores do not depend on when
#   evictions happen, so logits and sets coincide exactly;
# * snapkv does not coincide in general: its votes restart at every eviction,
#   and select_trace's early evictions (which drop nothing for good) restart
#   them, so its first real selection pools the votes of the last R - o queries
#   where this page pools those since the start. It coincides when every
#   selection has at most 4 candidates (m + R - o <= 4): then every pooled
#   score is the same maximum and both keep the m newest;
# * when m is not a multiple of R - o the evictions are out of phase for good
#   (both cut the run to w + o keys, at different steps).


class Old(NamedTuple):
    s: int
    w: int
    m: int
    r: int
    o: int = 0
    max_drop: int = 0
    seed: int = 7  # token ids; summed over the model, scores decide something only with some prompts


SAME_SCHEDULE = [Old(2, 6, 3, 1), Old(2, 6, 4, 2), Old(1, 5, 4, 3, 1, seed=6), Old(0, 6, 6, 3), Old(3, 6, 4, 2, 0, 6)]
TINY_CANDIDATES = [Old(2, 6, 3, 1), Old(2, 5, 2, 2), Old(1, 6, 2, 3, 1)]
OLD_CASES = ([("h2o", c) for c in SAME_SCHEDULE] + [("keynorm", c) for c in SAME_SCHEDULE]
             + [("snapkv", c) for c in TINY_CANDIDATES])


def old_and_new(ref, policy: str, c: Old, n: int = 60):
    ids = token_ids(n, vocab(ref), seed=c.seed)
    old = ref.select_trace(ids, c.s, c.w, policy, c.m, c.r, c.max_drop, c.o)
    new = policy_trace(ref, ids, policy=policy, n_sink=c.s, window=c.w, heavy=c.m, compress_every=c.r,
                       max_drop=c.max_drop, overlap=c.o, share="model", positions="cache")
    return old, new


@pytest.mark.parametrize("policy,c", OLD_CASES, ids=[f"{p}-{c}" for p, c in OLD_CASES])
def test_model_share_matches_select_trace(salient, policy, c):
    old, new = old_and_new(salient["parallel"], policy, c)
    first = new.events[0].step
    for t in range(len(new.logits)):
        for layer_heavy, layer_seen in zip(new.heavy_sets[t], new.visible[t]):
            for hs, seen in zip(layer_heavy, layer_seen):
                assert seen == tuple(old.visible[t].tolist()), f"step {t}"
                # before the first eviction here, select_trace's D holds keys that are still in the run here
                assert t < first or hs == tuple(old.pinned[t].tolist()), f"step {t}"
    np.testing.assert_allclose(new.logits, old.logits, rtol=1e-12, atol=1e-12)
    # events: select_trace's early ones drop m keys in all, then the same steps;
    # the first eviction here drops those m keys too
    early = [e for e in old.events if e.step < first]
    assert sum(e.dropped for e in early) == c.m
    late = [(e.step, e.dropped) for e in old.events if e.step >= first]
    mine = [(e.step, len(e.dropped)) for e in new.events]
    assert late[1:] == mine[1:] and late[0][0] == mine[0][0] and mine[0][1] == late[0][1] + c.m
    if policy != "snapkv":
        assert score_decisions(new) > 0


@pytest.mark.parametrize("c", [Old(2, 6, 4, 2), Old(1, 5, 6, 4, 1)])
def test_model_share_snapkv_same_cache_sizes_as_select_trace(salient, c):
    """snapkv with more candidates: the same number of keys at every step,
    and (as the comment above explains) not always the same keys."""
    old, new = old_and_new(salient["parallel"], "snapkv", c, n=60)
    assert [len(v) for v in old.visible] == [len(step[0][0]) for step in new.visible]
    assert any(tuple(old.pinned[t].tolist()) != new.heavy_sets[t][0][0] for t in range(60))


# ----------------------------------------------------------------- where nothing heavy is kept


STREAM_SCHEDULES = [(2, 6, 1, 0, 0), (3, 5, 4, 0, 1), (2, 7, 5, 2, 2), (0, 6, 3, 1, 0)]


@pytest.mark.parametrize("sched", STREAM_SCHEDULES)
def test_window_and_streaming_equal_stream_logits(refs, sched):
    s, w, r, max_drop, o = sched
    ref = refs["parallel"]
    ids = token_ids(45, vocab(ref), seed=5)
    for policy, sinks in (("streaming", s), ("window", 0)):
        tr = policy_trace(ref, ids, policy=policy, n_sink=s, window=w, compress_every=r, max_drop=max_drop,
                          overlap=o)
        want, events = ref.stream_logits(ids, sinks, w, r, max_drop, o, return_events=True)
        np.testing.assert_allclose(tr.logits, want, rtol=1e-12, atol=1e-12)
        assert [(e.step, len(e.dropped)) for e in tr.events] == [(e.step, e.dropped) for e in events]
        assert all(hs == () for step in tr.heavy_sets for layer in step for hs in layer)


@pytest.mark.parametrize("policy", SCORE_POLICIES)
def test_score_policies_without_heavy_keys_are_streaming(refs, policy):
    s, w, r, max_drop, o = STREAM_SCHEDULES[2]
    ref = refs["parallel"]
    ids = token_ids(40, vocab(ref), seed=6)
    tr = policy_trace(ref, ids, policy=policy, n_sink=s, window=w, heavy=0, compress_every=r, max_drop=max_drop,
                      overlap=o, positions="cache")
    np.testing.assert_allclose(tr.logits, ref.stream_logits(ids, s, w, r, max_drop, o), rtol=1e-12, atol=1e-12)


def test_schedule_without_heavy_keys_is_stream_schedule():
    for s in (0, 1, 3):
        for w in (1, 4, 7):
            for r in (1, 2, 5):
                for max_drop in (0, 1, 3):
                    for o in (0, 1, 3):
                        spans = run_schedule(80, s, w, 0, r, max_drop, o)
                        visible, events = stream_schedule(80, s, w, r, max_drop, o)
                        assert [(t, len(d)) for t, d in enumerate(spans) if d] == [(e.step, e.dropped)
                                                                                   for e in events]


# ----------------------------------------------------------------- before the first eviction


@pytest.mark.parametrize("policy", POLICIES)
def test_positions_agree_until_the_first_eviction(refs, policy):
    """Until something leaves, every policy is full attention, at text
    positions or cache slots alike (they are the same numbers then)."""
    ref = refs["parallel"]
    ids = token_ids(40, vocab(ref), seed=7)
    heavy = 0 if policy in ("window", "streaming") else 4
    traces = [policy_trace(ref, ids, policy=policy, n_sink=2, window=8, heavy=heavy, compress_every=3,
                           positions=pos) for pos in ("text", "cache")]
    first = first_event_step(traces[0].events)
    assert first == first_event_step(traces[1].events) < 40
    full = ref.forward(ids)
    np.testing.assert_allclose(traces[0].logits[:first], full[:first], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(traces[1].logits[:first], full[:first], rtol=1e-9, atol=1e-9)
    # afterwards the modes differ where the visible keys have gaps; the window
    # policy's keys are one contiguous run, and rotary attention sees only
    # distances, so there the two modes still agree
    gap = np.abs(traces[0].logits[first:] - traces[1].logits[first:]).max()
    assert gap < 1e-9 if policy == "window" else gap > 1e-6


# ----------------------------------------------------------------- invariants


INVARIANT_SCHEDULES = [
    # n_sink, window, heavy, compress_every, max_drop, overlap
    (2, 6, 4, 1, 0, 0),
    (1, 5, 3, 4, 0, 1),
    (3, 6, 4, 5, 2, 2),
    (0, 4, 6, 3, 1, 0),
]
POLICY_SHARES = ([("window", "head"), ("streaming", "head")]
                 + [(p, sh) for p in SCORERS for sh in ("head", "layer", "model")]
                 + [("pyramidkv", "head"), ("pyramidkv", "layer"), ("adakv", "head"), ("headaware", "head")])


def check_invariants(tr, n: int, n_layer: int, n_head: int) -> None:
    f = tr.fields
    s, w, r, o = f.n_sink, f.window, f.compress_every, f.overlap
    # the events: contiguous spans, past the sinks, each starting where the last ended
    run_start = np.full(n, s)
    start = s
    for e in tr.events:
        assert e.dropped == tuple(range(start, start + len(e.dropped))) and len(e.dropped) > 0
        start += len(e.dropped)
        run_start[e.step :] = start
        assert f.max_drop == 0 or len(e.dropped) <= f.max_drop
    gone = [[set() for _ in range(n_head)] for _ in range(n_layer)]
    m_adakv = n_head * f.heavy - (n_head - 1) * math.floor(f.adakv_floor * f.heavy)  # the rest keep their floor
    for t in range(n):
        dropped = int(run_start[t]) - s
        sinks = tuple(range(min(t + 1, s)))
        run = tuple(range(int(run_start[t]), t + 1))
        for l in range(n_layer):
            for h in range(n_head):
                seen, hs = tr.visible[t][l][h], tr.heavy_sets[t][l][h]
                # sinks, heavy set, run, in that (= position) order, nothing else
                assert seen == sinks + hs + run, (t, l, h)
                assert all(s <= p < run_start[t] for p in hs)
                # an evicted key never returns
                assert not gone[l][h] & set(seen)
                gone[l][h] |= set(range(t)) - set(seen)
                # the run never passes w + m + max(R - 1, o) keys (m: the schedule's);
                # the heavy set holds at most its own budget
                m, m_h = f.heavy, (m_adakv if tr.budgets is None else int(tr.budgets[l, h]))
                assert len(hs) <= m_h
                if f.max_drop:
                    # a drain that starts before the heavy set is full: the keys it
                    # drops fill the heavy set while the run shrinks by only
                    # max_drop - 1 a step (the page's drop counts the run alone)
                    assert len(seen) <= s + w + m + max(r - 1, o) + m_h
                else:
                    # before the first eviction the cache is one run of up to
                    # B + R - 1 keys, after it the heavy sets are full
                    assert len(seen) <= s + w + max(m, m_h) + max(r - 1, o)
                if tr.budgets is not None:
                    assert len(hs) == min(m_h, dropped)
                if r == 1 and o == 0 and f.max_drop == 0 and f.policy in SCORERS:
                    assert len(seen) <= s + w + m  # "the cache holds at most B keys (its own included)"
        if f.share == "layer":  # one set per selection unit
            assert all(len(set(layer)) == 1 for layer in tr.heavy_sets[t])
        if f.share == "model":
            assert len({hs for layer in tr.heavy_sets[t] for hs in layer}) == 1


INVARIANT_N = 45


@pytest.fixture(scope="module")
def invariant_trace(salient):
    """policy_trace on the salient "parallel" model for one POLICY_SHARES x
    INVARIANT_SCHEDULES case, computed once."""
    ref = salient["parallel"]
    ids = token_ids(INVARIANT_N, vocab(ref), seed=8)
    done = {}

    def get(policy: str, share: str, sched: tuple[int, ...]):
        if (policy, share, sched) not in done:
            s, w, m, r, max_drop, o = sched
            heavy = 0 if policy in ("window", "streaming") else m
            history = 4 if policy == "scissorhands" and share == "head" else 32
            done[policy, share, sched] = policy_trace(ref, ids, policy=policy, n_sink=s, window=w, heavy=heavy,
                                                      compress_every=r, max_drop=max_drop, overlap=o, share=share,
                                                      history=history)
        return done[policy, share, sched]

    return get


@pytest.mark.parametrize("sched", INVARIANT_SCHEDULES, ids=lambda s: "s{}w{}m{}R{}d{}o{}".format(*s))
@pytest.mark.parametrize("policy,share", POLICY_SHARES, ids=[f"{p}-{sh}" for p, sh in POLICY_SHARES])
def test_invariants(salient, invariant_trace, policy, share, sched):
    cfg = salient["parallel"].cfg
    m = sched[2]
    tr = invariant_trace(policy, share, sched)
    assert tr.events, "nothing was ever evicted"
    check_invariants(tr, INVARIANT_N, cfg.n_layer, cfg.n_head)
    if policy == "adakv":
        check_adakv(tr, INVARIANT_N, cfg.n_head)
    if policy == "headaware":
        assert tr.budgets.sum(axis=1).tolist() == [cfg.n_head * m] * cfg.n_layer
        assert tr.budgets.min() >= 1
    if policy == "pyramidkv":
        assert tr.budgets[:, 0].tolist() == pyramid_budgets(m, cfg.n_layer, 20)


SCORE_SHARES = [(p, sh) for p, sh in POLICY_SHARES if p not in ("window", "streaming")]


@pytest.mark.parametrize("policy,share", SCORE_SHARES, ids=[f"{p}-{sh}" for p, sh in SCORE_SHARES])
def test_scores_decide_something(invariant_trace, policy, share):
    """The invariant cases are not degenerate: in some schedule a selection
    evicts keys that are neither the oldest nor the newest candidates (snapkv
    with R = 1 cannot: 5 candidates pool to one maximum)."""
    assert sum(score_decisions(invariant_trace(policy, share, sched)) for sched in INVARIANT_SCHEDULES) > 0


def full_attention(ref: RefModel, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Attention probabilities [layer, head, query, key] and key norms
    [layer, head, key] of a plain causal forward (text positions): what every
    policy computes before its first eviction."""
    c = ref.cfg
    x = ref._embed(ids)
    n = len(ids)
    pos = np.arange(n)
    probs = np.zeros((c.n_layer, c.n_head, n, n))
    norms = np.zeros((c.n_layer, c.n_head, n))
    for l in range(c.n_layer):
        q, k, v = ref._qkv(l, ref._ln(l, "input_layernorm", x))
        norms[l] = np.linalg.norm(k, axis=-1).T
        q, k = rotate(q, pos, c.rotary_dim, c.rotary_base), rotate(k, pos, c.rotary_dim, c.rotary_base)
        scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(c.head_dim)
        scores[:, np.triu(np.ones((n, n), dtype=bool), k=1)] = -np.inf
        probs[l] = softmax(scores)
        x = ref._residual(l, x, ref._attn_out(l, np.einsum("hqk,khd->qhd", probs[l], v)))
    return probs, norms


@pytest.fixture(scope="module")
def plain_forward(salient) -> tuple[np.ndarray, np.ndarray]:
    """full_attention of the invariant cases' model and prompt."""
    ref = salient["parallel"]
    return full_attention(ref, token_ids(INVARIANT_N, vocab(ref), seed=8))


@pytest.mark.parametrize("sched", INVARIANT_SCHEDULES, ids=lambda s: "s{}w{}m{}R{}d{}o{}".format(*s))
@pytest.mark.parametrize("policy,share", [(p, sh) for p in SCORERS for sh in ("head", "layer")])
def test_first_selection_from_a_plain_forward(salient, invariant_trace, plain_forward, policy, share, sched):
    """The first selection sees only full-attention queries, so its scores
    follow from a plain forward: h2o all attention received so far; snapkv
    the same (no earlier eviction), max-pooled over +-3 neighbours in the
    candidate list; scissorhands the count of the last ``history`` queries
    with p > 1 / (keys seen) = 1 / (q + 1); keynorm minus the key norm.
    Summed over the unit's heads; the m best kept, ties to the larger position."""
    m = sched[2]
    ref = salient["parallel"]
    probs, norms = plain_forward
    tr = invariant_trace(policy, share, sched)
    first = tr.events[0]
    t, cands = first.step, list(first.dropped)
    if policy in ("h2o", "snapkv"):
        score = probs[:, :, :t, :].sum(axis=2)
    elif policy == "scissorhands":
        history = 4 if share == "head" else 32
        q = np.arange(max(0, t - history), t)
        score = (probs[:, :, q, :] > 1.0 / (q + 1)[None, None, :, None]).sum(axis=2).astype(float)
    else:
        score = -norms
    for l in range(ref.cfg.n_layer):
        for h in range(ref.cfg.n_head):
            unit = score[l, h] if share == "head" else score[l].sum(axis=0)
            rated = {p: unit[p] for p in cands}
            if policy == "snapkv":
                rated = {p: max(unit[c] for c in cands[max(0, i - 3) : i + 4]) for i, p in enumerate(cands)}
            best = sorted(cands, key=lambda p: (rated[p], p), reverse=True)[:m]
            assert tr.heavy_sets[t][l][h] == tuple(sorted(best)), (l, h)


@pytest.mark.parametrize("sched", INVARIANT_SCHEDULES, ids=lambda s: "s{}w{}m{}R{}d{}o{}".format(*s))
def test_headaware_budgets_follow_the_attention_before_the_first_eviction(invariant_trace, plain_forward, sched):
    """The budgets are those of the importance computed from a plain forward:
    the mean over the queries t before the first eviction of the attention
    on keys k with s <= k < t - w + 1."""
    s, w, m = sched[:3]
    tr = invariant_trace("headaware", "head", sched)
    probs, _ = plain_forward
    first = tr.events[0].step
    mass = np.zeros(probs.shape[:2])
    for t in range(first):
        mass += probs[:, :, t, s : max(s, t - w + 1)].sum(axis=-1)
    for l in range(probs.shape[0]):
        assert tr.budgets[l].tolist() == headaware_budgets(mass[l] / first, m)[0]
    assert (tr.budgets != m).any()  # the heads' importances differ


@pytest.mark.parametrize("sched", INVARIANT_SCHEDULES, ids=lambda s: "s{}w{}m{}R{}d{}o{}".format(*s))
def test_keynorm_layer0_keeps_the_lowest_key_norms(salient, invariant_trace, sched):
    """keynorm scores never change, so a head's heavy set is the m keys of
    lowest norm among all that left the run (ties: the larger position).
    Layer 0's keys depend on the token alone, so their norms are known
    without decoding."""
    s, m = sched[0], sched[2]
    ref = salient["parallel"]
    ids = token_ids(INVARIANT_N, vocab(ref), seed=8)
    _, k, _ = ref._qkv(0, ref._ln(0, "input_layernorm", ref._embed(ids)))
    norm = np.linalg.norm(k, axis=-1)  # [position, head]
    tr = invariant_trace("keynorm", "head", sched)
    f = s
    for t in range(INVARIANT_N):
        f += sum(len(e.dropped) for e in tr.events if e.step == t)
        for h in range(ref.cfg.n_head):
            best = sorted(range(s, f), key=lambda p: (-norm[p, h], p), reverse=True)[:m]
            assert tr.heavy_sets[t][0][h] == tuple(sorted(best)), (t, h)


def check_adakv(tr, n: int, n_head: int) -> None:
    """AdaKV: every head keeps at least floor(adakv_floor * m) (once that
    many keys have left), and a layer fills its H * m slots."""
    m = tr.fields.heavy
    floor_keep = math.floor(tr.fields.adakv_floor * m)
    start = tr.fields.n_sink
    for t in range(n):
        dropped = sum(len(e.dropped) for e in tr.events if e.step <= t)
        for layer in tr.heavy_sets[t]:
            assert min(len(hs) for hs in layer) >= min(floor_keep, dropped)
            assert sum(len(hs) for hs in layer) == min(n_head * m, n_head * dropped)
            assert all(start <= p < start + dropped for hs in layer for p in hs)


def test_adakv_moves_slots_between_heads(refs):
    ref = refs["parallel"]
    tr = policy_trace(ref, token_ids(50, vocab(ref), seed=9), policy="adakv", n_sink=2, window=6, heavy=4,
                      compress_every=4)
    sizes = [len(hs) for layer in tr.heavy_sets[-1] for hs in layer]
    assert max(sizes) > 4 and min(sizes) < 4


# ----------------------------------------------------------------- policies that must reduce to others


def test_adakv_with_full_floor_is_snapkv(refs):
    """adakv_floor = 1: every head keeps its m best and no slot is left to share."""
    ref = refs["parallel"]
    ids = token_ids(50, vocab(ref), seed=10)
    common = dict(n_sink=2, window=6, heavy=4, compress_every=4)
    a = policy_trace(ref, ids, policy="adakv", adakv_floor=1.0, **common)
    b = policy_trace(ref, ids, policy="snapkv", **common)
    assert a.heavy_sets == b.heavy_sets
    np.testing.assert_array_equal(a.logits, b.logits)


@pytest.mark.parametrize("scorer", SCORERS)
def test_one_layer_layer_share_is_model_share_and_pyramid_is_plain(salient, scorer):
    """On a one-layer model a layer is the model, and pyramidkv's single
    layer keeps m (with the same scorer it is the plain policy)."""
    ref = salient["draft"]
    assert ref.cfg.n_layer == 1
    ids = token_ids(50, vocab(ref), seed=11)
    common = dict(n_sink=1, window=5, heavy=4, compress_every=3)
    layer = policy_trace(ref, ids, policy=scorer, share="layer", **common)
    model = policy_trace(ref, ids, policy=scorer, share="model", **common)
    pyramid = policy_trace(ref, ids, policy="pyramidkv", scorer=scorer, share="layer", **common)
    assert layer.heavy_sets == model.heavy_sets == pyramid.heavy_sets
    np.testing.assert_array_equal(layer.logits, model.logits)
    np.testing.assert_array_equal(layer.logits, pyramid.logits)
    head = policy_trace(ref, ids, policy=scorer, share="head", **common)  # heads differ once they choose alone
    assert any(len(set(layer)) > 1 for step in head.heavy_sets for layer in step)


# ----------------------------------------------------------------- the small functions by hand


def test_run_schedule_by_hand():
    spans = run_schedule(16, 2, 4, 3)  # s=2, w=4, m=3, R=1: full at s + w + m = 9 keys
    assert [(t, list(d)) for t, d in enumerate(spans) if d] == [(9, [2, 3, 4, 5])] + [
        (t, [t - 4]) for t in range(10, 16)]
    spans = run_schedule(14, 2, 4, 3, max_drop=2)  # the 4 keys due at step 9 leave over 9..11
    assert [(t, list(d)) for t, d in enumerate(spans) if d] == [
        (9, [2, 3]), (10, [4, 5]), (11, [6, 7]), (12, [8]), (13, [9])]
    spans = run_schedule(20, 1, 3, 2, compress_every=3, overlap=1)  # up to 1 + 3 + 2 + 2 = 8 keys
    assert [(t, list(d)) for t, d in enumerate(spans) if d] == [
        (8, [1, 2, 3, 4]), (10, [5, 6]), (12, [7, 8]), (14, [9, 10]), (16, [11, 12]), (18, [13, 14])]


def test_a_drain_before_the_heavy_set_is_full_overshoots():
    """A corner of the page's schedule, kept as written: the first eviction is
    due when the cache would pass B + R - 1 keys, and drop = (t - f) + 1 -
    (w + o) counts the run alone. With max_drop = 1 a drain never ends (the
    run gains a key and loses one every step, as in stream_schedule), so the
    run stays at w + m + R - 1 keys while the keys it drops fill the heavy
    set: the cache settles at B + R - 1 + m, not B + R - 1."""
    s, w, m, r = 0, 4, 6, 3
    spans = run_schedule(60, s, w, m, r, max_drop=1)
    first = next(t for t, d in enumerate(spans) if d)
    assert first == s + w + m + r - 1 and all(len(d) == 1 for d in spans[first:])
    dropped = 60 - first
    run = (60 - 1) - (s + dropped) + 1
    assert run == w + m + r - 1 and run + min(m, dropped) == s + w + m + r - 1 + m


def test_keep_best_ties_keep_the_larger_position():
    kept, margin = keep_best([3, 5, 8, 9], {3: 1.0, 5: 2.0, 8: 1.0, 9: 0.5}, 2)
    # 8 beats 3 on position alone, an exact tie that rounding cannot flip: the margin is 2.0 against 1.0
    assert kept == [5, 8] and margin == pytest.approx(0.5)
    kept, margin = keep_best([3, 5, 8, 9], {3: 1.0, 5: 2.0, 8: 1.0, 9: 0.5}, 3)
    assert kept == [3, 5, 8] and margin == pytest.approx(0.5)
    assert keep_best([4, 7], {4: 0.0, 7: 1.0}, 3) == ([4, 7], math.inf)


def test_snapkv_pool_by_hand():
    cands = [2, 3, 5, 8, 9, 11, 12, 20, 30]
    votes = dict(zip(cands, [9.0, 0, 0, 0, 0, 1, 0, 0, 7]))
    # index i takes the max over indices i-3 .. i+3 of the position-sorted list
    assert snapkv_pool(cands, votes) == dict(zip(cands, [9.0, 9, 9, 9, 1, 7, 7, 7, 7]))


def test_scissorhands_counts_by_hand():
    log = [AttentionLog(np.array([0, 1, 2]), np.array([0.5, 0.3, 0.2])),      # above 1/3: key 0
           AttentionLog(np.array([0, 2, 3]), np.array([0.2, 0.335, 0.465])),  # above 1/3: keys 2, 3
           AttentionLog(np.array([0, 2, 3, 4]), np.array([0.3, 0.3, 0.25, 0.15]))]  # above 1/4: 0, 2 (not 3: equal)
    counts, margin = scissorhands_counts(log, [0, 1, 2, 3])
    assert counts == {0: 2, 1: 0, 2: 2, 3: 1}
    assert margin == 0.0  # 0.25 against 1/4: a tie
    assert scissorhands_counts(log[:2], [0, 1, 2, 3])[1] == pytest.approx((0.335 - 1 / 3) / 0.335)


def test_scorer_state_votes_restart_and_received_accumulates():
    st = ScorerState(1, 2, 5)
    st.begin_query()
    st.add_query(0, 0, np.array([0, 1]), np.array([0.25, 0.75]))
    st.add_query(0, 1, np.array([0, 1]), np.array([0.5, 0.5]))
    st.restart_votes()
    st.begin_query()
    st.add_query(0, 0, np.array([0, 2]), np.array([0.5, 0.5]))
    st.add_query(0, 1, np.array([1, 2]), np.array([0.1, 0.9]))
    np.testing.assert_allclose(st.received[0, 0], [0.75, 0.75, 0.5, 0, 0])
    np.testing.assert_allclose(st.votes[0, 0], [0.5, 0, 0.5, 0, 0])
    both = [(0, 0), (0, 1)]
    assert st.rate("h2o", both, [0, 1, 2], 32)[0] == pytest.approx({0: 1.25, 1: 1.35, 2: 1.4})
    assert st.rate("snapkv", both, [0, 1, 2], 32)[0] == pytest.approx({0: 1.4, 1: 1.4, 2: 1.4})
    # scissorhands over the last query only: above 1/2 is head 1's key 2
    assert st.rate("scissorhands", both, [0, 1, 2], 1)[0] == {0: 0, 1: 0, 2: 1}


def test_adakv_select_by_hand():
    cands = [[2, 3, 4], [2, 3, 4]]
    scores = [{2: 5.0, 3: 1.0, 4: 1.0}, {2: 1.0, 3: 3.0, 4: 2.0}]
    # m = 2, floor 1: head 0 keeps 2, head 1 keeps 3; the other two slots go to
    # head 1's 4 (2.0), then the tie at 1.0: larger position (4 of head 0, over
    # head 0's 3 and head 1's 2)
    kept, margin = adakv_select(cands, scores, 2, 1)
    assert kept == [[2, 4], [3, 4]]
    assert margin == pytest.approx(1 / 3)  # head 1's floor: 3.0 kept over 1.0
    # the last slot is a tie on score and position between heads: the lower head index wins
    assert adakv_select([[3, 5], [3, 5]], [{3: 1.0, 5: 2.0}, {3: 1.0, 5: 0.0}], 1, 0)[0] == [[3, 5], []]
    assert adakv_select([[3, 5], [3, 5]], [{3: 1.0, 5: 0.0}, {3: 1.0, 5: 2.0}], 1, 0)[0] == [[3], [5]]
    # at most H * m candidates: everything stays, no decision
    assert adakv_select([[2], [3, 4]], [{2: 0.0}, {3: 0.0, 4: 1.0}], 2, 1) == ([[2], [3, 4]], math.inf)


@pytest.mark.parametrize("m,L,beta,want", [
    (8, 4, 20, [16, 10, 5, 1]),   # m_top = 1, m_0 = 15: 15, 10.33, 5.67, 1 -> 31, +1 to layer 0
    (5, 4, 20, [10, 6, 3, 1]),    # 9, 6.33, 3.67, 1
    (50, 3, 20, [97, 50, 3]),     # m / beta = 2.5 rounds up to 3 (half-to-even would give 98, 50, 2)
    (7, 4, 2, [10, 8, 6, 4]),     # m_top = round(3.5) = 4
    (4, 2, 20, [7, 1]),
    (1, 3, 20, [1, 1, 1]),
    (6, 1, 20, [6]),
    (0, 3, 20, [0, 0, 0]),
])
def test_pyramid_budgets_by_hand(m, L, beta, want):
    assert pyramid_budgets(m, L, beta) == want


def test_pyramid_budgets_sum_and_decrease():
    for m in range(1, 40):
        for L in range(2, 9):
            for beta in (1, 2, 5, 20, 7.5):
                b = pyramid_budgets(m, L, beta)
                assert sum(b) == L * m
                assert all(x >= y for x, y in zip(b, b[1:]))
                assert b[-1] == max(1, math.floor(m / beta + 0.5))  # the top layer takes no remainder
                assert (b[0] > b[-1]) == (m > b[-1])


def test_headaware_budgets():
    # r = 0.5, 1, 1, 1 (sum 3.5), H m = 8: 1.14, 2.29 x 3 -> 1, 2, 2, 2 and one
    # remainder, to the first of the equal fractional parts
    assert headaware_budgets(np.array([0.1, 0.3, 0.3, 0.3]), 2)[0] == [1, 3, 2, 2]
    assert headaware_budgets(np.array([0.2, 0.2, 0.2, 0.2]), 3) == ([3, 3, 3, 3], math.inf)
    assert headaware_budgets(np.array([0.4, 0.1]), 0)[0] == [0, 0]
    rng = np.random.default_rng(0)
    for _ in range(300):
        n_head, m = int(rng.integers(1, 9)), int(rng.integers(1, 12))
        mass = rng.random(n_head) ** 3
        b, margin = headaware_budgets(mass, m)
        assert sum(b) == n_head * m and min(b) >= 1 and margin > 0
        order = np.argsort(mass, kind="stable")
        assert all(b[i] <= b[j] for i, j in zip(order, order[1:]))  # more mass outside the window, more slots


def test_bad_fields_raise():
    with pytest.raises(ValueError):
        cache_fields("lru", window=4)
    with pytest.raises(ValueError):
        cache_fields("streaming", window=4, heavy=2)
    with pytest.raises(ValueError):
        cache_fields("h2o", window=4, scorer="keynorm")
    with pytest.raises(ValueError):
        cache_fields("adakv", window=4, share="layer")
    with pytest.raises(ValueError):
        cache_fields("pyramidkv", window=4, share="model")
    with pytest.raises(ValueError):
        cache_fields("scissorhands", window=4, history=65)
    with pytest.raises(ValueError):
        cache_fields("h2o", window=0)
    with pytest.raises(ValueError):
        cache_fields("h2o", window=4, positions="slot")
    f = cache_fields("window", window=4, n_sink=3)
    assert (f.n_sink, f.positions, f.scorer) == (0, "cache", None)
    f = cache_fields("headaware", window=4, max_drop=None)
    assert (f.positions, f.scorer, f.max_drop) == ("text", "h2o", 0)
