"""Tests of specstream.models: Pythia shapes and random checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from specstream import safetensors as st
from specstream.config import ModelConfig
from specstream.models import PYTHIA_SHAPES, create_random, pythia_config, resolve_config

TINY = {"n_layer": 2, "d_model": 64, "n_head": 4, "vocab_size": 1000}

# (total params, non-embedding params) from the Pythia model card.
PYTHIA_COUNTS = {
    "70m": (70_426_624, 18_915_328),
    "160m": (162_322_944, 85_056_000),
    "410m": (405_334_016, 302_311_424),
    "1b": (1_011_781_632, 805_736_448),
    "1.4b": (1_414_647_808, 1_208_602_624),
    "2.8b": (2_775_208_960, 2_517_652_480),
    "6.9b": (6_857_302_016, 6_444_163_072),
    "12b": (11_846_072_320, 11_327_027_200),
}

PYTHIA_DIMS = {
    "70m": (6, 512, 8), "160m": (12, 768, 12), "410m": (24, 1024, 16), "1b": (16, 2048, 8),
    "1.4b": (24, 2048, 16), "2.8b": (32, 2560, 32), "6.9b": (32, 4096, 32), "12b": (36, 5120, 40),
}


@pytest.mark.parametrize("name", list(PYTHIA_SHAPES))
def test_pythia_shapes(name: str) -> None:
    c = pythia_config(name)
    assert (c.n_layer, c.d_model, c.n_head) == PYTHIA_DIMS[name]
    assert c.d_ff == 4 * c.d_model and c.rotary_pct == 0.25 and c.rotary_emb_base == 10000
    assert c.use_parallel_residual and not c.gelu_tanh and c.bos_token_id == c.eos_token_id == 0
    assert c.num_params() == PYTHIA_COUNTS[name][0]
    assert c.num_params(embeddings=False) == PYTHIA_COUNTS[name][1]


def test_shape_names() -> None:
    assert pythia_config("EleutherAI/pythia-160m-deduped") == pythia_config("160m")
    with pytest.raises(ValueError, match="unknown Pythia shape"):
        pythia_config("7b")


def test_resolve_config_overrides() -> None:
    c = resolve_config("70m", use_parallel_residual=False, vocab_size=1000)
    assert not c.use_parallel_residual and c.vocab_size == 1000 and c.n_layer == 6
    c = resolve_config(TINY)
    assert c.d_ff == 256 and c.eos_token_id == 0
    c = resolve_config({"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                        "vocab_size": 50, "intermediate_size": 40})
    assert c.d_ff == 40
    with pytest.raises(ValueError, match="unknown config field 'n_layers'"):
        resolve_config("70m", n_layers=3)
    with pytest.raises(ValueError, match="num_attention_heads"):
        resolve_config(TINY, n_head=5)


def test_create_random_writes_a_loadable_hf_dir(tmp_path: Path) -> None:
    d = create_random(TINY, tmp_path / "m", seed=3)
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]
    cfg = ModelConfig.from_dir(d)
    assert cfg == resolve_config(TINY, torch_dtype="float32")
    hf = json.loads((d / "config.json").read_text())
    assert hf["architectures"] == ["GPTNeoXForCausalLM"] and hf["model_type"] == "gpt_neox"

    tensors = st.load_dir_tensors(d)
    assert {k: v.shape for k, v in tensors.items()} == cfg.tensor_shapes()
    assert "gpt_neox.layers.1.attention.query_key_value.weight" in tensors
    assert all(v.dtype == np.float32 for v in tensors.values())
    assert st.read_header(d / "model.safetensors").metadata == {"format": "pt"}

    # Every parameter is non-trivial: LN weights near 1, biases small but non-zero.
    ln = tensors["gpt_neox.layers.0.input_layernorm.weight"]
    assert 0.8 < ln.min() and ln.max() < 1.2 and ln.std() > 0.01
    for name, v in tensors.items():
        if name.endswith(".bias"):
            assert 0.005 < v.std() < 0.05, name
    w = tensors["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"]
    assert abs(w.std() - 0.02) < 0.002


def test_create_random_is_deterministic_and_seeded(tmp_path: Path) -> None:
    a = st.load_dir_tensors(create_random(TINY, tmp_path / "a", seed=1))
    b = st.load_dir_tensors(create_random(TINY, tmp_path / "b", seed=1))
    c = st.load_dir_tensors(create_random(TINY, tmp_path / "c", seed=2))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["embed_out.weight"], c["embed_out.weight"])
    # distinct tensors of the same shape get distinct values
    assert not np.array_equal(a["gpt_neox.layers.0.attention.dense.weight"],
                              a["gpt_neox.layers.1.attention.dense.weight"])


def test_create_random_dtypes(tmp_path: Path) -> None:
    f32 = st.load_dir_tensors(create_random(TINY, tmp_path / "f32"))
    f16 = create_random(TINY, tmp_path / "f16", dtype="f16")
    bf16 = create_random(TINY, tmp_path / "bf16", dtype="bf16")
    assert ModelConfig.from_dir(f16).torch_dtype == "float16"
    assert ModelConfig.from_dir(bf16).torch_dtype == "bfloat16"
    h16 = st.load_dir_tensors(f16)
    b16 = st.load_dir_tensors(bf16)
    assert st.read_header(bf16 / "model.safetensors").tensors["embed_out.weight"].dtype == "BF16"
    for name, x in f32.items():
        assert h16[name].dtype == np.float16 and b16[name].dtype == np.uint16
        np.testing.assert_array_equal(h16[name], x.astype(np.float16))
        np.testing.assert_allclose(st.bf16_to_f32(b16[name]), x, rtol=2**-8, atol=0)
    with pytest.raises(ValueError, match="dtype"):
        create_random(TINY, tmp_path / "x", dtype="int8")


def test_create_random_sharded(tmp_path: Path) -> None:
    single = st.load_dir_tensors(create_random(TINY, tmp_path / "one"))
    d = create_random(TINY, tmp_path / "sharded", max_shard_bytes=150_000)
    names = sorted(p.name for p in d.iterdir())
    assert st.INDEX_FILE in names and st.SINGLE_FILE not in names
    shards = [n for n in names if n.startswith("model-")]
    assert len(shards) >= 3 and all(n.endswith(f"-of-{len(shards):05d}.safetensors") for n in shards)
    index = json.loads((d / st.INDEX_FILE).read_text())
    assert set(index["weight_map"]) == set(single)
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in single.values())
    sharded = st.load_dir_tensors(d)
    for name in single:
        np.testing.assert_array_equal(sharded[name], single[name])
    for shard in shards:  # only an oversized single tensor may exceed the limit
        h = st.read_header(d / shard)
        total = sum(t.nbytes for t in h.tensors.values())
        assert total <= 150_000 or len(h.tensors) == 1

    # rewriting the same directory unsharded leaves no stale shards behind
    create_random(TINY, d)
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]


def test_create_random_overrides(tmp_path: Path) -> None:
    d = create_random(TINY, tmp_path / "m", use_parallel_residual=False, hidden_act="gelu_new",
                      attention_bias=False)
    cfg = ModelConfig.from_dir(d)
    assert not cfg.use_parallel_residual and cfg.gelu_tanh and not cfg.attention_bias
    t = st.load_dir_tensors(d)
    assert "gpt_neox.layers.0.attention.query_key_value.bias" not in t
    assert "gpt_neox.layers.0.mlp.dense_h_to_4h.bias" in t


def test_logits_are_not_degenerate(tmp_path: Path) -> None:
    """The final LN output is ~unit scale, so embed_out gives logits with std near 1."""
    t = st.load_dir_tensors(create_random(TINY, tmp_path / "m"))
    rng = np.random.default_rng(0)
    h = rng.standard_normal((16, 64)) * t["gpt_neox.final_layer_norm.weight"] + t["gpt_neox.final_layer_norm.bias"]
    logits = h @ t["embed_out.weight"].T
    assert 0.7 < logits.std() < 1.5
