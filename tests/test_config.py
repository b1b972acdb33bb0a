"""Tests of specstream.config.ModelConfig parsing and validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from specstream.config import ModelConfig

# The config.json of EleutherAI/pythia-70m, as released.
PYTHIA_70M: dict[str, Any] = {
    "architectures": ["GPTNeoXForCausalLM"],
    "bos_token_id": 0,
    "eos_token_id": 0,
    "hidden_act": "gelu",
    "hidden_size": 512,
    "initializer_range": 0.02,
    "intermediate_size": 2048,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 2048,
    "model_type": "gpt_neox",
    "num_attention_heads": 8,
    "num_hidden_layers": 6,
    "rotary_emb_base": 10000,
    "rotary_pct": 0.25,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.24.0",
    "use_cache": True,
    "use_parallel_residual": True,
    "vocab_size": 50304,
}


def patched(**changes: Any) -> dict[str, Any]:
    d = dict(PYTHIA_70M)
    for k, v in changes.items():
        if v is _DROP:
            d.pop(k)
        else:
            d[k] = v
    return d


_DROP = object()


def test_parses_pythia_70m() -> None:
    c = ModelConfig.from_dict(PYTHIA_70M)
    assert (c.n_layer, c.d_model, c.n_head, c.d_ff, c.vocab_size) == (6, 512, 8, 2048, 50304)
    assert c.head_dim == 64 and c.rotary_dim == 16
    assert c.rotary_emb_base == 10000.0 and isinstance(c.rotary_emb_base, float)
    assert c.use_parallel_residual and not c.gelu_tanh and not c.tie_word_embeddings
    assert c.attention_bias and c.bos_token_id == 0 and c.eos_token_id == 0
    assert c.torch_dtype == "float16"


def test_round_trip_through_hf_dict_and_dir(tmp_path: Path) -> None:
    c = ModelConfig.from_dict(PYTHIA_70M)
    assert ModelConfig.from_dict(c.to_hf_dict()) == c
    (tmp_path / "config.json").write_text(json.dumps(c.to_hf_dict()))
    assert ModelConfig.from_dir(tmp_path) == c
    assert ModelConfig.from_dir(tmp_path / "config.json") == c


def test_aliases_and_short_names() -> None:
    c = ModelConfig.from_dict(patched(rotary_emb_base=_DROP, rope_theta=500.0,
                                      rotary_pct=_DROP, partial_rotary_factor=0.5))
    assert c.rotary_emb_base == 500.0 and c.rotary_dim == 32
    short = ModelConfig.from_dict({"n_layer": 2, "d_model": 64, "n_head": 4, "d_ff": 256, "vocab_size": 100})
    assert short.head_dim == 16 and short.rotary_dim == 4
    # both spellings, same value: fine; different values: an error naming the field
    assert ModelConfig.from_dict(patched(rope_theta=10000.0)).rotary_emb_base == 10000.0
    with pytest.raises(ValueError, match="rotary_emb_base.*inconsistently"):
        ModelConfig.from_dict(patched(rope_theta=500.0))
    nested = ModelConfig.from_dict(patched(rotary_emb_base=_DROP, rotary_pct=_DROP,
                                           rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                            "partial_rotary_factor": 0.25}))
    assert nested.rotary_dim == 16


def test_tanh_gelu_variants() -> None:
    for act in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        c = ModelConfig.from_dict(patched(hidden_act=act))
        assert c.gelu_tanh and c.hidden_act == act


def test_defaults_follow_hugging_face() -> None:
    minimal = {k: PYTHIA_70M[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                          "intermediate_size", "vocab_size")}
    c = ModelConfig.from_dict(minimal)
    assert c.rotary_pct == 0.25 and c.use_parallel_residual and c.eos_token_id == 2


def test_replace_revalidates() -> None:
    c = ModelConfig.from_dict(PYTHIA_70M)
    assert c.replace(use_parallel_residual=False).use_parallel_residual is False
    assert c.replace(num_hidden_layers=2).n_layer == 2
    with pytest.raises(ValueError, match="num_attention_heads"):
        c.replace(n_head=7)


BAD_CONFIGS: list[tuple[dict[str, Any], str]] = [
    (patched(model_type="llama"), "model_type: unsupported architecture 'llama'"),
    (patched(architectures=["LlamaForCausalLM"]), "architectures: unsupported architecture"),
    (patched(architectures="GPTNeoXForCausalLM"), "architectures must be a list"),
    (patched(num_hidden_layers=_DROP), "num_hidden_layers.*missing"),
    (patched(hidden_size=_DROP), "hidden_size.*missing"),
    (patched(num_attention_heads=_DROP), "num_attention_heads.*missing"),
    (patched(intermediate_size=_DROP), "intermediate_size.*missing"),
    (patched(vocab_size=_DROP), "vocab_size.*missing"),
    (patched(num_hidden_layers=0), "num_hidden_layers.*positive"),
    (patched(hidden_size=-512), "hidden_size.*positive"),
    (patched(intermediate_size=2048.0), "intermediate_size.*integer"),
    (patched(vocab_size=True), "vocab_size.*integer"),
    (patched(max_position_embeddings=0), "max_position_embeddings.*positive"),
    (patched(num_attention_heads=7), "hidden_size \\(512\\) must be divisible by num_attention_heads \\(7\\)"),
    (patched(hidden_act="relu"), "hidden_act: unknown activation 'relu'"),
    (patched(hidden_act=None), "hidden_act: unknown activation"),
    (patched(rotary_pct=0.0), "rotary_pct must be in \\(0, 1\\]"),
    (patched(rotary_pct=1.5), "rotary_pct must be in \\(0, 1\\]"),
    (patched(rotary_pct=0.3), "rotary_pct: rotary_dim .* must be even"),
    (patched(rotary_pct="0.25"), "rotary_pct.*number"),
    (patched(rotary_emb_base=0), "rotary_emb_base must be > 1"),
    (patched(rotary_emb_base=float("nan")), "rotary_emb_base.*finite"),
    (patched(layer_norm_eps=0.0), "layer_norm_eps must be positive"),
    (patched(use_parallel_residual="yes"), "use_parallel_residual must be true or false"),
    (patched(tie_word_embeddings=True), "tie_word_embeddings: tied .*unsupported for GPT-NeoX"),
    (patched(attention_bias=1), "attention_bias must be true or false"),
    (patched(bos_token_id=-1), "bos_token_id"),
    (patched(eos_token_id=60000), "eos_token_id = 60000 is outside the vocabulary"),
    (patched(rope_scaling={"type": "linear", "factor": 2.0}), "rope_scaling.*unsupported"),
    (patched(rope_parameters={"rope_type": "yarn"}), "rope_parameters: rope_type 'yarn'"),
    (patched(initializer_range=-1.0), "initializer_range must be positive"),
    # Sizes are bounded before anything is built from them (fuzz finding 4).
    (patched(num_hidden_layers=4097), "num_hidden_layers \\(n_layer\\) = 4097 exceeds the limit of 4096"),
    (patched(hidden_size=2**40, num_attention_heads=8), "hidden_size .* exceeds the limit of 4194304"),
    (patched(intermediate_size=2**31), "intermediate_size .* exceeds the limit"),
    (patched(vocab_size=10**400), "vocab_size = an integer of about 401 digits exceeds the limit"),
    (patched(max_position_embeddings=2**31), "max_position_embeddings .* exceeds the limit"),
    # Numbers beyond a float (finding 5) or a float32 the core can use.
    (patched(rotary_emb_base=10**400), "rotary_emb_base must be a finite number"),
    (patched(layer_norm_eps=1e-300), "layer_norm_eps must be positive and a normal float32"),
    (patched(layer_norm_eps=1e39), "layer_norm_eps must be positive and a normal float32"),
]


@pytest.mark.parametrize("config,match", BAD_CONFIGS, ids=[m[:40] for _, m in BAD_CONFIGS])
def test_bad_config_names_the_field(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_dict(config)


def test_not_a_mapping() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        ModelConfig.from_dict([1, 2])  # type: ignore[arg-type]


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ModelConfig.from_dir(tmp_path)
    p = tmp_path / "config.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        ModelConfig.from_dir(tmp_path)
    p.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="UTF-8"):
        ModelConfig.from_dir(tmp_path)
    p.write_text(json.dumps(patched(hidden_act="swish")))
    with pytest.raises(ValueError, match=r"config.json: config field hidden_act"):
        ModelConfig.from_dir(tmp_path)


def test_frozen() -> None:
    c = ModelConfig.from_dict(PYTHIA_70M)
    with pytest.raises(AttributeError):
        c.n_layer = 3  # type: ignore[misc]
