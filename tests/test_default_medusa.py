"""The Medusa heads shipped for the bundled target
(specstream/default_models/medusa, trained by scripts/train_medusa.py): they
load, they predict held-out text well above chance, greedy decoding with them
is the target's own, and the training loss's gradient is right."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

import specstream
from specstream import CacheConfig, SpeculativeConfig
from specstream import safetensors as st
from specstream.defaults import default_medusa_path, default_text, load_default, load_default_medusa

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(specstream.__file__).resolve().parent / "default_models"
N_HEADS = 3
WINDOW = 255           # Model.forward_tree's largest batch
HELDOUT_START = 10000  # pg2554 token where scripts/train_medusa.py's held-out windows start
HELDOUT_WINDOWS = 3    # 765 positions per head
# Top-1 accuracy floors per head on those positions (chance: 1/8192 = 0.0001).
# Measured on them: 0.085, 0.079, 0.068; on 10,200 held-out positions
# (train_medusa.json): 0.105, 0.080, 0.075. The target's own head, shifted
# (the zero-initialised heads), scores 0.052, 0.050, 0.038 here.
ACCURACY_FLOOR = (0.07, 0.05, 0.05)


def _load_script():
    spec = importlib.util.spec_from_file_location("train_medusa", ROOT / "scripts" / "train_medusa.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bundled():
    target, _, tok = load_default()
    return target, load_default_medusa(target), tok


def _embed_out(target) -> np.ndarray:
    return np.asarray(st.load(Path(target.path) / "model.safetensors")["embed_out.weight"], np.float32)


def test_shipped_heads_load_and_are_listed():
    path = default_medusa_path()
    assert path == MODELS / "medusa" / "heads.safetensors"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    sums = dict(reversed(line.split("  ", 1)) for line in (MODELS / "SHA256SUMS").read_text().splitlines())
    assert sums.get("medusa/heads.safetensors") == digest, "heads.safetensors does not match SHA256SUMS"
    meta = st.read_header(path).metadata
    assert meta["n_heads"] == str(N_HEADS) and "t+2+i" in meta["convention"]
    assert meta["target_model_sha256"] == hashlib.sha256((MODELS / "target" / "model.safetensors").read_bytes()).hexdigest()
    tensors = st.load(path)
    assert sorted(tensors) == sorted(f"medusa.{i}.{n}" for i in range(N_HEADS) for n in ("w", "b"))
    heads = specstream.load_default_medusa()  # loads the target itself
    assert heads.n_heads == N_HEADS and heads.target.config.d_model == 256
    assert "medusa" in repr(heads) or "heads.safetensors" in repr(heads)


def test_missing_heads_and_foreign_target(monkeypatch, tmp_path, bundled):
    import specstream.defaults as defaults

    # a copy of the bundled target with the same weights is accepted, other weights are not
    copy = tmp_path / "target"
    shutil.copytree(MODELS / "target", copy)
    load_default_medusa(specstream.load(copy))
    raw = bytearray((copy / "model.safetensors").read_bytes())
    raw[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="not the bundled target"):
        load_default_medusa(specstream.load(copy))
    with pytest.raises(TypeError, match="target must be a specstream Model"):
        load_default_medusa("target")
    monkeypatch.setattr(defaults, "_MODELS_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="bundled Medusa heads are missing"):
        load_default_medusa(bundled[0])


def test_heldout_top1_accuracy_per_head(bundled):
    target, heads, tok = bundled
    ids = np.asarray(tok.encode(default_text("pg2554")), np.int64)
    w = st.load(heads.path)
    E = _embed_out(target)
    hits = np.zeros(N_HEADS)
    base_hits = np.zeros(N_HEADS)
    n = 0
    for j in range(HELDOUT_WINDOWS):
        s = HELDOUT_START + j * WINDOW
        _, x = target.forward_tree([], ids[s:s + WINDOW], np.arange(WINDOW) - 1)
        if j == 0:  # the engine's heads compute what is checked here
            for row in (0, 100, 254):
                want = []
                for i in range(N_HEADS):
                    z = x[row].astype(np.float64) @ w[f"medusa.{i}.w"].T.astype(np.float64) + w[f"medusa.{i}.b"]
                    want.append((x[row] + z / (1 + np.exp(-z))) @ E.T.astype(np.float64))
                np.testing.assert_allclose(heads.logits(x[row]), np.stack(want), atol=2e-3, rtol=1e-4)
        base = (x @ E.T).argmax(1)
        for i in range(N_HEADS):
            z = x @ w[f"medusa.{i}.w"].T + w[f"medusa.{i}.b"]
            pred = ((x + z / (1 + np.exp(-z))) @ E.T).argmax(1)
            label = ids[s + 2 + i:s + 2 + i + WINDOW]  # head i at token t predicts token t + 2 + i
            hits[i] += (pred == label).sum()
            base_hits[i] += (base == label).sum()
        n += WINDOW
    acc, base_acc = hits / n, base_hits / n
    for i in range(N_HEADS):
        assert acc[i] >= ACCURACY_FLOOR[i], f"head {i}: held-out top-1 {acc[i]:.3f} < {ACCURACY_FLOOR[i]}"
    # training did something: better than the zero-initialised heads (the target's head, shifted)
    assert acc.sum() >= base_acc.sum() + 0.05, (acc, base_acc)


@pytest.mark.parametrize("branch,max_nodes,cache", [
    (1, 3, CacheConfig()),
    (3, 16, CacheConfig()),
    (2, 8, CacheConfig(policy="streaming", n_sink=4, window=60)),
])
def test_greedy_medusa_is_the_targets_output(bundled, branch, max_nodes, cache):
    target, heads, tok = bundled
    prompt = tok.encode("It was a bright cold day in April, and the clocks were striking thirteen. He said")
    want = target.generate(prompt, 96, cache=cache, speculative=None)
    spec = SpeculativeConfig(method="medusa", k=heads.n_heads, branch=branch, max_nodes=max_nodes)
    got = target.generate(prompt, 96, cache=cache, draft=heads, speculative=spec)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    assert got.stats.target_forwards < len(want.tokens)  # the heads were accepted sometimes
    assert got.stats.tokens_per_target_forward > 1.0


def test_training_loss_gradient_matches_finite_differences():
    tm = _load_script()
    rng = np.random.default_rng(0)
    n, d, V, H = 6, 5, 13, 3
    x = rng.standard_normal((n, d))
    ws = rng.standard_normal((H, d, d)) * 0.5
    bs = rng.standard_normal((H, d)) * 0.5
    E = rng.standard_normal((V, d))
    hard = rng.integers(0, V, (n, H))
    soft = rng.random((H, n, V))
    soft /= soft.sum(axis=2, keepdims=True)
    eps = 1e-6
    for labels in (hard, soft):
        loss, per_head, dws, dbs = tm.medusa_loss(x, ws, bs, E, labels)
        assert np.isclose(loss, per_head.sum())
        for p, g in ((ws, dws), (bs, dbs)):
            num = np.zeros_like(p)
            for idx in np.ndindex(p.shape):
                old = p[idx]
                p[idx] = old + eps
                up = tm.medusa_loss(x, ws, bs, E, labels, grad=False)[0]
                p[idx] = old - eps
                down = tm.medusa_loss(x, ws, bs, E, labels, grad=False)[0]
                p[idx] = old
                num[idx] = (up - down) / (2 * eps)
            np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-7)
    # the loss is the mean cross-entropy of each head, summed (direct computation)
    ref = 0.0
    for i in range(H):
        z = x @ ws[i].T + bs[i]
        lg = (x + z / (1 + np.exp(-z))) @ E.T
        lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
        ref += np.mean(lse - lg[np.arange(n), hard[:, i]])
    assert np.isclose(tm.medusa_loss(x, ws, bs, E, hard)[0], ref)
    # one-hot soft labels are the hard ones
    onehot = np.zeros((H, n, V))
    for i in range(H):
        onehot[i, np.arange(n), hard[:, i]] = 1.0
    assert np.isclose(tm.medusa_loss(x, ws, bs, E, onehot)[0], tm.medusa_loss(x, ws, bs, E, hard)[0])
