"""Per-head cache policies (docs/CACHE_POLICIES.md) against the NumPy reference
tests/ref_policies.py, token by token: logits, the eviction log and the keys
each token saw, for every scorer and allocator, both position modes, the
three share modes, lazy eviction (R > 1, overlap, max_drop), and batches
(prefill chunks decide heavy sets row by row, so chunking changes nothing).

The random test models attend almost uniformly, which would let a policy
that ignores its scores pass; these tests use them with a large query bias
per head (ref_policies.with_salient_heads) so that heavy hitters exist and
differ between heads. Which keys stay depends on scores the engine computes
in float32 and the reference in float64, so every case first checks that
the reference's smallest decision margin is far above float32 rounding.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

import specstream
from specstream import CacheConfig
from specstream.eval import perplexity
from specstream.safetensors import save
from conftest import rel_err, token_ids
from ref_policies import policy_trace, with_salient_heads
from reference import RefModel

TOL = 1e-4
MIN_MARGIN = 1e-4


class Case(NamedTuple):
    policy: str
    share: str = "head"
    positions: str = "text"
    r: int = 1
    overlap: int = 0
    max_drop: int = 0
    n_sink: int = 2
    window: int = 6
    heavy: int = 3
    model: str = "parallel"
    n: int = 48
    seed: int = 0
    extra: tuple = ()

    @property
    def name(self) -> str:
        s = f"{self.model}-{self.policy}-{self.share}-{self.positions}-R{self.r}o{self.overlap}d{self.max_drop}"
        return s + "".join(f"-{k}{v}" for k, v in self.extra) + f"-s{self.seed}"

    def fields(self) -> dict:
        return dict(policy=self.policy, n_sink=self.n_sink, window=self.window, heavy=self.heavy,
                    compress_every=self.r, overlap=self.overlap, max_drop=self.max_drop or None,
                    positions=self.positions, share=self.share, **dict(self.extra))


SCORE_POLICIES = ("h2o", "snapkv", "keynorm", "scissorhands", "adakv", "pyramidkv", "headaware")
CASES = [
    *[Case(p) for p in SCORE_POLICIES],
    *[Case(p, r=4, overlap=1, seed=12 if p == "scissorhands" else 1)
      for p in ("h2o", "snapkv", "scissorhands", "adakv", "headaware")],
    *[Case(p, positions="cache", seed=2) for p in ("h2o", "snapkv", "keynorm")],
    Case("h2o", positions="cache", r=3, seed=3),
    *[Case(p, share="layer", seed=4) for p in ("h2o", "snapkv", "pyramidkv")],
    *[Case(p, share="model", seed=5) for p in ("h2o", "keynorm")],
    Case("h2o", r=5, max_drop=2, seed=6),
    Case("scissorhands", extra=(("history", 6),), seed=7),
    Case("adakv", extra=(("adakv_floor", 0.0),), seed=8),
    Case("pyramidkv", extra=(("pyramid_beta", 2.0),), heavy=4, seed=9),
    Case("headaware", extra=(("scorer", "snapkv"),), r=3, seed=10),
    *[Case(p, model="sequential", window=5, n=40, seed=11) for p in ("h2o", "scissorhands", "headaware")],
]
IDS = [c.name for c in CASES]
assert len(set(IDS)) == len(IDS)


@pytest.fixture(scope="module")
def salient_dirs(model_dirs, tmp_path_factory) -> dict[str, Path]:
    """The test models with salient heads, written as model directories so
    that engine and reference read the same float32 weights."""
    root = tmp_path_factory.mktemp("salient")
    out = {}
    for name in ("parallel", "sequential"):
        ref = with_salient_heads(RefModel.from_dir(model_dirs[name]))
        d = root / name
        d.mkdir()
        shutil.copy(model_dirs[name] / "config.json", d / "config.json")
        save({k: np.asarray(v, np.float32) for k, v in ref.w.items()}, d / "model.safetensors")
        out[name] = d
    return out


@pytest.fixture(scope="module")
def salient(salient_dirs):
    return {name: (specstream.load(d), RefModel.from_dir(d)) for name, d in salient_dirs.items()}


@pytest.fixture(scope="module")
def expected(salient):
    cache = {}

    def get(case: Case):
        if case.name not in cache:
            model, ref = salient[case.model]
            ids = token_ids(case.n, model.vocab_size, seed=300 + case.seed)
            tr = policy_trace(ref, ids, **case.fields())
            assert tr.events, f"{case.name}: nothing is ever evicted"
            assert tr.margin > MIN_MARGIN, f"{case.name}: a decision is a near-tie ({tr.margin:.2e}); change the seed"
            cache[case.name] = (ids, tr)
        return cache[case.name]

    return get


def first_bad(got: np.ndarray, tr) -> list[int]:
    return [t for t in range(len(got)) if rel_err(got[t], tr.logits[t, : got.shape[1]]) >= TOL]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_logits_match_reference_token_by_token(salient, expected, case):
    model, _ = salient[case.model]
    ids, tr = expected(case)
    got = model.forward(ids, cache=CacheConfig(**case.fields()), chunk=1)
    bad = first_bad(got, tr)
    assert not bad, (f"first bad step {bad[0]} (of {len(bad)}); reference heavy sets there "
                     f"{tr.heavy_sets[bad[0]]}, events {[(e.step, len(e.dropped)) for e in tr.events][:4]}")


@pytest.mark.parametrize("case", [c for c in CASES if c.share != "model"], ids=[c.name for c in CASES
                                                                               if c.share != "model"])
def test_batches_decide_as_token_by_token(salient, expected, case):
    """Prefill chunks: every row's heavy sets are decided as if decoded alone."""
    model, _ = salient[case.model]
    ids, tr = expected(case)
    for chunk in (5, len(ids)):
        got = model.forward(ids, cache=CacheConfig(**case.fields()), chunk=chunk)
        bad = first_bad(got, tr)
        assert not bad, f"chunk {chunk}: first bad step {bad[0]} (of {len(bad)})"


@pytest.mark.parametrize("case", CASES[:9] + CASES[12:16], ids=IDS[:9] + IDS[12:16])
def test_eviction_log_and_visible_keys(salient, expected, case):
    model, _ = salient[case.model]
    ids, tr = expected(case)
    res = perplexity(model, ids, cache=CacheConfig(**case.fields()))
    assert [(int(s), int(d)) for s, d, _ in res.evictions.tolist()] == [(e.step, len(e.dropped)) for e in tr.events]
    heads = len(tr.visible[0][0])
    # the core reports layer 0's keys, its heads' mean when budgets differ
    want = [(sum(len(v) for v in tr.visible[t][0]) + heads // 2) // heads for t in range(len(ids))]
    np.testing.assert_array_equal(res.visible[: len(ids) - 1], want[: len(ids) - 1])
    np.testing.assert_allclose(res.nll, [-np.log(np.exp(r - r.max()) / np.exp(r - r.max()).sum())[i]
                                         for r, i in zip(tr.logits[:-1], ids[1:])], rtol=1e-3, atol=1e-4)


def test_cache_bytes_hold_the_budget(salient):
    """Memory is fixed at the budget: per-head budgets share their layer's
    pool, so every allocator takes what a uniform budget takes."""
    model, _ = salient["parallel"]
    ids = token_ids(12, model.vocab_size, seed=1)
    sizes = {p: perplexity(model, ids, cache=CacheConfig(policy=p, n_sink=2, window=64, heavy=8)).cache_bytes
             for p in ("h2o", "snapkv", "adakv", "pyramidkv", "headaware")}
    assert sizes["adakv"] == sizes["headaware"] == sizes["pyramidkv"] == sizes["snapkv"]
    c = model.config
    kv_row = 2 * c.n_layer * c.n_head * (c.d_model // c.n_head) * 4
    assert sizes["h2o"] >= kv_row * (2 + 64 + 8)


@pytest.mark.parametrize("policy", SCORE_POLICIES)
@pytest.mark.parametrize("sched", [(4, 12, 1, 0, 0, 5), (2, 10, 8, 3, 2, 6), (0, 9, 5, 0, 1, 4)])
def test_long_stream_schedule_and_memory(models, policy, sched):
    """300 tokens: the eviction log is the page's schedule, heavy sets fill to
    their budget as soon as enough keys have left, and no token sees more
    than the budget plus the lazy slack."""
    from ref_policies import run_schedule

    n = 300
    n_sink, window, r, max_drop, overlap, m = sched
    cache = CacheConfig(policy=policy, n_sink=n_sink, window=window, heavy=m, compress_every=r,
                        max_drop=max_drop or None, overlap=overlap)
    res = perplexity(models["draft"], token_ids(n, 1000, seed=32), cache=cache, chunk=1)
    spans = run_schedule(n, n_sink, window, m, r, max_drop, overlap)
    assert [(int(s), int(d)) for s, d, _ in res.evictions.tolist()] == [(t, len(s)) for t, s in enumerate(spans) if s]
    evicted = np.cumsum([len(s) for s in spans])
    run = [min(t + 1, n_sink) + (t + 1 - min(t + 1, n_sink) - int(evicted[t])) for t in range(n)]
    if policy in ("h2o", "snapkv", "keynorm", "scissorhands", "pyramidkv"):  # one layer: every head keeps m
        np.testing.assert_array_equal(res.visible, np.array(run) + np.minimum(m, evicted))
    assert res.visible.max() <= n_sink + window + m + r - 1 + (m if max_drop else 0)
    assert np.isfinite(res.nll).all()


# ------------------------------------------------------------ speculation

SPEC_POLICIES = [Case("h2o", r=2), Case("snapkv", r=4, overlap=1), Case("keynorm"), Case("scissorhands"),
                 Case("adakv", r=3), Case("pyramidkv", share="layer"), Case("headaware", positions="cache")]


@pytest.mark.parametrize("spec", [
    dict(method="draft", k=4),
    dict(method="tree", k=3, branch=2, max_nodes=6),
    dict(method="lookahead", k=3, lookahead_window=4, lookahead_guesses=3),
], ids=lambda s: s["method"])
@pytest.mark.parametrize("case", SPEC_POLICIES, ids=lambda c: f"{c.policy}-{c.share}-{c.positions}-R{c.r}")
def test_greedy_speculation_is_token_identical(salient, models, case, spec):
    """Heavy sets decided inside verification batches (chains and trees) are
    the ones target-only decoding decides, so greedy output is identical.
    The draft keeps a score-policy cache too, which decides over several
    forwards between commits. Seeds whose stream has a near-tie decision
    (the reference's margin) are skipped, and enough must remain."""
    model, ref = salient["parallel"]
    cache = CacheConfig(**case.fields())
    draft_cache = CacheConfig(policy="snapkv", n_sink=2, window=6, heavy=3, compress_every=2)
    checked = 0
    for seed in range(6):
        prompt = token_ids(6 + 3 * seed, model.vocab_size, seed=400 + seed)
        if spec["method"] == "lookahead":
            prompt = np.tile(prompt[:4], 3)
        want = model.generate(prompt, max_new_tokens=30, cache=cache).tokens
        tr = policy_trace(ref, np.concatenate([prompt, want]), **case.fields())
        if tr.margin <= MIN_MARGIN:
            continue
        got = model.generate(prompt, max_new_tokens=30, cache=cache, draft_cache=draft_cache,
                             draft=models["draft"] if spec["method"] != "lookahead" else None,
                             speculative=specstream.SpeculativeConfig(**spec)).tokens
        np.testing.assert_array_equal(got, want, err_msg=f"seed={seed}")
        checked += 1
    assert checked >= 3, f"only {checked} seeds without near-ties"


# ------------------------------------------------------------ bad configs

@pytest.mark.parametrize("fields,words", [
    (dict(policy="h2o", heavy=-1), ["heavy"]),
    (dict(policy="h2o", heavy=0), ["heavy", ">= 1"]),
    (dict(policy="h2o", heavy=4, positions="absolute"), ["positions", "text", "cache"]),
    (dict(policy="h2o", heavy=4, share="group"), ["share"]),
    (dict(policy="adakv", heavy=4, share="layer"), ["adakv", "share", "head"]),
    (dict(policy="headaware", heavy=4, share="model"), ["headaware", "share"]),
    (dict(policy="pyramidkv", heavy=4, share="model"), ["pyramidkv", "model"]),
    (dict(policy="h2o", heavy=4, scorer="keynorm"), ["own scorer", "scorer"]),
    (dict(policy="streaming", scorer="h2o"), ["scorer", "score policies"]),
    (dict(policy="streaming", share="layer"), ["share", "score policies"]),
    (dict(policy="scissorhands", heavy=4, history=65), ["history"]),
    (dict(policy="adakv", heavy=4, adakv_floor=1.5), ["adakv_floor"]),
    (dict(policy="pyramidkv", heavy=4, pyramid_beta=0.5), ["pyramid_beta"]),
    (dict(policy="h2o", heavy=4, n_sink=8, window=4), ["window", "n_sink"]),
])
def test_bad_configs_name_the_field(fields, words):
    with pytest.raises(ValueError) as e:
        CacheConfig(**fields)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_scorer_of_an_allocator_is_an_ablation(salient):
    """adakv with the h2o scorer is a different policy from adakv (snapkv)."""
    model, _ = salient["parallel"]
    ids = token_ids(40, model.vocab_size, seed=5)
    base = dict(policy="adakv", n_sink=2, window=6, heavy=3)
    a = model.forward(ids, cache=CacheConfig(**base), chunk=1)
    b = model.forward(ids, cache=CacheConfig(**base, scorer="h2o"), chunk=1)
    assert not np.allclose(a, b)
