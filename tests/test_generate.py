"""Generation: greedy speculative decoding is token-identical to target-only
decoding (every cache policy, many k, after evictions); sampled speculative
decoding has the target's distribution (a randomized probability-integral-
transform test that a broken acceptance rule fails); sampling is seeded."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

import specstream
from specstream import CacheConfig, SpeculativeConfig
from specstream.models import create_random
from conftest import token_ids

CACHES = [
    CacheConfig(),
    CacheConfig(policy="streaming", n_sink=2, window=10),
    CacheConfig(policy="streaming", n_sink=4, window=12, compress_every=6, max_drop=2, overlap=1),
    CacheConfig(policy="window", window=9, compress_every=3),
    CacheConfig(policy="recompute", window=10),
]


@pytest.mark.parametrize("cache", CACHES, ids=lambda c: f"{c.policy}-R{c.compress_every}")
def test_greedy_speculative_is_token_identical(models, cache):
    target, draft = models["parallel"], models["draft"]
    for seed in range(4):
        prompt = token_ids(3 + 5 * seed, 1000, seed=seed)
        want = target.generate(prompt, max_new_tokens=40, cache=cache).tokens
        assert len(want) == 40
        for k in (1, 2, 4, 7):
            got = target.generate(prompt, max_new_tokens=40, cache=cache, draft=draft, speculative=SpeculativeConfig(k=k))
            np.testing.assert_array_equal(got.tokens, want, err_msg=f"k={k} seed={seed}")
        for spec in (SpeculativeConfig(adaptive=True, k_min=1, k_max=6), SpeculativeConfig(k=3, method="lookup")):
            got = target.generate(prompt, max_new_tokens=40, cache=cache, draft=draft if spec.method == "draft" else None,
                                  speculative=spec)
            np.testing.assert_array_equal(got.tokens, want, err_msg=str(spec))


def test_draft_may_use_another_cache_policy(models):
    target, draft = models["parallel"], models["draft"]
    prompt = token_ids(30, 1000, seed=7)
    tc = CacheConfig(policy="streaming", n_sink=4, window=16)
    want = target.generate(prompt, max_new_tokens=50, cache=tc).tokens
    got = target.generate(prompt, max_new_tokens=50, cache=tc, draft=draft,
                          draft_cache=CacheConfig(policy="window", window=8), speculative=SpeculativeConfig(k=3))
    np.testing.assert_array_equal(got.tokens, want)


def test_self_drafting_accepts_everything(models):
    m = models["parallel"]
    r = m.generate([1, 2, 3], max_new_tokens=41, draft=m, speculative=SpeculativeConfig(k=4))
    assert r.stats.acceptance_rate == 1.0
    assert r.stats.mean_accepted_length == 5.0
    assert r.stats.target_forwards == 8  # 40 tokens after the first, 5 per verification


def test_stop_tokens_and_limits(models):
    m = models["parallel"]
    full = m.generate([5, 6, 7], max_new_tokens=30).tokens
    stop = int(full[10])
    first = int(np.argmax(full == stop))
    for draft in (None, models["draft"]):
        r = m.generate([5, 6, 7], max_new_tokens=30, stop_token_ids=[stop], draft=draft)
        np.testing.assert_array_equal(r.tokens, full[: first + 1])
    assert len(m.generate([5, 6, 7], max_new_tokens=0).tokens) == 0


def test_stream_yields_what_generate_returns(models):
    m = models["parallel"]
    cache = CacheConfig(policy="streaming", n_sink=2, window=8)
    want = m.generate([9, 8, 7], max_new_tokens=25, cache=cache, draft=models["draft"]).tokens
    stream = m.stream([9, 8, 7], max_new_tokens=25, cache=cache, draft=models["draft"])
    assert list(stream) == want.tolist()
    assert stream.stats.new_tokens == 25


def test_sampling_is_reproducible_and_seed_dependent(models):
    m = models["parallel"]
    kw = dict(max_new_tokens=30, temperature=0.9, top_k=40, top_p=0.9)
    a = m.generate([1, 2], seed=5, **kw).tokens
    np.testing.assert_array_equal(a, m.generate([1, 2], seed=5, **kw).tokens)
    assert not np.array_equal(a, m.generate([1, 2], seed=6, **kw).tokens)
    assert m.generate([1, 2], **kw).stats.seed is not None


def test_adaptive_sampling_is_reproducible_per_seed(models):
    """Adaptive k with a fixed or bytes-derived cost ratio depends on the
    acceptance history only, so the random stream (and the output) is a
    function of the seed; with "measured" it still has the target's tokens
    under greedy decoding."""
    target, draft = models["parallel"], models["draft"]
    kw = dict(max_new_tokens=40, temperature=1.0, draft=draft)
    for spec in (SpeculativeConfig(adaptive=True, k_min=1, k_max=6),
                 SpeculativeConfig(adaptive=True, k_min=1, k_max=6, cost_ratio=0.02)):
        runs = [target.generate([5, 6, 7], seed=11, speculative=spec, **kw) for _ in range(3)]
        for r in runs[1:]:
            np.testing.assert_array_equal(r.tokens, runs[0].tokens, err_msg=str(spec))
            assert r.stats.target_forwards == runs[0].stats.target_forwards
    greedy = target.generate([5, 6, 7], max_new_tokens=40).tokens
    measured = target.generate([5, 6, 7], max_new_tokens=40, draft=draft,
                               speculative=SpeculativeConfig(adaptive=True, cost_ratio="measured"))
    np.testing.assert_array_equal(measured.tokens, greedy)


def test_stats_are_consistent(models):
    r = models["parallel"].generate(token_ids(20, 1000), max_new_tokens=30, draft=models["draft"],
                                    speculative=SpeculativeConfig(k=3), measure_speedup=True)
    s = r.stats
    assert s.new_tokens == 30 and s.ttft_s > 0 and s.tpot_s > 0 and s.prefill_s > 0
    assert s.drafted >= s.accepted >= 0 and s.target_forwards >= 1
    assert s.tokens_per_target_forward == pytest.approx(29 / s.target_forwards)
    assert s.speedup is not None and s.speedup > 0
    assert s.cache_bytes > 0 and s.peak_rss_bytes > 0


# ------------------------------------------------------------ distribution test

VOCAB = 12


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    shape = dict(n_layer=1, d_model=16, n_head=2, d_ff=32, vocab_size=VOCAB)
    # larger output weights: peaked, dissimilar distributions, so rejections happen
    t = specstream.load(create_random(shape, root / "t", seed=1))
    d = specstream.load(create_random(shape, root / "d", seed=2))
    return t, d


def sampling_probs(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """HF semantics (temperature, then top-k, then top-p), written independently."""
    z = logits.astype(np.float64) / temperature
    if 0 < top_k < len(z):
        z = np.where(z < np.sort(z)[-top_k], -np.inf, z)
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(p, kind="stable")
        cum = np.cumsum(p[order])
        remove = cum <= 1 - top_p
        remove[-1] = False
        p[order[remove]] = 0.0
        p /= p.sum()
    return p


def pit_pvalue(target, prompt, sequences, temperature, top_k, top_p) -> float:
    """Randomized probability integral transform: each generated token t with
    conditional distribution P gives u = F(t-1) + U * P(t), Uniform(0, 1) and
    independent across tokens if the tokens follow P. Chi-square on 20 bins."""
    rng = np.random.default_rng(0)
    us = []
    for seq in sequences:
        logits = target.forward(np.concatenate([prompt, seq]))
        for j, tok in enumerate(seq):
            p = sampling_probs(logits[len(prompt) - 1 + j], temperature, top_k, top_p)
            us.append(p[:tok].sum() + rng.random() * p[tok])
    counts, _ = np.histogram(us, bins=20, range=(0.0, 1.0))
    return float(sps.chisquare(counts).pvalue)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 6, 1.0), (1.3, 0, 0.8)])
def test_speculative_sampling_has_the_target_distribution(tiny_pair, temperature, top_k, top_p):
    target, draft = tiny_pair
    prompt = np.array([1, 5, 3], dtype=np.int32)
    kw = dict(max_new_tokens=6, temperature=temperature, top_k=top_k, top_p=top_p)

    def sample(**extra):
        return [target.generate(prompt, seed=s, **kw, **extra).tokens for s in range(1200)]

    spec = sample(draft=draft, speculative=SpeculativeConfig(k=3))
    assert pit_pvalue(target, prompt, spec, temperature, top_k, top_p) > 1e-3
    # Same test, broken verifier (accepts 90% of drafts whatever p says): must fail.
    broken = sample(draft=draft, speculative=SpeculativeConfig(k=3, forced_acceptance=0.9))
    assert pit_pvalue(target, prompt, broken, temperature, top_k, top_p) < 1e-6
    # And target-only sampling passes it too.
    assert pit_pvalue(target, prompt, sample(), temperature, top_k, top_p) > 1e-3


def test_lookup_sampling_has_the_target_distribution(tiny_pair):
    target, _ = tiny_pair
    prompt = np.array([1, 5, 3, 1, 5, 3, 1, 5], dtype=np.int32)
    seqs = [target.generate(prompt, max_new_tokens=6, temperature=1.0, seed=s,
                            speculative=SpeculativeConfig(k=3, method="lookup", lookup_ngram=2)).tokens
            for s in range(1200)]
    assert pit_pvalue(target, prompt, seqs, 1.0, 0, 1.0) > 1e-3
