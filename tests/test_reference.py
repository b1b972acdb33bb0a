"""Tests of the NumPy reference (tests/reference.py) itself.

The reference is checked against Hugging Face logits recorded by
scripts/make_hf_golden.py (no torch needed here), then its bounded-cache
modes are checked for agreement with the full forward where they must agree,
and its eviction schedule against hand-worked examples and invariants.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import (  # noqa: E402
    SELECT_POLICIES, Eviction, RefModel, rotate, snapkv_pool, softmax, stream_schedule, top_by_score,
    uniform_refresh,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODES = ["hf_tiny_parallel", "hf_tiny_sequential"]


@pytest.fixture(scope="module", params=MODES)
def fixture(request: pytest.FixtureRequest) -> tuple[RefModel, dict[str, np.ndarray]]:
    d = FIXTURES / request.param
    golden = dict(np.load(d / "golden_logits.npz"))
    return RefModel.from_dir(d), golden


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference relative to the largest magnitude of b."""
    return float(np.abs(a - b).max() / np.abs(b).max())


# --------------------------------------------------------------- against Hugging Face


def test_fixture_models_differ_in_residual_mode() -> None:
    par = RefModel.from_dir(FIXTURES / "hf_tiny_parallel")
    seq = RefModel.from_dir(FIXTURES / "hf_tiny_sequential")
    assert par.cfg.parallel_residual and not seq.cfg.parallel_residual
    assert par.cfg.rotary_dim == 4 and seq.cfg.rotary_dim == 8
    assert par.vocab_rows == seq.vocab_rows == 1000


def test_forward_matches_hf(fixture: tuple[RefModel, dict[str, np.ndarray]]) -> None:
    model, g = fixture
    logits = model.forward(g["ids"])
    assert logits.shape == g["logits"].shape == (40, 1000)
    assert rel_err(logits, g["logits"]) < 1e-4
    assert (logits.argmax(-1) == g["logits"].argmax(-1)).all()


def test_incremental_decode_matches_hf(fixture: tuple[RefModel, dict[str, np.ndarray]]) -> None:
    """HF's prefill + past_key_values steps equal our token-by-token decode."""
    model, g = fixture
    logits = model.stream_logits(g["ids"], n_sink=4, window=1000)
    assert rel_err(logits, g["logits_incremental"]) < 1e-4
    n = int(g["n_prefill"])
    assert rel_err(logits[n:], g["logits_incremental"][n:]) < 1e-4


def test_golden_logits_are_informative(fixture: tuple[RefModel, dict[str, np.ndarray]]) -> None:
    _, g = fixture
    assert 0.5 < g["logits"].std() < 2.0
    assert len(set(g["logits"].argmax(-1).tolist())) > 5  # predictions depend on the context


# --------------------------------------------------------------- cache modes vs forward


def test_stream_with_large_window_equals_forward(fixture: tuple[RefModel, dict[str, np.ndarray]]) -> None:
    model, g = fixture
    ids = g["ids"]
    full = model.forward(ids)
    for n_sink, window in [(0, 40), (4, 36), (4, 100), (50, 1)]:
        out, events = model.stream_logits(ids, n_sink, window, compress_every=3, return_events=True)
        assert events == []
        np.testing.assert_allclose(out, full, rtol=0, atol=1e-10)


def test_stream_before_first_eviction_equals_forward(fixture: tuple[RefModel, dict[str, np.ndarray]]) -> None:
    model, g = fixture
    ids = g["ids"][:24]
    full = model.forward(ids)
    out, events = model.stream_logits(ids, n_sink=2, window=8, return_events=True)
    first = events[0].step
    assert first == 10
    np.testing.assert_allclose(out[:first], full[:first], rtol=0, atol=1e-10)
    assert rel_err(out[first:], full[first:]) > 1e-3  # eviction changes what the model sees


def test_stream_positions_are_cache_slots(fixture: tuple[RefModel, dict[str, np.ndarray]]) -> None:
    """With window 1 and no sinks every step sees only itself at position 0."""
    model, g = fixture
    ids = g["ids"][:6]
    out = model.stream_logits(ids, n_sink=0, window=1)
    for t, tok in enumerate(ids):
        np.testing.assert_allclose(out[t], model.forward([tok])[0], rtol=0, atol=1e-10)


def test_recompute_with_large_window_equals_forward(fixture: tuple[RefModel, dict[str, np.ndarray]]) -> None:
    model, g = fixture
    ids = g["ids"][:16]
    full = model.forward(ids)
    np.testing.assert_allclose(model.recompute_logits(ids, window=16), full, rtol=0, atol=1e-10)
    np.testing.assert_allclose(model.recompute_logits(ids, window=99), full, rtol=0, atol=1e-10)


def test_recompute_small_window(fixture: tuple[RefModel, dict[str, np.ndarray]]) -> None:
    model, g = fixture
    ids = g["ids"][:12]
    out = model.recompute_logits(ids, window=4)
    np.testing.assert_allclose(out[:4], model.forward(ids[:4]), rtol=0, atol=1e-10)
    np.testing.assert_allclose(out[9], model.forward(ids[6:10])[-1], rtol=0, atol=1e-10)
    with pytest.raises(ValueError):
        model.recompute_logits(ids, window=0)


def test_bad_token_ids_raise() -> None:
    model = RefModel.from_dir(FIXTURES / "hf_tiny_parallel")
    with pytest.raises(ValueError, match="out of range"):
        model.forward([1, 1000])
    with pytest.raises(ValueError, match="out of range"):
        model.stream_logits([-1], 0, 4)


# --------------------------------------------------------------- eviction schedule


def ev(*triples: tuple[int, int, int]) -> list[Eviction]:
    return [Eviction(*t) for t in triples]


SCHEDULES = [
    # (n, n_sink, window, R, max_drop, overlap) -> events, worked by hand from the rules
    ((10, 2, 4, 1, 0, 0), ev((6, 1, 6), (7, 1, 6), (8, 1, 6), (9, 1, 6))),
    ((14, 2, 4, 3, 0, 0), ev((8, 3, 6), (11, 3, 6))),
    ((14, 2, 4, 3, 2, 0), ev((8, 2, 7), (9, 2, 6), (12, 2, 7), (13, 2, 6))),
    ((11, 2, 4, 3, 1, 0), ev((8, 1, 8), (9, 1, 8), (10, 1, 8))),  # drains no faster than it grows
    ((14, 2, 4, 3, 0, 1), ev((8, 2, 7), (10, 2, 7), (12, 2, 7))),
    ((6, 0, 3, 1, 0, 0), ev((3, 1, 3), (4, 1, 3), (5, 1, 3))),  # window policy: no sinks
    ((12, 0, 3, 4, 0, 0), ev((6, 4, 3), (10, 4, 3))),
    ((3, 4, 2, 1, 0, 0), []),  # the text never leaves the sinks
]


@pytest.mark.parametrize("args,expected", SCHEDULES, ids=[str(a) for a, _ in SCHEDULES])
def test_schedule_by_hand(args: tuple[int, ...], expected: list[Eviction]) -> None:
    n, n_sink, window, r, max_drop, overlap = args
    visible, events = stream_schedule(n, n_sink, window, r, max_drop, overlap)
    assert events == expected
    for e in events:
        assert len(visible[e.step]) == e.kept


def test_schedule_visible_sets() -> None:
    visible, _ = stream_schedule(10, 2, 4)
    assert visible[9].tolist() == [0, 1, 6, 7, 8, 9]
    assert visible[1].tolist() == [0, 1]
    visible, _ = stream_schedule(14, 2, 4, compress_every=3)
    assert visible[10].tolist() == [0, 1, 5, 6, 7, 8, 9, 10]
    assert visible[11].tolist() == [0, 1, 8, 9, 10, 11]


def test_schedule_rejects_bad_parameters() -> None:
    for bad in [(5, -1, 4, 1, 0, 0), (5, 0, 0, 1, 0, 0), (5, 0, 4, 0, 0, 0), (5, 0, 4, 1, -1, 0),
                (5, 0, 4, 1, 0, -1)]:
        with pytest.raises(ValueError):
            stream_schedule(*bad)


@settings(max_examples=200, deadline=None)
@given(
    n=st_.integers(0, 60),
    n_sink=st_.integers(0, 5),
    window=st_.integers(1, 10),
    r=st_.integers(1, 6),
    max_drop=st_.integers(0, 4),
    overlap=st_.integers(0, 4),
)
def test_schedule_invariants(n: int, n_sink: int, window: int, r: int, max_drop: int, overlap: int) -> None:
    visible, events = stream_schedule(n, n_sink, window, r, max_drop, overlap)
    budget = n_sink + window
    by_step = {e.step: e for e in events}
    assert len(by_step) == len(events)  # at most one event per step
    first = n_sink
    for t, vis in enumerate(visible):
        vis = vis.tolist()
        sinks = list(range(min(t + 1, n_sink)))
        assert vis[: len(sinks)] == sinks  # sinks never leave
        run = vis[len(sinks):]
        assert run == list(range(run[0], t + 1)) if run else t < n_sink  # contiguous, newest last
        if run:
            assert run[0] >= first  # evicted tokens never come back
            first = run[0]
        if t in by_step:
            e = by_step[t]
            assert e.dropped >= 1 and e.kept == len(vis)
            assert max_drop == 0 or e.dropped <= max_drop
        if max_drop == 0:
            assert len(vis) <= max(budget + r - 1, budget + overlap)
            if t in by_step:
                assert len(vis) == budget + overlap
    assert sum(e.dropped for e in events) == max(first - n_sink, 0) or n <= n_sink


# --------------------------------------------------------------- dynamic pinned sets (select_*)

SCORE_POLICIES = ["h2o", "snapkv", "keynorm"]
# (policy, refresh) pairs covering every way D is chosen
SELECTORS = [("streaming", "uniform"), ("streaming", "structural"), ("streaming", "entropy"),
             ("window", "uniform"), ("window", "entropy")] + [(p, "uniform") for p in SCORE_POLICIES]


@pytest.fixture(scope="module")
def tiny() -> RefModel:
    return RefModel.from_dir(FIXTURES / "hf_tiny_parallel")


def tiny_ids(n: int, seed: int = 0, vocab: int = 1000) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=n)


def test_select_helpers_by_hand() -> None:
    assert uniform_refresh(10, 5, 2) == [11, 13]  # 10 + floor(1.25), 10 + floor(3.75)
    assert uniform_refresh(0, 7, 3) == [1, 3, 5]
    assert uniform_refresh(4, 3, 5) == [4, 5, 6]  # the budget exceeds the span: all of it
    assert uniform_refresh(4, 1, 1) == [4]
    score = {3: 1.0, 5: 2.0, 6: 2.0, 9: 0.5}
    assert top_by_score([3, 5, 6, 9], score, 1) == ([6], 1.0 / 2.0)  # tie: the larger position wins
    assert top_by_score([3, 5, 6, 9], score, 3)[0] == [3, 5, 6]
    assert top_by_score([3, 5], score, 2) == ([3, 5], float("inf"))
    raw = {p: v for p, v in zip(range(10, 20), [0, 0, 0, 0, 9, 0, 0, 0, 0, 1])}
    pooled = snapkv_pool(list(raw), raw)
    assert [pooled[p] for p in range(10, 20)] == [0, 9, 9, 9, 9, 9, 9, 9, 1, 1]
    # pooling walks the candidate list, not text positions
    gapped = {2: 5.0, 40: 0.0, 41: 0.0, 42: 0.0, 43: 0.0, 44: 1.0}
    assert snapkv_pool(list(gapped), gapped) == {2: 5.0, 40: 5.0, 41: 5.0, 42: 5.0, 43: 1.0, 44: 1.0}


@pytest.mark.parametrize("policy", list(SELECT_POLICIES))
@pytest.mark.parametrize("sched", [(2, 6, 1, 0, 0), (3, 5, 4, 2, 1), (0, 7, 3, 0, 2)])
def test_select_without_budget_is_streaming(tiny: RefModel, policy: str, sched: tuple[int, ...]) -> None:
    """M = 0 keeps no evicted token: exactly stream_logits (window: no sinks)."""
    n_sink, window, r, max_drop, overlap = sched
    ids = tiny_ids(30, seed=1)
    s = 0 if policy == "window" else n_sink
    want, want_events = tiny.stream_logits(ids, s, window, r, max_drop, overlap, return_events=True)
    got, events, visible = tiny.select_stream_logits(ids, n_sink, window, policy, 0, r, max_drop, overlap,
                                                     refresh="entropy", return_events=True)
    np.testing.assert_array_equal(got, want)
    assert events == want_events
    assert visible.tolist() == [len(v) for v in stream_schedule(30, s, window, r, max_drop, overlap)[0]]


@pytest.mark.parametrize("policy,refresh", SELECTORS)
def test_select_window_larger_than_text_equals_forward(fixture: tuple[RefModel, dict[str, np.ndarray]],
                                                       policy: str, refresh: str) -> None:
    model, g = fixture
    ids = g["ids"]
    out, events, visible = model.select_stream_logits(ids, 4, 40, policy, 3, compress_every=2, refresh=refresh,
                                                      structural_ids=ids[:10], return_events=True)
    assert events == []
    assert visible.tolist() == list(range(1, 41))
    np.testing.assert_allclose(out, model.forward(ids), rtol=0, atol=1e-10)


def test_select_uniform_by_hand(tiny: RefModel) -> None:
    """s=2, window 4, R=3, M=2: evictions (8, 3, 6) and (11, 3, 6). At 8,
    E = [2, 5) and uniform refresh keeps 2 + floor(0.75) = 2 and
    2 + floor(2.25) = 4; at 11, E = [5, 8) gives 5 and 7, and D keeps the two
    largest of {2, 4, 5, 7}."""
    tr = tiny.select_trace(tiny_ids(14, seed=2), 2, 4, "streaming", 2, compress_every=3)
    assert tr.events == ev((8, 3, 6), (11, 3, 6))
    assert tr.visible[7].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert tr.visible[8].tolist() == [0, 1, 2, 4, 5, 6, 7, 8]
    assert tr.visible[10].tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9, 10]
    assert tr.visible[11].tolist() == [0, 1, 5, 7, 8, 9, 10, 11]
    assert tr.pinned[13].tolist() == [5, 7]
    # the window policy has no sinks: E = [0, 4) at step 6 (R=3, window 4)
    tr = tiny.select_trace(tiny_ids(8, seed=2), 2, 4, "window", 3, compress_every=3)
    assert tr.events == ev((6, 3, 4))
    assert tr.visible[6].tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert tr.visible[7].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]


def test_select_structural_by_hand(tiny: RefModel) -> None:
    """Only evicted tokens whose id is structural are kept, the latest M."""
    ids = [5, 6, 7, 1, 7, 7, 1, 8, 9, 1, 9, 9, 9, 9, 9, 9]
    # s=1, window 3, R=1: one eviction per step from t=4 on, E = [t-3, t-2)
    tr = tiny.select_trace(ids, 1, 3, "streaming", 2, refresh="structural", structural_ids=[1, 8])
    assert tr.events == ev(*[(t, 1, 4) for t in range(4, 16)])
    pinned = {t: tr.pinned[t].tolist() for t in range(16)}
    assert pinned[5] == [] and pinned[6] == [3] and pinned[9] == [3, 6] and pinned[10] == [6, 7]
    assert pinned[15] == [7, 9]
    assert tr.visible[15].tolist() == [0, 7, 9, 13, 14, 15]
    # a batch eviction takes the last M structural ids of its span at once
    tr = tiny.select_trace(ids, 1, 3, "streaming", 2, compress_every=9, refresh="structural", structural_ids=[1, 8])
    assert tr.events == ev((12, 9, 4))  # E = [1, 10): structural at 3, 6, 7, 9
    assert tr.pinned[12].tolist() == [7, 9]


def test_select_entropy_refresh_keeps_the_most_uncertain(tiny: RefModel) -> None:
    ids = tiny_ids(40, seed=3)
    tr = tiny.select_trace(ids, 2, 6, "streaming", 2, compress_every=5, refresh="entropy")
    assert tr.margin > 1e-6
    assert any(e.dropped > 2 for e in tr.events)  # the choice is not all of the span
    D: list[int] = []
    first = 2
    for e in tr.events:
        span = list(range(first, first + e.dropped))
        first += e.dropped
        best = sorted(span, key=lambda p: tr.entropy[p])[-2:]
        D = sorted(set(D) | set(best))[-2:]
        assert tr.pinned[e.step].tolist() == D


def full_attention_received(model: RefModel, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From a plain causal forward: A[q, p] = attention of query q on key p,
    summed over layers and heads, and the key L2 norms summed likewise."""
    c = model.cfg
    x = model._embed(ids)
    n = len(ids)
    pos = np.arange(n)
    A = np.zeros((n, n))
    norms = np.zeros(n)
    for layer in range(c.n_layer):
        q, k, v = model._qkv(layer, model._ln(layer, "input_layernorm", x))
        norms += np.linalg.norm(k, axis=-1).sum(axis=-1)
        q, k = rotate(q, pos, c.rotary_dim, c.rotary_base), rotate(k, pos, c.rotary_dim, c.rotary_base)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(c.head_dim)
        scores[:, np.triu(np.ones((n, n), dtype=bool), k=1)] = -np.inf
        probs = softmax(scores)
        A += probs.sum(axis=0)
        x = model._residual(layer, x, model._attn_out(layer, np.einsum("hqk,khd->qhd", probs, v)))
    return A, norms


@pytest.mark.parametrize("policy", SCORE_POLICIES)
def test_score_policies_first_choice_from_a_plain_forward(fixture: tuple[RefModel, dict[str, np.ndarray]],
                                                          policy: str) -> None:
    """Before the first eviction the stream is a plain forward, so its first
    choice follows from the causal attention matrix and the key norms."""
    model, g = fixture
    ids = g["ids"][:30]
    n_sink, window, r, M = 1, 8, 10, 4  # first eviction at t = 18 drops E = [1, 11)
    tr = model.select_trace(ids, n_sink, window, policy, M, compress_every=r)
    t = tr.events[0].step
    assert tr.events[0] == Eviction(18, 10, 9)
    A, norms = full_attention_received(model, ids[:t])
    received = A.sum(axis=0)  # every query q < t; h2o and snapkv agree until the first eviction
    span = list(range(1, 11))
    if policy == "keynorm":
        want = sorted(sorted(span, key=lambda p: norms[p])[:M])
    elif policy == "h2o":
        want = sorted(sorted(span, key=lambda p: received[p])[-M:])
    else:
        pooled = [max(received[span[j]] for j in range(max(0, i - 3), min(10, i + 4))) for i in range(10)]
        want = sorted(sorted(range(10), key=lambda i: (pooled[i], i))[-M:])
        want = [span[i] for i in want]
    assert tr.pinned[t].tolist() == want
    assert tr.visible[t].tolist() == [0] + want + list(range(11, t + 1))


def test_snapkv_observes_only_since_the_last_eviction(tiny: RefModel) -> None:
    """With its observation window reset, snapkv's second choice differs from
    what the whole history (h2o's view) would pick on the same candidates."""
    ids = tiny_ids(40, seed=4)
    snap = tiny.select_trace(ids, 1, 6, "snapkv", 3, compress_every=6)
    h2o = tiny.select_trace(ids, 1, 6, "h2o", 3, compress_every=6)
    assert snap.events == h2o.events
    steps = [e.step for e in snap.events]
    assert any(snap.pinned[t].tolist() != h2o.pinned[t].tolist() for t in steps)
    # D is carried from one eviction to the next, never enlarged by a non-eviction step
    for t in range(1, 40):
        if t not in steps:
            assert snap.pinned[t].tolist() == snap.pinned[t - 1].tolist()


def test_entropy_trigger(tiny: RefModel) -> None:
    ids = tiny_ids(40, seed=5)
    plain = tiny.select_trace(ids, 2, 5, "streaming", 2, compress_every=6, overlap=1)
    # a threshold above every entropy never fires
    high = tiny.select_trace(ids, 2, 5, "streaming", 2, compress_every=6, overlap=1,
                             entropy_threshold=float(plain.entropy.max()) + 1.0)
    assert high.events == plain.events and high.forced == []
    np.testing.assert_array_equal(high.logits, plain.logits)
    # a threshold below every entropy fires at every step: the R = 1 schedule
    low = tiny.select_trace(ids, 2, 5, "streaming", 2, compress_every=6, overlap=1, entropy_threshold=1e-9)
    assert low.events == stream_schedule(40, 2, 5, 1, 0, 1)[1]
    assert low.forced and all(e.kept == 2 + 5 + 1 for e in low.events)
    # in between: an eviction is forced exactly when the previous token was uncertain
    thr = float(np.median(plain.entropy))
    mid = tiny.select_trace(ids, 2, 5, "streaming", 2, compress_every=6, overlap=1, entropy_threshold=thr)
    assert mid.forced
    for t in mid.forced:
        assert mid.entropy[t - 1] > thr and t in [e.step for e in mid.events]
    steps = {e.step for e in mid.events}
    for t in range(1, 40):
        size = len(mid.visible[t - 1]) - len(mid.pinned[t - 1])  # sinks + window before t arrives
        if mid.entropy[t - 1] > thr and size + 1 > 2 + 5 + 1:
            assert t in steps


@settings(max_examples=25, deadline=None)
@given(
    policy=st_.sampled_from(list(SELECT_POLICIES)),
    refresh=st_.sampled_from(["uniform", "structural", "entropy"]),
    n_sink=st_.integers(0, 3),
    window=st_.integers(1, 6),
    r=st_.integers(1, 5),
    max_drop=st_.integers(0, 3),
    overlap=st_.integers(0, 4),
    M=st_.integers(0, 4),
    entropy_on=st_.booleans(),
    seed=st_.integers(0, 1000),
)
def test_select_invariants(tiny: RefModel, policy: str, refresh: str, n_sink: int, window: int, r: int,
                           max_drop: int, overlap: int, M: int, entropy_on: bool, seed: int) -> None:
    n = 24
    ids = tiny_ids(n, seed=seed, vocab=12)  # few ids, so structural ones recur
    overlap = min(overlap, r - 1)
    thr = 6.4 if entropy_on else 0.0
    tr = tiny.select_trace(ids, n_sink, window, policy, M, r, max_drop, overlap, refresh=refresh,
                           structural_ids=[1, 2, 3], entropy_threshold=thr)
    s = 0 if policy == "window" else n_sink
    if not entropy_on:  # the pinned set never changes which window tokens leave
        visible, events = stream_schedule(n, s, window, r, max_drop, overlap)
        assert tr.events == events
    by_step = {e.step: e for e in tr.events}
    first, gone = s, set()
    for t in range(n):
        vis, D = tr.visible[t].tolist(), tr.pinned[t].tolist()
        assert len(D) <= M and D == sorted(set(D))
        sinks = list(range(min(t + 1, s)))
        assert vis[: len(sinks)] == sinks and vis[len(sinks): len(sinks) + len(D)] == D
        run = vis[len(sinks) + len(D):]
        assert run == list(range(run[0], t + 1)) if run else t < s
        if t in by_step:
            e = by_step[t]
            span = set(range(first, first + e.dropped))
            assert run[0] == first + e.dropped and e.kept == len(sinks) + len(run)
            if M and policy in ("streaming", "window") and refresh == "uniform":
                assert len(D) == min(M, len(D_prev) + e.dropped)
            assert set(D) <= set(D_prev) | span  # only just-evicted or already-pinned tokens
            gone |= (set(D_prev) | span) - set(D)
            first += e.dropped
        else:
            assert t == 0 or D == D_prev
        assert not set(D) & gone  # a token dropped from D never comes back
        assert all(s <= p < first for p in D)
        assert len(vis) <= s + M + window + r - 1
        D_prev = D
    assert len(tr.logits) == n and np.isfinite(tr.logits).all()


def test_select_rejects_bad_parameters(tiny: RefModel) -> None:
    ids = [1, 2, 3]
    for kwargs in [dict(policy="lru"), dict(refresh="random"), dict(M=-1), dict(entropy_threshold=-0.5),
                   dict(window=0), dict(compress_every=0), dict(n_sink=-1), dict(max_drop=-1)]:
        args = dict(n_sink=1, window=4, policy="streaming", M=1) | kwargs
        with pytest.raises(ValueError):
            tiny.select_stream_logits(ids, **args)
