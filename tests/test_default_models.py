"""The bundled default models (specstream/default_models) and texts.

No torch needed: the Hugging Face reference logits were recorded by
scripts/check_default_models.py (golden) into
tests/fixtures/default_models_golden.npz, and the reference perplexity by
scripts/check_default_models.py (evaluate) into
benchmarks/results/default_models.json and the model cards.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

import specstream
from specstream import CacheConfig, SpeculativeConfig
from specstream import defaults

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "specstream" / "default_models"
GOLDEN = Path(__file__).resolve().parent / "fixtures" / "default_models_golden.npz"
RESULTS = ROOT / "benchmarks" / "results" / "default_models.json"

# sha256 of specstream/default_models/SHA256SUMS, which lists the digests of
# every shipped file that affects numerics. Update both (with
# scripts/check_default_models.py cards) only when the models are retrained.
SHA256SUMS_DIGEST = "3f70f1b1e4e472347a0177f517e1ceca792ce9cd5389c34fcfeac0e63e3b299e"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def models():
    return {name: specstream.load(MODELS / name, dtype="f32") for name in ("target", "draft")}


def test_checksums_of_shipped_files():
    sums = MODELS / "SHA256SUMS"
    assert _sha256(sums) == SHA256SUMS_DIGEST, "SHA256SUMS changed: were the default models retrained?"
    lines = sums.read_text().splitlines()
    assert len(lines) == 9  # target and draft files, the Medusa heads
    for line in lines:
        digest, rel = line.split("  ", 1)
        assert _sha256(MODELS / rel) == digest, f"{rel} does not match SHA256SUMS"


def test_shipped_weights_are_small_and_half_precision():
    total = sum((MODELS / n / "model.safetensors").stat().st_size for n in ("target", "draft"))
    assert total <= 32 * 1024 * 1024
    for name in ("target", "draft"):
        cfg = json.loads((MODELS / name / "config.json").read_text())
        assert cfg["torch_dtype"] == "float16"
        assert cfg["use_parallel_residual"] is True and cfg["rotary_pct"] == 0.25
        assert cfg["tie_word_embeddings"] is False and cfg["vocab_size"] == 8192
        assert (MODELS / name / "MODEL_CARD.md").is_file()
    # one tokenizer for both
    assert _sha256(MODELS / "target" / "tokenizer.json") == _sha256(MODELS / "draft" / "tokenizer.json")


@pytest.mark.parametrize("name", ["target", "draft"])
def test_logits_match_hugging_face_golden(models, golden, name):
    logits = models[name].forward(golden["ids"])
    assert logits.shape == (len(golden["ids"]), 8192)
    ours = logits[:, golden[f"{name}_cols"]].astype(np.float64)
    ref = golden[f"{name}_logits"].astype(np.float64)
    scale = max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(ours - ref).max())
    assert err <= 1e-3 * scale, f"{name}: max |logit difference| {err:.3g} (scale {scale:.3g})"
    full = logits.astype(np.float64)
    m = full.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(full - m).sum(1))
    np.testing.assert_allclose(lse, golden[f"{name}_lse"], rtol=0, atol=1e-3 * scale)
    np.testing.assert_array_equal(full.argmax(1), golden[f"{name}_argmax"])


def _recorded_ppl(name: str) -> float:
    return json.loads(RESULTS.read_text())["perplexity"][name]["pg2554_first1024_full"]["ppl"]


@pytest.mark.parametrize("name", ["target", "draft"])
def test_heldout_perplexity_matches_model_card(models, golden, name):
    ids = golden["pg2554_ids"].astype(np.int32)
    assert len(ids) == 1024
    expected = _recorded_ppl(name)
    card = (MODELS / name / "MODEL_CARD.md").read_text()
    assert f"PPL {expected:.4f}" in card
    got = specstream.eval.perplexity(models[name], ids, cache=CacheConfig(policy="full"), chunk=64).ppl
    assert abs(got - expected) <= 0.02 * expected, f"{name}: PPL {got:.4f}, model card says {expected:.4f}"
    # trained, not random: far below the vocabulary size
    assert got < 1000


def test_bundled_texts():
    pg = defaults.default_text("pg2554")
    wt = defaults.default_text("wikitext-2-test")
    assert pg.startswith("On an exceptionally hot evening early in July")
    assert " = Robert <unk> = " in wt[:200]
    assert len(pg) > 1_000_000 and len(wt) > 1_000_000
    assert defaults.default_text_path("pg2554").name == "pg2554.txt"
    assert "CC BY-SA 3.0" in (defaults.default_text_path("pg2554").parent / "NOTICE").read_text()
    with pytest.raises(ValueError):
        defaults.default_text("no-such-text")
    with pytest.raises(ValueError):
        defaults.default_model_dir("medium")


@pytest.fixture(scope="module")
def default_pair():
    return specstream.load_default() if hasattr(specstream, "load_default") else defaults.load_default()


def test_tokenizer_matches_hugging_face_ids(default_pair, golden):
    _, _, tok = default_pair
    ids = np.asarray(tok.encode(defaults.default_text("pg2554")[:20000]))[:1024]
    np.testing.assert_array_equal(ids, golden["pg2554_ids"].astype(np.int64))


def test_load_default_generates_readable_text(default_pair):
    target, draft, tok = default_pair
    assert target.config.n_layer == 6 and draft.config.n_layer == 2
    prompt = tok.encode("The young man went out into the street, and")
    plain = target.generate(prompt, max_new_tokens=40)
    spec = target.generate(prompt, max_new_tokens=40, draft=draft, speculative=SpeculativeConfig(k=4))
    np.testing.assert_array_equal(plain.tokens, spec.tokens)  # greedy speculative == target's own output
    assert spec.stats.acceptance_rate > 0.1  # measured ~0.25 greedy on held-out prompts
    text = tok.decode(spec.tokens)
    words = re.findall(r"[A-Za-z]+", text)
    assert len(words) >= 15, text
    common = {"the", "and", "of", "to", "a", "he", "in", "was", "that", "his", "it", "had", "with", "her", "she",
              "i", "you", "not", "at", "as", "him", "for", "on", "but", "is", "said", "all"}
    assert sum(w.lower() in common for w in words) >= 4, text
    sampled = target.generate(prompt, max_new_tokens=40, temperature=1.0, seed=5, draft=draft)
    assert len(sampled.tokens) == 40
    assert all(0 <= t < 8192 for t in sampled.tokens)
