"""The CPython binding and every C entry point it reaches, quickly.

Part of the sanitizer subset (tests/sanitize_subset.txt, run by
scripts/sanitize.sh under ASan + UBSan): every cache policy the package
knows through forward / eval_nll / generate, every drafting mode with greedy
and sampled decoding, generator and stream lifecycles (partly consumed,
dropped early, outliving their models), uninitialised core objects, and
several threads sharing one model with the GIL released. Assertions are
light; the point is that memory checkers see every path.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import specstream
from specstream import CacheConfig, SpeculativeConfig, _core
from specstream.generation import CACHE_POLICIES
from specstream.models import create_random

TARGET = dict(n_layer=2, d_model=32, n_head=4, d_ff=96, vocab_size=97, rotary_pct=0.5)
DRAFT = dict(n_layer=1, d_model=16, n_head=2, d_ff=48, vocab_size=97, use_parallel_residual=False,
             hidden_act="gelu_new")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("binding")
    return {
        "target": create_random(TARGET, root / "target", seed=3),
        "target_bf16": create_random(TARGET, root / "target_bf16", seed=3, dtype="bf16"),
        "target_f16": create_random(TARGET, root / "target_f16", seed=3, dtype="f16", max_shard_bytes=20_000),
        "draft": create_random(DRAFT, root / "draft", seed=4),
        "draft_padded": create_random({**DRAFT, "vocab_size": 128}, root / "draft_padded", seed=5),
    }


@pytest.fixture(scope="module")
def target(dirs: dict[str, Path]) -> specstream.Model:
    return specstream.load(dirs["target"])


@pytest.fixture(scope="module")
def draft(dirs: dict[str, Path]) -> specstream.Model:
    return specstream.load(dirs["draft"])


def cache_configs() -> list[CacheConfig]:
    """At least one valid configuration of every policy the package knows,
    with lazy eviction and refresh variants where the fields exist."""
    fields = CacheConfig.__dataclass_fields__
    out: list[CacheConfig] = [CacheConfig(), CacheConfig(capacity=300)]
    for policy in CACHE_POLICIES:
        base: dict[str, Any] = {"policy": policy, "n_sink": 2, "window": 8}
        tries = [base, {**base, "heavy": 3}]
        made = None
        for kw in tries:
            try:
                made = CacheConfig(**kw)
                break
            except ValueError:
                continue
        assert made is not None, f"no test configuration for cache policy {policy!r}"
        out.append(made)
        if policy in ("window", "streaming"):
            out.append(CacheConfig(**{**base, "compress_every": 5, "max_drop": 2, "overlap": 1}))
            if "refresh_budget" in fields:
                out.append(CacheConfig(**base, refresh_budget=2, refresh="uniform", compress_every=3))
                out.append(CacheConfig(**base, refresh_budget=2, refresh="structural", structural_ids=(3, 7, 11)))
                out.append(CacheConfig(**base, refresh_budget=2, refresh="entropy", entropy_threshold=2.5))
        elif "heavy" in fields and policy not in ("full", "recompute"):
            out.append(CacheConfig(**{**base, "heavy": 2, "compress_every": 4}))
    return out


CACHES = cache_configs()


def short(c: CacheConfig) -> str:
    """policy plus the fields that differ from the defaults, e.g. streaming-window=8."""
    default = CacheConfig()
    diff = [f"{k}={getattr(c, k)}" for k in c.__dataclass_fields__ if k != "policy" and getattr(c, k) != getattr(default, k)]
    return "-".join([c.policy, *diff])


def ids(n: int, seed: int = 0, vocab: int = 97) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n).astype(np.int32)


def test_every_policy_is_covered() -> None:
    assert {c.policy for c in CACHES} == set(CACHE_POLICIES)


@pytest.mark.parametrize("cache", CACHES, ids=short)
def test_forward_and_perplexity_every_policy(target: specstream.Model, cache: CacheConfig) -> None:
    x = ids(40, seed=1)
    logits = {chunk: target.forward(x, cache=cache, chunk=chunk) for chunk in (1, 7, 64)}
    for chunk, lg in logits.items():
        assert lg.shape == (40, 97) and np.isfinite(lg).all(), chunk
    for chunk in (1, 5):
        r = specstream.eval.perplexity(target, x, cache=cache, chunk=chunk, repeats=2)
        assert r.nll.shape == (39,) and np.isfinite(r.nll).all() and r.evictions.shape[1] == 3
    assert specstream.eval.perplexity(target, x, cache=cache, record_evictions=False).evictions.shape == (0, 3)


@pytest.mark.parametrize("cache", CACHES, ids=short)
def test_generate_every_policy_and_drafting_mode(target: specstream.Model, draft: specstream.Model,
                                                 cache: CacheConfig) -> None:
    prompt = np.tile(ids(5, seed=2), 3)
    modes = [
        {},
        {"draft": draft, "speculative": SpeculativeConfig(k=3)},
        {"draft": draft, "speculative": SpeculativeConfig(adaptive=True, k_min=1, k_max=5)},
        {"speculative": SpeculativeConfig(k=4, method="lookup", lookup_ngram=2)},
        {"draft": draft, "speculative": SpeculativeConfig(k=2, forced_acceptance=0.5)},
    ]
    samplers = [{}, {"temperature": 0.9, "seed": 1}, {"temperature": 1.2, "top_k": 5, "seed": 2},
                {"temperature": 0.8, "top_p": 0.7, "seed": 3}]
    for mode in modes:
        for s in samplers:
            out = target.generate(prompt, max_new_tokens=12, cache=cache, draft_cache=CacheConfig(policy="window",
                                  window=6), step_tokens=5, **mode, **s)
            assert out.tokens.dtype == np.int32 and 1 <= len(out.tokens) <= 12
            assert ((out.tokens >= 0) & (out.tokens < 97)).all()
            assert out.stats.new_tokens == len(out.tokens)


def test_recompute_window_beyond_the_internal_chunk(target: specstream.Model) -> None:
    # The core re-encodes a recompute window in chunks of 128 tokens.
    x = ids(132, seed=6)
    a = target.forward(x, cache=CacheConfig(policy="recompute", window=129), chunk=7)
    np.testing.assert_allclose(a[:129], target.forward(x[:129]), rtol=1e-4, atol=1e-4)
    assert np.isfinite(a).all()


def test_storage_dtypes_sharding_and_padded_draft(dirs: dict[str, Path], target: specstream.Model) -> None:
    x = ids(12, seed=3)
    ref = target.forward(x)
    from specstream.model import _DTYPE_ALIASES
    for name in ("target_bf16", "target_f16"):
        for dtype in sorted(set(_DTYPE_ALIASES.values())):  # int8, int4: quantized at load
            m = specstream.load(dirs[name], dtype=dtype)
            got = m.forward(x)
            tol = 0.25 if dtype == "int4" else 0.05  # int4: ~9% RMS weight error (measured 0.11-0.14)
            assert np.abs(got - ref).max() < tol * np.abs(ref).max(), (name, dtype)
    padded = specstream.load(dirs["draft_padded"])
    out = target.generate(x, max_new_tokens=10, draft=padded, temperature=1.0, seed=4)
    assert (out.tokens < 97).all()


def test_stream_lifecycles(target: specstream.Model, draft: specstream.Model) -> None:
    s = target.stream([1, 2, 3], max_new_tokens=30, draft=draft)
    it = iter(s)
    got = [next(it) for _ in range(4)]
    assert len(got) == 4 and s.stats.new_tokens >= 4 and s.cache_bytes > 0
    del it, s  # dropped mid-generation
    gc.collect()
    s = target.stream([1, 2, 3], max_new_tokens=0)
    assert list(s) == [] and s.stats.new_tokens == 0
    s = target.stream([1, 2, 3], max_new_tokens=5, stop_token_ids=list(range(97)))
    assert len(list(s)) == 1  # every id stops


def test_generator_outlives_its_models(dirs: dict[str, Path]) -> None:
    t, d = specstream.load(dirs["target"]), specstream.load(dirs["draft"])
    s = t.stream([4, 5, 6], max_new_tokens=20, draft=d)
    del t, d
    gc.collect()
    assert len(list(s)) == 20


def test_uninitialised_core_objects() -> None:
    m = _core.Model.__new__(_core.Model)
    with pytest.raises(RuntimeError, match="not initialised"):
        m.forward(np.array([1], np.int32), CacheConfig()._core_values(), 1)
    with pytest.raises(RuntimeError, match="not initialised"):
        m.weight_bytes
    g = _core.Generator.__new__(_core.Generator)
    with pytest.raises(RuntimeError, match="not initialised"):
        g.step(1)
    with pytest.raises(RuntimeError, match="not initialised"):
        g.stats()
    assert g.done and g.target_cache_bytes == 0
    del m, g
    gc.collect()


def test_core_argument_conversion_errors(target: specstream.Model) -> None:
    core = target._core
    cache = CacheConfig()._core_values()
    with pytest.raises(TypeError):
        core.forward(np.array([1], np.int32), list(cache), 1)
    with pytest.raises(TypeError):
        core.forward(np.array([1], np.int32), cache[:3], 1)
    with pytest.raises((ValueError, TypeError)):
        core.forward(np.array([["a"]]), cache, 1)
    with pytest.raises(ValueError, match="step size"):
        target.stream([1], 3)._gen.step(-1)


def test_threads_share_a_model(target: specstream.Model, draft: specstream.Model) -> None:
    x = ids(30, seed=5)
    cache = CacheConfig(policy="streaming", n_sink=2, window=8)
    want_logits = target.forward(x, cache=cache, chunk=4)
    want_tokens = target.generate(x, max_new_tokens=16, draft=draft).tokens
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                np.testing.assert_array_equal(target.forward(x, cache=cache, chunk=4), want_logits)
                np.testing.assert_array_equal(target.generate(x, max_new_tokens=16, draft=draft).tokens, want_tokens)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_runtime_knobs() -> None:
    n = specstream.get_num_threads()
    try:
        specstream.set_num_threads(1)
        assert specstream.get_num_threads() == 1
        for bad in (0, -1, 5000):
            with pytest.raises(ValueError, match="num_threads"):
                specstream.set_num_threads(bad)
    finally:
        specstream.set_num_threads(n)
    assert specstream.cpu_kernels() in ("scalar", "avx2", "avx512", "amx")
