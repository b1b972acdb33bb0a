"""Speculation beyond chains: tree attention, token trees, Lookahead
decoding and Medusa heads, all verified by one loop.

* Tree attention (``Model.forward_tree``): every node's logits equal the
  independent NumPy reference run over the prefix and the node's path.
* Greedy: every drafter x cache policy x tree shape gives the tokens of
  target-only decoding (bit for bit, after evictions too).
* Sampling: the multi-candidate rule emits tokens distributed as the
  target's p (chi-square, 3 shapes of p / q); the same test fails a rule
  without the residual correction after a rejected sibling; end to end, the
  randomized PIT test of test_generate.py passes for trees and Lookahead.
* Statistics and bad input.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

import specstream
from specstream import CacheConfig, SpeculativeConfig, _core
from specstream.medusa import save_medusa
from specstream.models import create_random
from conftest import token_ids
from test_generate import VOCAB, pit_pvalue, tiny_pair  # noqa: F401  (fixture)


# ------------------------------------------------------------ tree attention

def random_tree(n: int, rng: np.random.Generator) -> np.ndarray:
    """parents[i] in [-1, i): a random tree hanging off the prefix."""
    return np.array([rng.integers(-1, i) if i else -1 for i in range(n)], dtype=np.int32)


def path_of(parents: np.ndarray, i: int) -> list[int]:
    path = []
    while i >= 0:
        path.append(i)
        i = int(parents[i])
    return path[::-1]


@pytest.mark.parametrize("name", ["parallel", "sequential"])
@pytest.mark.parametrize("n", [1, 5, 16])
def test_tree_forward_matches_the_reference_per_path(models, refs, name, n):
    m, ref = models[name], refs[name]
    rng = np.random.default_rng(n)
    prefix = token_ids(9, m.vocab_size, seed=n)
    tokens = token_ids(n, m.vocab_size, seed=100 + n)
    parents = random_tree(n, rng)
    logits, hidden = m.forward_tree(prefix, tokens, parents)
    assert logits.shape == (n, m.vocab_size) and hidden.shape == (n, m.config.d_model)
    for i in range(n):
        ids = np.concatenate([prefix, tokens[path_of(parents, i)]])
        want = ref.forward(ids)[-1]
        err = np.abs(logits[i] - want).max() / np.abs(want).max()
        assert err < 2e-4, (i, err)


def test_tree_forward_under_a_bounded_cache(models):
    """A tree after evictions sees what a chain through its path would."""
    m = models["parallel"]
    cache = CacheConfig(policy="streaming", n_sink=2, window=8)
    prefix = token_ids(30, 1000, seed=1)
    tokens = token_ids(6, 1000, seed=2)
    parents = np.array([-1, 0, 0, 1, -1, 4], dtype=np.int32)
    logits, _ = m.forward_tree(prefix, tokens, parents, cache=cache)
    for i in range(6):
        chain = m.forward(np.concatenate([prefix, tokens[path_of(parents, i)]]), cache=cache, chunk=1)[-1]
        np.testing.assert_allclose(logits[i], chain, rtol=0, atol=2e-5 * np.abs(chain).max())


# ------------------------------------------------------------ greedy identity

POLICIES = [
    CacheConfig(),
    CacheConfig(policy="streaming", n_sink=2, window=10),
    CacheConfig(policy="streaming", n_sink=4, window=12, compress_every=6, max_drop=2, overlap=1),
    CacheConfig(policy="window", window=9, compress_every=3),
    CacheConfig(policy="recompute", window=10),
]

SPECS = [
    SpeculativeConfig(method="tree", k=3, branch=2, max_nodes=6),
    SpeculativeConfig(method="tree", k=5, branch=3, max_nodes=16),
    SpeculativeConfig(method="tree", k=2, branch=4, max_nodes=5),
    SpeculativeConfig(method="tree", k=4, branch=1, max_nodes=4),  # a chain through the tree path
    SpeculativeConfig(method="lookahead", k=3, lookahead_window=4, lookahead_guesses=3),
    SpeculativeConfig(method="lookahead", k=2, lookahead_window=6, lookahead_guesses=5),
]


def describe(x) -> str:
    if isinstance(x, CacheConfig):
        return f"{x.policy}-w{x.window}-R{x.compress_every}"
    return f"{x.method}-k{x.k}-b{x.branch}-n{x.max_nodes}" if x.method == "tree" else f"{x.method}-k{x.k}"


@pytest.mark.parametrize("spec", SPECS, ids=describe)
@pytest.mark.parametrize("cache", POLICIES, ids=describe)
def test_greedy_trees_and_lookahead_are_token_identical(models, cache, spec):
    target, draft = models["parallel"], models["draft"]
    for seed in range(3):
        prompt = token_ids(4 + 6 * seed, 1000, seed=seed)
        # a repetitive prompt gives Lookahead's pool something to find
        if spec.method == "lookahead":
            prompt = np.tile(prompt[:4], 3)
        want = target.generate(prompt, max_new_tokens=36, cache=cache).tokens
        got = target.generate(prompt, max_new_tokens=36, cache=cache,
                              draft=draft if spec.uses_draft_model else None, speculative=spec)
        np.testing.assert_array_equal(got.tokens, want, err_msg=f"seed={seed}")


def test_trees_accept_more_per_forward_than_chains(models):
    target = models["parallel"]
    prompt = token_ids(20, 1000, seed=5)
    chain = target.generate(prompt, 60, draft=target, speculative=SpeculativeConfig(k=4)).stats
    assert chain.tokens_per_target_forward == pytest.approx(5.0, abs=0.2)  # self-drafting accepts all
    other = models["draft"]
    c = target.generate(prompt, 60, draft=other, speculative=SpeculativeConfig(k=4)).stats
    t = target.generate(prompt, 60, draft=other, speculative=SpeculativeConfig(method="tree", k=4, branch=3,
                                                                           max_nodes=24)).stats
    assert t.nodes_per_step > c.nodes_per_step
    assert t.acceptance_by_depth[0] >= c.acceptance_by_depth[0]


# ------------------------------------------------------------ Medusa

@pytest.fixture(scope="module")
def medusa_heads(models, tmp_path_factory):
    """Random heads for the parallel model: 3 sharing embed_out, one own lm_head."""
    m = models["parallel"]
    d, v = m.config.d_model, m.vocab_size
    rng = np.random.default_rng(0)
    heads = {}
    for i in range(4):
        heads[f"medusa.{i}.w"] = rng.standard_normal((d, d)).astype(np.float32) * 0.05
        heads[f"medusa.{i}.b"] = rng.standard_normal(d).astype(np.float32) * 0.05
    heads["medusa.3.lm_head"] = rng.standard_normal((v, d)).astype(np.float32) * 0.05
    path = tmp_path_factory.mktemp("medusa") / "heads.safetensors"
    save_medusa(path, heads)
    return path, heads


def test_medusa_heads_compute_their_definition(models, medusa_heads):
    m = models["parallel"]
    path, w = medusa_heads
    heads = specstream.load_medusa(path, m)
    assert heads.n_heads == 4
    _, hidden = m.forward_tree([1, 2, 3], [4], [-1])
    x = hidden[0].astype(np.float64)
    got = heads.logits(hidden[0])
    from reference import read_model_dir
    embed_out = read_model_dir(m.path)["embed_out.weight"]
    for i in range(4):
        t = w[f"medusa.{i}.w"].astype(np.float64) @ x + w[f"medusa.{i}.b"]
        h = x + t / (1 + np.exp(-t))
        lm = w[f"medusa.{i}.lm_head"] if i == 3 else embed_out
        want = lm @ h
        assert np.abs(got[i] - want).max() / np.abs(want).max() < 1e-4, i


@pytest.mark.parametrize("cache", POLICIES[:3], ids=describe)
@pytest.mark.parametrize("k,branch,max_nodes", [(2, 2, 4), (4, 3, 12), (3, 1, 3)])
def test_greedy_medusa_is_token_identical(models, medusa_heads, cache, k, branch, max_nodes):
    m = models["parallel"]
    heads = specstream.load_medusa(medusa_heads[0], m)
    spec = SpeculativeConfig(method="medusa", k=k, branch=branch, max_nodes=max_nodes)
    for seed in range(2):
        prompt = token_ids(7, 1000, seed=seed)
        want = m.generate(prompt, 30, cache=cache).tokens
        r = m.generate(prompt, 30, cache=cache, draft=heads, speculative=spec)
        np.testing.assert_array_equal(r.tokens, want)
        assert r.stats.nodes_per_step <= max_nodes


# ------------------------------------------------------------ sampling

def broken_siblings(p, q, m, rng):
    """The sibling rule without the residual correction: rejected siblings
    leave p unchanged (only q loses them). Not lossless."""
    cands = rng.choice(len(p), size=m, replace=False, p=q)
    q_work = q.copy()
    for x in cands:
        if rng.random() * q_work[x] < p[x]:
            return x
        q_work[x] = 0
        q_work /= q_work.sum()
    return rng.choice(len(p), p=p)


def chi2_pvalue(samples: np.ndarray, p: np.ndarray) -> float:
    counts = np.bincount(samples, minlength=len(p))
    keep = p * len(samples) >= 5  # pool the rare tokens into one bin
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(p[keep], p[~keep].sum()) * len(samples)
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return float(sps.chisquare(obs, exp * (obs.sum() / exp.sum())).pvalue)


CASES = {
    "overlapping": (np.array([.30, .25, .15, .10, .08, .06, .04, .02]), np.array([.10, .30, .05, .25, .10, .10, .05, .05])),
    "draft-peaked": (np.array([.15, .15, .15, .15, .1, .1, .1, .1]), np.array([.70, .10, .05, .05, .04, .03, .02, .01])),
    "disjoint-mass": (np.array([.5, .3, .2, 0, 0, 0, 0, 0]), np.array([0, .1, .1, .2, .2, .2, .1, .1])),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("m", [1, 2, 4])
def test_sibling_rule_emits_the_target_distribution(case, m):
    p, q = ((x / x.sum()).astype(np.float32) for x in CASES[case])
    n = 40000
    got = _core.verify_siblings(p, q, m, n, 1234 + m)
    assert chi2_pvalue(got, p.astype(np.float64)) > 1e-3
    # deterministic candidates (the m most probable tokens): one-hot q
    det = _core.verify_siblings(p, None, m, n, 99 + m)
    assert chi2_pvalue(det, p.astype(np.float64)) > 1e-3


@pytest.mark.parametrize("case", ["overlapping", "draft-peaked"])
def test_the_chi_square_test_fails_a_rule_without_residual(case):
    p, q = (x / x.sum() for x in CASES[case])
    rng = np.random.default_rng(7)
    broken = np.array([broken_siblings(p, q, 3, rng) for _ in range(40000)])
    assert chi2_pvalue(broken, p) < 1e-6


@pytest.mark.parametrize("spec", [SpeculativeConfig(method="tree", k=3, branch=3, max_nodes=9),
                                  SpeculativeConfig(method="tree", k=2, branch=2, max_nodes=4)], ids=describe)
def test_tree_sampling_has_the_target_distribution(tiny_pair, spec):  # noqa: F811
    target, draft = tiny_pair
    prompt = np.array([1, 5, 3], dtype=np.int32)
    seqs = [target.generate(prompt, max_new_tokens=6, temperature=1.0, seed=s, draft=draft,
                            speculative=spec).tokens for s in range(1200)]
    assert pit_pvalue(target, prompt, seqs, 1.0, 0, 1.0) > 1e-3


def test_lookahead_sampling_has_the_target_distribution(tiny_pair):  # noqa: F811
    target, _ = tiny_pair
    prompt = np.array([1, 5, 3, 1, 5, 3, 1, 5], dtype=np.int32)
    spec = SpeculativeConfig(method="lookahead", k=2, lookahead_window=3, lookahead_guesses=4)
    seqs = [target.generate(prompt, max_new_tokens=6, temperature=0.8, seed=s, speculative=spec).tokens
            for s in range(1200)]
    assert pit_pvalue(target, prompt, seqs, 0.8, 0, 1.0) > 1e-3


def test_tree_sampling_is_reproducible(models):
    t, d = models["parallel"], models["draft"]
    kw = dict(max_new_tokens=30, temperature=1.0, draft=d,
              speculative=SpeculativeConfig(method="tree", k=3, branch=2, max_nodes=8))
    a = t.generate([1, 2, 3], seed=4, **kw).tokens
    np.testing.assert_array_equal(a, t.generate([1, 2, 3], seed=4, **kw).tokens)


# ------------------------------------------------------------ stats, errors

def test_depth_statistics(models):
    r = models["parallel"].generate(token_ids(10, 1000), 40, draft=models["draft"],
                                    speculative=SpeculativeConfig(method="tree", k=3, branch=2, max_nodes=8))
    s = r.stats
    assert 1 <= len(s.acceptance_by_depth) <= 3
    assert all(0.0 <= a <= 1.0 for a in s.acceptance_by_depth)
    assert s.nodes_per_step <= 8 and s.drafted == pytest.approx(s.nodes_per_step * s.target_forwards - 0, abs=8)
    assert s.tokens_per_target_forward == pytest.approx(39 / s.target_forwards)


@pytest.mark.parametrize("kwargs,msg", [
    ({"method": "tree", "branch": 0}, "SpeculativeConfig.branch must be >= 1, got 0"),
    ({"method": "tree", "k": 5, "max_nodes": 3}, r"max_nodes \(3\) must be >= k \(5\)"),
    ({"method": "lookahead", "k": 1}, "k must be >= 2 for lookahead"),
    ({"method": "lookahead", "k": 9, "lookahead_window": 20, "lookahead_guesses": 20},
     "runs .* tokens per step, more than the limit of 255"),
])
def test_bad_speculative_configs(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        SpeculativeConfig(**kwargs)


def test_bad_drafts(models, medusa_heads, tmp_path):
    m, d = models["parallel"], models["draft"]
    with pytest.raises(ValueError, match="method 'tree' needs draft="):
        m.generate([1, 2], 4, speculative=SpeculativeConfig(method="tree"))
    with pytest.raises(ValueError, match="method 'medusa' needs draft=specstream.load_medusa"):
        m.generate([1, 2], 4, speculative=SpeculativeConfig(method="medusa"))
    heads = specstream.load_medusa(medusa_heads[0], m)
    with pytest.raises(ValueError, match="Medusa heads were given as draft but SpeculativeConfig.method is 'tree'"):
        m.generate([1, 2], 4, draft=heads, speculative=SpeculativeConfig(method="tree"))
    with pytest.raises(ValueError, match=r"k \(5\) exceeds the 4 Medusa heads"):
        m.generate([1, 2], 4, draft=heads, speculative=SpeculativeConfig(method="medusa", k=5, max_nodes=8))
    # heads whose hidden size disagrees with the target
    with pytest.raises(ValueError, match=r"Medusa head 0: tensor w has shape \[64, 64\], the target model implies "
                                         r"\[32, 32\]"):
        specstream.load_medusa(medusa_heads[0], d)
    # a tree that does not fit a full cache of fixed capacity
    with pytest.raises(ValueError, match="token tree pending at position .* needs .* cache slots, more than the KV "
                                         "cache capacity of 30"):
        m.generate(token_ids(20, 1000), 8, cache=CacheConfig(capacity=30), draft=d,
                   speculative=SpeculativeConfig(method="tree", k=4, branch=4, max_nodes=16))
