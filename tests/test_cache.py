"""Bounded KV caches against the NumPy reference, which rebuilds StreamingLLM's
cache-position semantics from scratch at every step (sinks + window,
re-rotated), and the eviction schedule against its definition."""

from __future__ import annotations

import numpy as np
import pytest

import specstream
from specstream import CacheConfig
from conftest import rel_err, token_ids
from reference import stream_schedule

TOL = 1e-4

# (n_sink, window, compress_every, max_drop, overlap)
SCHEDULES = [
    (4, 8, 1, 0, 0),      # StreamingLLM: evict every step
    (1, 5, 1, 0, 0),
    (2, 6, 4, 0, 0),      # lazy: batches of R
    (2, 6, 8, 3, 0),      # lazy with max_drop spreading the batch
    (3, 7, 6, 0, 2),      # lazy with overlap
    (4, 10, 16, 5, 3),
]


def streaming(n_sink, window, r, max_drop, overlap):
    return CacheConfig(policy="streaming", n_sink=n_sink, window=window, compress_every=r,
                       max_drop=max_drop or None, overlap=overlap)


@pytest.mark.parametrize("sched", SCHEDULES)
@pytest.mark.parametrize("chunk", [1, 5])
def test_streaming_after_evictions_matches_reference(models, refs, sched, chunk):
    ids = token_ids(70, 1000, seed=11)
    got = models["parallel"].forward(ids, cache=streaming(*sched), chunk=chunk)
    want = refs["parallel"].stream_logits(ids, *sched)
    assert rel_err(got, want) < TOL


def test_streaming_sequential_residual_model(models, refs):
    ids = token_ids(60, 777, seed=12)
    got = models["sequential"].forward(ids, cache=streaming(2, 9, 3, 0, 1), chunk=4)
    assert rel_err(got, refs["sequential"].stream_logits(ids, 2, 9, 3, 0, 1)) < TOL


def test_window_policy_matches_reference(models, refs):
    ids = token_ids(50, 1000, seed=13)
    got = models["parallel"].forward(ids, cache=CacheConfig(policy="window", window=7, compress_every=3), chunk=2)
    assert rel_err(got, refs["parallel"].stream_logits(ids, 0, 7, 3)) < TOL


@pytest.mark.parametrize("window", [1, 6, 200])
def test_recompute_matches_reference(models, refs, window):
    ids = token_ids(40, 1000, seed=14)
    got = models["parallel"].forward(ids, cache=CacheConfig(policy="recompute", window=window), chunk=3)
    assert rel_err(got, refs["parallel"].recompute_logits(ids, window)) < TOL


def test_recompute_generation_follows_the_reference(models, refs):
    """Generation re-encodes a window only for tokens whose logits it reads
    (the last prompt token, then each new one); the tokens are still the
    greedy chain of the reference's recompute logits."""
    prompt = token_ids(30, 1000, seed=16)
    out = models["parallel"].generate(prompt, max_new_tokens=6, cache=CacheConfig(policy="recompute", window=8)).tokens
    ids = list(prompt)
    for _ in range(6):
        ids.append(int(np.argmax(refs["parallel"].recompute_logits(np.array(ids), 8)[-1])))
    np.testing.assert_array_equal(out, ids[len(prompt):])


def test_full_policy_equals_plain_decoding(models):
    ids = token_ids(45, 1000, seed=15)
    m = models["parallel"]
    np.testing.assert_allclose(m.forward(ids, cache=CacheConfig(policy="full"), chunk=1), m.forward(ids),
                               rtol=0, atol=1e-5)


def test_streaming_larger_than_text_equals_full(models):
    ids = token_ids(45, 1000, seed=16)
    m = models["parallel"]
    big = CacheConfig(policy="streaming", n_sink=4, window=100, compress_every=8)
    np.testing.assert_allclose(m.forward(ids, cache=big, chunk=1), m.forward(ids), rtol=0, atol=1e-5)


@pytest.mark.parametrize("sched", SCHEDULES + [(0, 9, 5, 2, 1), (4, 4, 1, 0, 0)])
def test_eviction_log_and_visible_lengths_follow_the_schedule(models, sched):
    n = 200
    ids = token_ids(n, 1000, seed=17)
    n_sink, window, r, max_drop, overlap = sched
    cfg = (streaming(*sched) if n_sink else
           CacheConfig(policy="window", window=window, compress_every=r, max_drop=max_drop or None, overlap=overlap))
    res = specstream.eval.perplexity(models["draft"], ids, cache=cfg, chunk=7)
    visible, events = stream_schedule(n, n_sink, window, r, max_drop, overlap)
    assert [tuple(e) for e in res.evictions.tolist()] == [(e.step, e.dropped, e.kept) for e in events]
    np.testing.assert_array_equal(res.visible, [len(v) for v in visible])
    # the bound the config implies: never more than budget + R - 1 keys
    assert res.visible.max() <= n_sink + window + r - 1
    if r == 1 and max_drop == 0:
        assert res.visible.max() == n_sink + window


def test_nll_is_independent_of_chunking(models):
    ids = token_ids(120, 1000, seed=18)
    cfg = streaming(2, 10, 4, 0, 1)
    a = specstream.eval.perplexity(models["parallel"], ids, cache=cfg, chunk=1)
    b = specstream.eval.perplexity(models["parallel"], ids, cache=cfg, chunk=50)
    np.testing.assert_allclose(a.nll, b.nll, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(a.evictions, b.evictions)


def test_perplexity_nll_matches_reference(models, refs):
    ids = token_ids(60, 1000, seed=19)
    res = specstream.eval.perplexity(models["parallel"], ids, cache=streaming(2, 8, 1, 0, 0), chunk=16)
    logits = refs["parallel"].stream_logits(ids, 2, 8)
    logp = logits - logits.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    want = -logp[np.arange(59), ids[1:]]
    np.testing.assert_allclose(res.nll, want, rtol=1e-4, atol=1e-4)
    assert res.ppl == pytest.approx(float(np.exp(want.mean())), rel=1e-4)
    frame = res.to_frame()
    # row i predicts token i + 1 from what token i saw: evictions before token 59 have no row
    in_rows = res.evictions[res.evictions[:, 0] < 59, 1].sum()
    assert len(frame) == 59 and frame["evicted_before"].sum() == in_rows


def test_memory_stays_flat_over_50k_generated_tokens(models):
    """A bounded cache allocates once: its bytes do not depend on the length,
    and generation of 50k tokens never needs more."""
    cfg = CacheConfig(policy="streaming", n_sink=4, window=60, compress_every=8)
    stream = models["draft"].stream([1, 2, 3], max_new_tokens=50_000, cache=cfg)
    start = stream.cache_bytes
    count = sum(1 for _ in stream)
    assert count == 50_000
    assert stream.cache_bytes == start
    # 4 sinks + (60 + 7 lazy + 16 pending) ring slots, K and V, f32: a bounded
    # cache prefills in chunks of a quarter window (16 at least), not 256
    d = models["draft"].config
    assert start == 2 * d.n_layer * d.d_model * 4 * (4 + 60 + 7 + 16)
    short = models["draft"].stream([1, 2, 3], max_new_tokens=10, cache=cfg)
    assert short.cache_bytes == start


def test_eviction_plot_and_json(models, tmp_path):
    ids = token_ids(100, 1000, seed=20)
    res = specstream.eval.perplexity(models["draft"], ids, cache=streaming(2, 10, 5, 0, 0), chunk=10, repeats=2)
    res.plot(tmp_path / "nll.png")
    assert (tmp_path / "nll.png").stat().st_size > 1000
    import json

    doc = json.loads(res.to_json(tmp_path / "r.json"))
    assert doc["evictions"] == len(res.evictions) and len(doc["nll"]) == 99
    assert len(res.timings) == 2
