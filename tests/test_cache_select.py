"""Refresh tokens of window and streaming caches (uniform, structural,
entropy), with and without the entropy trigger, against the NumPy reference
(tests/reference.py, RefModel.select_trace), token by token (chunk=1):
logits, the eviction log and the number of keys each token saw. (Score
policies, whose heavy sets are per head, are tested against
tests/ref_policies.py in test_cache_policies.py.)

Which evicted tokens stay depends on scores the engine computes in float32
and the reference in float64, so a case is only meaningful when none of its
decisions is a near-tie: every case first checks that the reference's
smallest decision margin is far above float32 rounding, and entropy-trigger
thresholds are chosen (deterministically) to keep it so.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

import specstream
from specstream import CacheConfig
from conftest import rel_err, token_ids
from reference import SelectTrace, stream_schedule

TOL = 1e-4
MIN_MARGIN = 1e-4  # relative gap of every data-dependent decision; float32 moves scores by ~1e-6
STRUCTURAL = (3, 17, 256)  # "newlines and full stops" of the random vocabularies
THRESHOLD_QUANTILES = (0.5, 0.4, 0.6, 0.3, 0.7, 0.45, 0.55, 0.35, 0.65)


class Case(NamedTuple):
    policy: str
    n_sink: int
    window: int
    M: int
    r: int = 1
    max_drop: int = 0
    overlap: int = 0
    refresh: str = "uniform"
    trigger: bool = False  # entropy_threshold > 0 (chosen from the reference's entropies)
    model: str = "parallel"
    n: int = 70
    seed: int = 0

    @property
    def name(self) -> str:
        parts = [self.model, self.policy]
        if self.policy in ("streaming", "window"):
            parts.append(self.refresh)
        parts += [f"s{self.n_sink}w{self.window}M{self.M}R{self.r}d{self.max_drop}o{self.overlap}"]
        if self.trigger:
            parts.append("trigger")
        return "-".join(parts)


CASES = [
    # refresh tokens
    Case("streaming", 2, 8, 3),
    Case("streaming", 2, 6, 4, r=4, overlap=1),
    Case("streaming", 4, 10, 5, r=8, max_drop=3, overlap=2),
    Case("window", 0, 7, 2, r=3),
    Case("streaming", 2, 8, 3, r=5, refresh="structural"),
    Case("streaming", 1, 6, 2, refresh="structural"),
    Case("window", 0, 6, 3, r=4, max_drop=2, overlap=1, refresh="structural"),
    Case("streaming", 2, 6, 2, r=6, refresh="entropy", seed=1),
    Case("streaming", 2, 8, 2, r=5, max_drop=3, overlap=1, refresh="entropy"),
    Case("window", 0, 8, 2, r=7, overlap=2, refresh="entropy"),
    # the entropy trigger
    Case("streaming", 2, 6, 3, r=6, trigger=True, seed=4),
    Case("streaming", 2, 6, 2, r=5, max_drop=2, overlap=1, refresh="structural", trigger=True, seed=4),
    Case("window", 0, 7, 2, r=6, refresh="entropy", trigger=True, seed=0),
    # the sequential-residual model (3 layers, tanh GELU, half rotary)
    Case("streaming", 2, 7, 3, r=5, refresh="entropy", trigger=True, model="sequential", n=60, seed=6),
]
IDS = [c.name for c in CASES]
assert len(set(IDS)) == len(IDS)


def vocab(refs, case: Case) -> int:
    return refs[case.model].w["gpt_neox.embed_in.weight"].shape[0]


def case_ids(case: Case, n_vocab: int) -> np.ndarray:
    ids = token_ids(case.n, n_vocab, seed=100 + case.seed)
    if case.refresh == "structural":  # about one token in five is structural
        rng = np.random.default_rng(200 + case.seed)
        mark = rng.random(case.n) < 0.2
        ids[mark] = rng.choice(STRUCTURAL, size=int(mark.sum()))
    return ids


def config(case: Case, threshold: float) -> CacheConfig:
    common = dict(window=case.window, compress_every=case.r, max_drop=case.max_drop or None, overlap=case.overlap,
                  entropy_threshold=threshold)
    extra = dict(refresh_budget=case.M, refresh=case.refresh)
    if case.refresh == "structural":
        extra["structural_ids"] = STRUCTURAL
    if case.policy == "streaming":
        extra["n_sink"] = case.n_sink
    return CacheConfig(policy=case.policy, **common, **extra)


class Expected(NamedTuple):
    ids: np.ndarray
    threshold: float
    trace: SelectTrace


def trace(ref, case: Case, ids: np.ndarray, threshold: float) -> SelectTrace:
    return ref.select_trace(ids, case.n_sink, case.window, case.policy, case.M, case.r, case.max_drop,
                            case.overlap, refresh=case.refresh, structural_ids=STRUCTURAL,
                            entropy_threshold=threshold)


@pytest.fixture(scope="module")
def expected(refs):
    """Reference traces, computed once per case."""
    cache: dict[str, Expected] = {}

    def get(case: Case) -> Expected:
        if case.name not in cache:
            ref = refs[case.model]
            ids = case_ids(case, vocab(refs, case))
            tr = trace(ref, case, ids, 0.0)
            threshold = 0.0
            if case.trigger:  # the first quantile of the untriggered entropies that fires and is no near-tie
                for q in THRESHOLD_QUANTILES:
                    threshold = float(np.quantile(tr.entropy, q))
                    tr = trace(ref, case, ids, threshold)
                    if tr.forced and tr.margin > MIN_MARGIN:
                        break
                assert tr.forced, f"{case.name}: no threshold makes the trigger fire"
            assert tr.margin > MIN_MARGIN, (
                f"{case.name}: a selection is a near-tie (margin {tr.margin:.2e}); choose another seed")
            if case.M:
                assert any(len(d) for d in tr.pinned), f"{case.name}: nothing is ever pinned"
            cache[case.name] = Expected(ids, threshold, tr)
        return cache[case.name]

    return get


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_logits_match_reference(models, expected, case):
    want = expected(case)
    got = models[case.model].forward(want.ids, cache=config(case, want.threshold), chunk=1)
    ref = want.trace.logits[:, : got.shape[1]]
    assert got.shape == (case.n, models[case.model].vocab_size)
    # locate the first divergence: it names the step whose pinned set differs
    bad = [t for t in range(case.n) if rel_err(got[t], ref[t]) >= TOL]
    assert not bad, (
        f"first bad step {bad[0]} (of {len(bad)}), reference visible {want.trace.visible[bad[0]].tolist()}, "
        f"events {[tuple(e) for e in want.trace.events if e.step <= bad[0]][-3:]}")
    assert rel_err(got, ref) < TOL


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_eviction_log_visible_and_nll_match_reference(models, expected, case):
    want = expected(case)
    res = specstream.eval.perplexity(models[case.model], want.ids, cache=config(case, want.threshold), chunk=1)
    assert [tuple(e) for e in res.evictions.tolist()] == [tuple(e) for e in want.trace.events]
    np.testing.assert_array_equal(res.visible, [len(v) for v in want.trace.visible])
    logits = want.trace.logits[:, : models[case.model].vocab_size]
    logp = logits - logits.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(res.nll, -logp[np.arange(case.n - 1), want.ids[1:]], rtol=1e-4, atol=1e-4)


def test_cases_exercise_what_they_claim(expected):
    """The selections are not degenerate: entropy refresh chooses within a
    span, the trigger fires."""
    for case in CASES:
        tr = expected(case).trace
        if case.trigger:
            assert tr.forced
        if case.refresh == "entropy":
            assert tr.margin < np.inf, f"{case.name}: no selection ever rejected a candidate on score"


@pytest.mark.parametrize("policy", ["streaming", "window"])
@pytest.mark.parametrize("refresh", ["uniform", "entropy"])
def test_zero_refresh_budget_is_plain_streaming(models, policy, refresh):
    ids = token_ids(60, 1000, seed=31)
    case = Case(policy, 2, 7, 0, r=3, max_drop=2, overlap=1, refresh=refresh)
    plain = CacheConfig(policy="window" if policy == "window" else "streaming", n_sink=2, window=7,
                        compress_every=3, max_drop=2, overlap=1)
    m = models["parallel"]
    np.testing.assert_allclose(m.forward(ids, cache=config(case, 0.0), chunk=1), m.forward(ids, cache=plain, chunk=1),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("policy,refresh", [("streaming", "uniform"), ("streaming", "entropy"),
                                            ("window", "uniform")])
@pytest.mark.parametrize("sched", [(4, 12, 1, 0, 0, 5), (2, 10, 8, 3, 2, 6), (0, 9, 5, 0, 1, 4)])
def test_long_stream_schedule_and_visible_counts(models, policy, refresh, sched):
    """Without the trigger refresh tokens never change the schedule, and
    (except structural refresh) they fill to M as soon as M tokens have left:
    visible = the StreamingLLM count + min(M, evicted so far), within
    s + M + window + R - 1."""
    n = 300
    n_sink, window, r, max_drop, overlap, M = sched
    s = 0 if policy == "window" else n_sink
    case = Case(policy, n_sink, window, M, r, max_drop, overlap, refresh)
    res = specstream.eval.perplexity(models["draft"], token_ids(n, 1000, seed=32), cache=config(case, 0.0), chunk=1)
    visible, events = stream_schedule(n, s, window, r, max_drop, overlap)
    assert [tuple(e) for e in res.evictions.tolist()] == [tuple(e) for e in events]
    evicted = np.zeros(n, dtype=np.int64)
    for e in events:
        evicted[e.step:] += e.dropped
    np.testing.assert_array_equal(res.visible, [len(v) for v in visible] + np.minimum(M, evicted))
    assert res.visible.max() <= s + M + window + r - 1
    assert np.isfinite(res.nll).all()
