"""Bad input everywhere: every case must raise a clear Python exception whose
message names what is wrong -- never crash, hang or return garbage.

Models are tiny random checkpoints made once per module; corrupt checkpoints
are copies of them with one thing broken. A watchdog (faulthandler) turns a
hang into a failure with a traceback.
"""

from __future__ import annotations

import faulthandler
import json
import math
import os
import shutil
import struct
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import specstream
from specstream import CacheConfig, SpeculativeConfig
from specstream.models import create_random
from specstream.safetensors import SafetensorsError

VOCAB = 100
TARGET = {"n_layer": 2, "d_model": 32, "n_head": 4, "vocab_size": VOCAB, "max_position_embeddings": 128}
DRAFT = {"n_layer": 1, "d_model": 16, "n_head": 2, "vocab_size": VOCAB, "max_position_embeddings": 128}
HANG_SECONDS = 60


@pytest.fixture(autouse=True)
def _no_hang():
    """Dumps every thread's stack and exits if one test runs too long."""
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("errors")
    return {
        "target": create_random(TARGET, root / "target", seed=1),
        "draft": create_random(DRAFT, root / "draft", seed=2),
        "draft_long": create_random({**DRAFT, "max_position_embeddings": 4096}, root / "draft_long"),
        "draft_vocab": create_random({**DRAFT, "vocab_size": 1000}, root / "draft_vocab"),
        "pythia_vocab": create_random({**DRAFT, "vocab_size": 50304}, root / "pythia_vocab"),
    }


@pytest.fixture(scope="module")
def model(dirs: dict[str, Path]) -> specstream.Model:
    return specstream.load(dirs["target"])


@pytest.fixture(scope="module")
def draft(dirs: dict[str, Path]) -> specstream.Model:
    return specstream.load(dirs["draft"])


@pytest.fixture
def broken(dirs: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the target checkpoint to damage."""
    return Path(shutil.copytree(dirs["target"], tmp_path / "model"))


# ------------------------------------------------------------------ helpers

def st_file(d: Path) -> Path:
    return d / "model.safetensors"


def read_st(d: Path) -> tuple[dict[str, Any], bytes]:
    raw = st_file(d).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_st(d: Path, header: dict[str, Any], data: bytes) -> None:
    hb = json.dumps(header).encode()
    st_file(d).write_bytes(struct.pack("<Q", len(hb)) + hb + data)


def edit_header(d: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    header, data = read_st(d)
    edit(header)
    write_st(d, header, data)


def edit_config(d: Path, **changes: Any) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def still_works(m: specstream.Model) -> None:
    """An error must leave the model usable."""
    out = m.generate([1, 2, 3], max_new_tokens=3)
    assert len(out.tokens) == 3 and out.tokens.dtype == np.int32


# --------------------------------------------------------------- model files

def test_missing_model_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        specstream.load(tmp_path / "nope")


def test_model_path_is_a_file(dirs: dict[str, Path]) -> None:
    with pytest.raises(FileNotFoundError, match="config.json: no such model directory"):
        specstream.load(dirs["target"] / "config.json")


def test_missing_config(broken: Path) -> None:
    (broken / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        specstream.load(broken)


def test_config_not_json(broken: Path) -> None:
    (broken / "config.json").write_text("{\"hidden_size\": 32,")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        specstream.load(broken)


def test_config_missing_field(broken: Path) -> None:
    cfg = json.loads((broken / "config.json").read_text())
    del cfg["num_attention_heads"]
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="num_attention_heads.*missing"):
        specstream.load(broken)


def test_unsupported_model_type(broken: Path) -> None:
    edit_config(broken, model_type="llama", architectures=["LlamaForCausalLM"])
    with pytest.raises(ValueError, match="model_type: unsupported architecture 'llama'"):
        specstream.load(broken)


def test_unsupported_architecture(broken: Path) -> None:
    edit_config(broken, architectures=["LlamaForCausalLM"])
    with pytest.raises(ValueError, match=r"architectures: unsupported architecture \['LlamaForCausalLM'\]"):
        specstream.load(broken)


def test_missing_safetensors(broken: Path) -> None:
    st_file(broken).unlink()
    with pytest.raises(SafetensorsError, match="contains neither model.safetensors nor"):
        specstream.load(broken)


def test_safetensors_shorter_than_8_bytes(broken: Path) -> None:
    st_file(broken).write_bytes(b"\x10\x00\x00")
    with pytest.raises(SafetensorsError, match="model.safetensors: file is 3 bytes, shorter than the 8-byte"):
        specstream.load(broken)


def test_safetensors_empty_file(broken: Path) -> None:
    st_file(broken).write_bytes(b"")
    with pytest.raises(SafetensorsError, match="file is 0 bytes"):
        specstream.load(broken)


def test_header_length_beyond_file(broken: Path) -> None:
    raw = st_file(broken).read_bytes()
    st_file(broken).write_bytes(struct.pack("<Q", len(raw)) + raw[8:])
    with pytest.raises(SafetensorsError, match=f"header length {len(raw)} runs past the end"):
        specstream.load(broken)


def test_header_length_absurd(broken: Path) -> None:
    raw = st_file(broken).read_bytes()
    st_file(broken).write_bytes(struct.pack("<Q", 2**63) + raw[8:])
    with pytest.raises(SafetensorsError, match="header length .* exceeds the"):
        specstream.load(broken)


def test_header_invalid_json(broken: Path) -> None:
    raw = st_file(broken).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    st_file(broken).write_bytes(raw[:8] + b"{" + b"x" * (n - 1) + raw[8 + n:])
    with pytest.raises(SafetensorsError, match="header is not valid JSON"):
        specstream.load(broken)


def test_header_not_utf8(broken: Path) -> None:
    raw = st_file(broken).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    st_file(broken).write_bytes(raw[:8] + b"\xff" * n + raw[8 + n:])
    with pytest.raises(SafetensorsError, match="not valid UTF-8"):
        specstream.load(broken)


def test_truncated_data(broken: Path) -> None:
    raw = st_file(broken).read_bytes()
    st_file(broken).write_bytes(raw[:-100])
    with pytest.raises(SafetensorsError, match="'embed_out.weight': data_offsets end .* beyond the data buffer"):
        specstream.load(broken)


def test_overlapping_offsets(broken: Path) -> None:
    def overlap(h: dict[str, Any]) -> None:
        h["embed_out.weight"]["data_offsets"] = list(h["gpt_neox.embed_in.weight"]["data_offsets"])
    edit_header(broken, overlap)
    with pytest.raises(SafetensorsError, match="overlap tensor"):
        specstream.load(broken)


def test_offsets_beyond_data(broken: Path) -> None:
    _, data = read_st(broken)

    def beyond(h: dict[str, Any]) -> None:
        e = h["gpt_neox.final_layer_norm.bias"]
        b, end = e["data_offsets"]
        e["data_offsets"] = [len(data) + 8, len(data) + 8 + end - b]
    edit_header(broken, beyond)
    with pytest.raises(SafetensorsError, match="'gpt_neox.final_layer_norm.bias': data_offsets end .* beyond"):
        specstream.load(broken)


def test_negative_offsets(broken: Path) -> None:
    edit_header(broken, lambda h: h["gpt_neox.final_layer_norm.bias"].update(data_offsets=[-4, 124]))
    with pytest.raises(SafetensorsError, match="'gpt_neox.final_layer_norm.bias': data_offsets .* negative"):
        specstream.load(broken)


def test_wrong_byte_size_for_shape(broken: Path) -> None:
    edit_header(broken, lambda h: h["gpt_neox.final_layer_norm.bias"].update(shape=[33]))
    with pytest.raises(SafetensorsError, match=r"final_layer_norm.bias': holds 128 bytes but shape \[33\] of F32 needs 132"):
        specstream.load(broken)


def test_unknown_dtype_name(broken: Path) -> None:
    edit_header(broken, lambda h: h["gpt_neox.layers.0.attention.dense.weight"].update(dtype="Q4_K"))
    with pytest.raises(SafetensorsError, match="attention.dense.weight': unknown dtype 'Q4_K'"):
        specstream.load(broken)


@pytest.mark.parametrize("dtype,itemsize", [("I64", 8), ("I32", 4), ("U16", 2), ("F64", 8), ("BOOL", 1)])
def test_non_float_weight_dtype(broken: Path, dtype: str, itemsize: int) -> None:
    # A valid safetensors entry whose dtype no GPT-NeoX weight may have (U16
    # would otherwise pass for bf16 bits and silently give garbage).
    name = "gpt_neox.layers.0.attention.dense.weight"

    def retype(h: dict[str, Any]) -> None:
        e = h[name]
        b, _ = e["data_offsets"]
        rows, cols = e["shape"]
        n = (rows * cols * 4) // itemsize
        e.update(dtype=dtype, shape=[n], data_offsets=[b, b + n * itemsize])
    edit_header(broken, retype)
    with pytest.raises(ValueError, match=f"tensor '{name}' has dtype {dtype}; GPT-NeoX weights must be F32"):
        specstream.load(broken)


def test_missing_tensor(broken: Path) -> None:
    edit_header(broken, lambda h: h.pop("gpt_neox.layers.1.attention.dense.weight"))
    with pytest.raises(ValueError, match=r"tensor gpt_neox\.layers\.1\.attention\.dense\.weight is missing"):
        specstream.load(broken)


def test_missing_embed_out(broken: Path) -> None:
    edit_header(broken, lambda h: h.pop("embed_out.weight"))
    with pytest.raises(ValueError, match=r"tensor embed_out\.weight is missing"):
        specstream.load(broken)


def test_tensor_3d(broken: Path) -> None:
    def reshape(h: dict[str, Any]) -> None:
        e = h["gpt_neox.layers.0.attention.dense.weight"]
        rows, cols = e["shape"]
        e["shape"] = [rows, cols // 2, 2]
    edit_header(broken, reshape)
    with pytest.raises(ValueError, match=r"layers\.0\.attention\.dense\.weight must be a C-contiguous 1-D or 2-D"):
        specstream.load(broken)


def test_transposed_weight(broken: Path) -> None:
    edit_header(broken, lambda h: h["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"].update(shape=[32, 128]))
    with pytest.raises(ValueError, match=r"layers\.0\.mlp\.dense_h_to_4h\.weight has shape \[32, 128\], "
                                         r"config implies \[128, 32\]"):
        specstream.load(broken)


def test_config_wider_than_weights(broken: Path) -> None:
    edit_config(broken, hidden_size=64, intermediate_size=256)
    with pytest.raises(ValueError, match=r"gpt_neox\.embed_in\.weight has shape \[100, 32\], config implies \[100, 64\]"):
        specstream.load(broken)


def test_config_more_layers_than_weights(broken: Path) -> None:
    edit_config(broken, num_hidden_layers=3)
    with pytest.raises(ValueError, match=r"gpt_neox\.layers\.2\.input_layernorm\.weight is missing"):
        specstream.load(broken)


def test_config_fewer_layers_than_weights(broken: Path) -> None:
    """A lying config: the checkpoint has 2 layers, config.json says 1.
    Loading would silently drop layer 1 (Hugging Face only warns)."""
    edit_config(broken, num_hidden_layers=1)
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor 'gpt_neox\.layers\.1\.[a-z_.]+' belongs to "
                                         r"layer 1, but config\.json declares num_hidden_layers = 1"):
        specstream.load(broken)


def test_config_vocab_disagrees(broken: Path) -> None:
    edit_config(broken, vocab_size=200)
    with pytest.raises(ValueError, match=r"embed_in\.weight has shape \[100, 32\], config implies \[200, 32\]"):
        specstream.load(broken)


def test_misaligned_data_loads_identically(dirs: dict[str, Path], broken: Path) -> None:
    # Not an error: the format allows a header of any length, so tensors may
    # start at odd addresses; the core must still never see a misaligned
    # float (UB, caught by the sanitizer build).
    header, data = read_st(broken)
    hb = json.dumps(header).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8 + 1)  # data starts at 1 mod 8
    st_file(broken).write_bytes(struct.pack("<Q", len(hb)) + hb + data)
    ids = [1, 2, 3, 4]
    for dtype in ("f32", "bf16", "f16"):
        np.testing.assert_array_equal(specstream.load(broken, dtype=dtype).forward(ids),
                                      specstream.load(dirs["target"], dtype=dtype).forward(ids))


def test_index_names_missing_shard(broken: Path) -> None:
    header, _ = read_st(broken)
    st_file(broken).unlink()
    index = {"metadata": {}, "weight_map": {k: "model-00001-of-00002.safetensors" for k in header if k != "__metadata__"}}
    (broken / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(SafetensorsError, match="shard 'model-00001-of-00002.safetensors' is missing"):
        specstream.load(broken)


@pytest.mark.parametrize("dtype", ["int3", "fp8", "F32 ", None, 32])
def test_invalid_load_dtype(dirs: dict[str, Path], dtype: Any) -> None:
    with pytest.raises(ValueError, match="dtype must be one of"):
        specstream.load(dirs["target"], dtype=dtype)


def test_unknown_device(dirs: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
        specstream.load(dirs["target"], device="tpu")


@pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="a GPU is present")
def test_cuda_without_gpu(dirs: dict[str, Path]) -> None:
    with pytest.raises(RuntimeError, match="device='cuda'.*no CUDA"):
        specstream.load(dirs["target"], device="cuda")


# ------------------------------------------------------------------ token ids

BAD_IDS = [
    pytest.param([1, VOCAB], ValueError, f"token id {VOCAB} at index 1 is outside the vocabulary \\[0, {VOCAB}\\)",
                 id="out-of-range"),
    pytest.param([5, 2**40], ValueError, "outside the vocabulary", id="huge"),
    pytest.param(np.array([2**63], dtype=np.uint64), ValueError, "outside the vocabulary", id="uint64"),
    pytest.param([3, -1], ValueError, "token id -1 at index 1 is negative", id="negative"),
    pytest.param([1.5, 2.0], TypeError, "must hold integers, got dtype float64", id="float"),
    pytest.param([1, math.nan], TypeError, "must hold integers", id="nan"),
    pytest.param([True, False], TypeError, "must hold integers, got dtype bool", id="bool"),
    pytest.param([1, None], TypeError, "must hold integers, got dtype object", id="none"),
    pytest.param([[1, 2]], ValueError, r"must be a 1-D sequence of token ids, got shape \(1, 2\)", id="2-D"),
    pytest.param(7, ValueError, r"1-D sequence .* shape \(\)", id="scalar"),
    pytest.param([], ValueError, "is empty", id="empty"),
    pytest.param(np.zeros(0, np.int32), ValueError, "is empty", id="empty-array"),
    pytest.param("hello world", TypeError, "not text; encode it with a Tokenizer", id="str"),
    pytest.param(b"hello", TypeError, "not text", id="bytes"),
]


@pytest.mark.parametrize("ids,exc,msg", BAD_IDS)
def test_forward_bad_ids(model: specstream.Model, ids: Any, exc: type, msg: str) -> None:
    with pytest.raises(exc, match=msg) as info:
        model.forward(ids)
    assert str(info.value).startswith("ids")


@pytest.mark.parametrize("ids,exc,msg", BAD_IDS)
def test_generate_bad_ids(model: specstream.Model, ids: Any, exc: type, msg: str) -> None:
    with pytest.raises(exc, match=msg) as info:
        model.generate(ids, max_new_tokens=2)
    assert str(info.value).startswith("prompt_ids")


@pytest.mark.parametrize("ids,exc,msg", BAD_IDS)
def test_stream_bad_ids_raise_at_call(model: specstream.Model, ids: Any, exc: type, msg: str) -> None:
    with pytest.raises(exc, match=msg):
        model.stream(ids, max_new_tokens=2)  # eagerly, not at the first next()


@pytest.mark.parametrize("ids,exc,msg", [p for p in BAD_IDS if p.id not in ("empty", "empty-array")])
def test_perplexity_bad_ids(model: specstream.Model, ids: Any, exc: type, msg: str) -> None:
    with pytest.raises(exc, match=msg):
        specstream.eval.perplexity(model, ids)


def test_integral_floats_are_accepted(model: specstream.Model) -> None:
    np.testing.assert_array_equal(model.forward([1.0, 2.0]), model.forward([1, 2]))


@pytest.mark.parametrize("stops,exc,msg", [
    ([VOCAB], ValueError, f"stop_token_ids: token id {VOCAB} .* outside the vocabulary"),
    ([-1], ValueError, "stop_token_ids: token id -1 .* negative"),
    ([[1]], ValueError, "stop_token_ids must be a 1-D"),
    ([0.5], TypeError, "stop_token_ids must hold integers"),
    ("ab", TypeError, "stop_token_ids must be a sequence of token ids"),
    (5, TypeError, "stop_token_ids must be a sequence of token ids"),
])
def test_bad_stop_token_ids(model: specstream.Model, stops: Any, exc: type, msg: str) -> None:
    with pytest.raises(exc, match=msg):
        model.generate([1, 2], max_new_tokens=2, stop_token_ids=stops)


# ------------------------------------------------------------ cache capacity

def test_forward_longer_than_cache(model: specstream.Model) -> None:
    with pytest.raises(ValueError, match="sequence of 9 tokens exceeds the KV cache capacity of 8 tokens"):
        model.forward(list(range(20)), cache=CacheConfig(policy="full", capacity=8))
    still_works(model)


def test_generate_prompt_longer_than_cache(model: specstream.Model) -> None:
    with pytest.raises(ValueError, match="exceeds the KV cache capacity of 8 tokens"):
        model.generate(list(range(20)), max_new_tokens=4, cache=CacheConfig(policy="full", capacity=8))


def test_generate_runs_past_cache(model: specstream.Model) -> None:
    with pytest.raises(ValueError, match="exceeds the KV cache capacity of 8 tokens"):
        model.generate(list(range(5)), max_new_tokens=10, cache=CacheConfig(policy="full", capacity=8))
    still_works(model)


def test_speculative_runs_past_draft_cache(model: specstream.Model, draft: specstream.Model) -> None:
    with pytest.raises(ValueError, match="exceeds the KV cache capacity of 5 tokens"):
        model.generate(list(range(10)), max_new_tokens=4, draft=draft, draft_cache=CacheConfig(capacity=5))


def test_perplexity_longer_than_cache(model: specstream.Model) -> None:
    with pytest.raises(ValueError, match="exceeds the KV cache capacity of 8 tokens"):
        specstream.eval.perplexity(model, list(range(20)), cache=CacheConfig(policy="full", capacity=8))


def test_full_cache_too_large_for_max_new_tokens(model: specstream.Model) -> None:
    with pytest.raises(ValueError, match="a full cache for .* tokens exceeds the limit.*bounded CacheConfig.policy"):
        model.generate([1, 2], max_new_tokens=2**40)


# ------------------------------------------------------------------ sampling

@pytest.mark.parametrize("kwargs,msg", [
    ({"temperature": -0.5}, "temperature must be a finite number >= 0, got -0.5"),
    ({"temperature": math.nan}, "temperature must be a finite number >= 0, got nan"),
    ({"temperature": math.inf}, "temperature must be a finite number >= 0, got inf"),
    ({"temperature": 1e39}, "temperature must be a finite number >= 0"),  # inf in float32
    ({"temperature": 1e-45}, r"temperature must be 0 \(greedy\) or >= 1e-30"),  # 1/T overflows
    ({"temperature": "1.0"}, "temperature must be a number, got '1.0'"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\], got 0.0"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\], got 1.5"),
    ({"top_p": -0.1}, r"top_p must be in \(0, 1\]"),
    ({"top_p": math.nan}, r"top_p must be in \(0, 1\], got nan"),
    ({"top_k": -1}, "top_k must be >= 0, got -1"),
    ({"top_k": 2.5}, "top_k must be an integer, got 2.5"),
    ({"seed": -1}, r"seed must be an int in \[0, 2\*\*64\), got -1"),
    ({"seed": 2**64}, r"seed must be an int in \[0, 2\*\*64\)"),
    ({"seed": 1.5}, "seed must be an int"),
    ({"max_new_tokens": -1}, "max_new_tokens must be a non-negative int"),
    ({"max_new_tokens": 2.0}, "max_new_tokens must be a non-negative int"),
    ({"max_new_tokens": 2**70}, "max_new_tokens must be a non-negative int"),
    ({"step_tokens": 0}, "step_tokens must be a positive int"),
])
def test_invalid_sampling_parameters(model: specstream.Model, kwargs: dict[str, Any], msg: str) -> None:
    args = {"max_new_tokens": 3, "temperature": 0.8, "seed": 1, **kwargs}
    with pytest.raises(ValueError, match=msg):
        model.generate([1, 2, 3], **args)


def test_huge_top_k_means_no_cut(model: specstream.Model) -> None:
    a = model.generate([1, 2], max_new_tokens=6, temperature=1.0, top_k=2**40, seed=7).tokens
    b = model.generate([1, 2], max_new_tokens=6, temperature=1.0, top_k=0, seed=7).tokens
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs,exc,msg", [
    ({"cache": "full"}, TypeError, "cache must be a CacheConfig, got str"),
    ({"cache": {"policy": "window"}}, TypeError, "cache must be a CacheConfig, got dict"),
    ({"draft": "tiny"}, TypeError, "draft must be a Model or MedusaHeads, got str"),
    ({"speculative": {"k": 2}, "draft": "DRAFT"}, TypeError, "speculative must be a SpeculativeConfig, got dict"),
    ({"draft_cache": 8}, TypeError, "draft_cache must be a CacheConfig, got int"),
])
def test_wrong_argument_types(model: specstream.Model, draft: specstream.Model, kwargs: dict[str, Any],
                              exc: type, msg: str) -> None:
    kwargs = {k: (draft if v == "DRAFT" else v) for k, v in kwargs.items()}
    with pytest.raises(exc, match=msg):
        model.generate([1, 2], max_new_tokens=2, **kwargs)


@pytest.mark.parametrize("chunk", [0, -1, 2.0, True, 2**21, 2**40])
def test_forward_bad_chunk(model: specstream.Model, chunk: Any) -> None:
    with pytest.raises(ValueError, match="chunk must be an int in"):
        model.forward([1, 2, 3], chunk=chunk)


def test_forward_cache_not_a_config(model: specstream.Model) -> None:
    with pytest.raises(TypeError, match="cache must be a CacheConfig, got tuple"):
        model.forward([1, 2], cache=(0, 0, 8, 8, 1, 0, 0))


# --------------------------------------------------------------- CacheConfig

@pytest.mark.parametrize("kwargs,exc,msg", [
    ({"policy": "lru"}, ValueError, "CacheConfig.policy: unknown policy 'lru'"),
    ({"policy": None}, ValueError, "CacheConfig.policy: unknown policy None"),
    ({"policy": "window", "window": 0}, ValueError, "CacheConfig.window must be >= 1, got 0"),
    ({"policy": "window", "window": -3}, ValueError, "CacheConfig.window must be >= 1, got -3"),
    ({"policy": "recompute", "window": 0}, ValueError, "CacheConfig.window must be >= 1"),
    ({"policy": "streaming", "n_sink": 8, "window": 4}, ValueError,
     r"CacheConfig.window \(4\) is smaller than CacheConfig.n_sink \(8\)"),
    ({"policy": "streaming", "n_sink": -1}, ValueError, "CacheConfig.n_sink must be >= 0"),
    ({"compress_every": 0}, ValueError, "CacheConfig.compress_every must be >= 1, got 0"),
    ({"max_drop": 0}, ValueError, "CacheConfig.max_drop must be >= 1 or None, got 0"),
    ({"overlap": 2, "compress_every": 2}, ValueError, r"CacheConfig.overlap \(2\) must be smaller than"),
    ({"overlap": -1}, ValueError, "CacheConfig.overlap must be >= 0"),
    ({"capacity": 0}, ValueError, "CacheConfig.capacity must be >= 1"),
    ({"window": 4.0}, TypeError, "CacheConfig.window must be an integer, got 4.0"),
    ({"n_sink": "4"}, TypeError, "CacheConfig.n_sink must be an integer, got '4'"),
    ({"window": True}, TypeError, "CacheConfig.window must be an integer, got True"),
    ({"compress_every": 1.5}, TypeError, "CacheConfig.compress_every must be an integer"),
    ({"capacity": "8"}, TypeError, "CacheConfig.capacity must be an integer"),
    ({"max_drop": 2.0}, TypeError, "CacheConfig.max_drop must be an integer"),
    # Values the C core could not size without int overflow.
    ({"policy": "window", "window": 2**31 - 1}, ValueError, "CacheConfig.window must be <= "),
    ({"policy": "window", "window": 4, "compress_every": 2**31 - 1}, ValueError,
     "CacheConfig.compress_every must be <= "),
    ({"capacity": 2**40}, ValueError, "CacheConfig.capacity must be <= "),
])
def test_invalid_cache_config(kwargs: dict[str, Any], exc: type, msg: str) -> None:
    with pytest.raises(exc, match=msg):
        CacheConfig(**kwargs)


# --------------------------------------------------------- SpeculativeConfig

@pytest.mark.parametrize("kwargs,exc,msg", [
    ({"k": 0}, ValueError, "SpeculativeConfig.k must be >= 1, got 0"),
    ({"k": -2}, ValueError, "SpeculativeConfig.k must be >= 1"),
    ({"k": 65}, ValueError, "SpeculativeConfig.k must be <= 64, got 65"),
    ({"k": 2.0}, TypeError, "SpeculativeConfig.k must be an integer"),
    ({"adaptive": True, "k_min": 5, "k_max": 2}, ValueError, "k_min <= k_max <= 64, got k_min=5 k_max=2"),
    ({"k_max": 100}, ValueError, "SpeculativeConfig.k_max must be <= 64, got 100"),
    ({"k_min": 0}, ValueError, "SpeculativeConfig.k_min must be >= 1"),
    ({"method": "medusa2"}, ValueError, "SpeculativeConfig.method: unknown method 'medusa2' \\(choose from none, draft"),
    ({"forced_acceptance": 1.5}, ValueError, r"forced_acceptance must be in \[0, 1\] or None, got 1.5"),
    ({"forced_acceptance": -0.1}, ValueError, r"forced_acceptance must be in \[0, 1\]"),
    ({"forced_acceptance": math.nan}, ValueError, r"forced_acceptance must be in \[0, 1\]"),
    ({"forced_acceptance": "high"}, TypeError, "SpeculativeConfig.forced_acceptance must be a number or None, got 'high'"),
    ({"ema_decay": 1.0}, ValueError, r"ema_decay must be in \[0, 1\), got 1.0"),
    ({"ema_decay": "x"}, TypeError, "SpeculativeConfig.ema_decay must be a number"),
    ({"adaptive": 1}, TypeError, "SpeculativeConfig.adaptive must be a bool"),
    ({"lookup_ngram": 0}, ValueError, "SpeculativeConfig.lookup_ngram must be >= 1"),
    ({"cost_ratio": "timed"}, ValueError, "cost_ratio must be a number or one of None, 'measured', got 'timed'"),
    ({"cost_ratio": -1.0}, ValueError, r"cost_ratio must be in \[0, 1000\] or None, measured, got -1.0"),
    ({"cost_ratio": math.inf}, ValueError, r"cost_ratio must be in \[0, 1000\]"),
    ({"cost_ratio": [0.1]}, TypeError, "SpeculativeConfig.cost_ratio must be a number"),
])
def test_invalid_speculative_config(kwargs: dict[str, Any], exc: type, msg: str) -> None:
    with pytest.raises(exc, match=msg):
        SpeculativeConfig(**kwargs)


def test_draft_with_lookup_method(model: specstream.Model, draft: specstream.Model) -> None:
    with pytest.raises(ValueError, match="a draft model was given but SpeculativeConfig.method is 'lookup'"):
        model.generate([1, 2], max_new_tokens=2, draft=draft, speculative=SpeculativeConfig(method="lookup"))


def test_draft_longer_context_than_target(model: specstream.Model, dirs: dict[str, Path]) -> None:
    long = specstream.load(dirs["draft_long"])
    with pytest.raises(ValueError, match=r"draft context \(4096\) is longer than the target's \(128\)"):
        model.generate([1, 2], max_new_tokens=2, draft=long)


def test_draft_vocabulary_cannot_match(model: specstream.Model, dirs: dict[str, Path]) -> None:
    other = specstream.load(dirs["draft_vocab"])
    with pytest.raises(ValueError, match=r"draft vocabulary \(1000 rows\) and target vocabulary \(100 rows\) "
                                         r"cannot be the same tokenizer"):
        model.generate([1, 2], max_new_tokens=2, draft=other)


def test_draft_vocabulary_vs_pythia_target(dirs: dict[str, Path]) -> None:
    target = specstream.load(dirs["pythia_vocab"])
    small = specstream.load(dirs["draft_vocab"])
    with pytest.raises(ValueError, match=r"draft vocabulary \(1000 rows\) and target vocabulary \(50304 rows\)"):
        target.generate([1, 2], max_new_tokens=2, draft=small)


def test_prompt_outside_shared_vocabulary(model: specstream.Model, dirs: dict[str, Path], tmp_path: Path) -> None:
    # The draft knows ids [0, 64) only: a prompt id it cannot embed is rejected by name.
    small = specstream.load(create_random({**DRAFT, "vocab_size": 64}, tmp_path / "d64"))
    with pytest.raises(IndexError, match=r"prompt token id 80 at index 1 is outside the vocabulary \[0, 64\)"):
        model.generate([1, 80], max_new_tokens=2, draft=small)


# ---------------------------------------------------------------- evaluation

@pytest.mark.parametrize("ids", [[5], np.array([7], dtype=np.int64)])
def test_perplexity_needs_two_tokens(model: specstream.Model, ids: Any) -> None:
    with pytest.raises(ValueError, match="perplexity needs at least 2 tokens, got 1"):
        specstream.eval.perplexity(model, ids)


def test_perplexity_empty(model: specstream.Model) -> None:
    with pytest.raises(ValueError, match="ids is empty"):
        specstream.eval.perplexity(model, [])


@pytest.mark.parametrize("kwargs,exc,msg", [
    ({"chunk": 0}, ValueError, r"chunk must be an int in \[1, 4096\], got 0"),
    ({"chunk": 5000}, ValueError, r"chunk must be an int in \[1, 4096\]"),
    ({"repeats": 0}, ValueError, "repeats must be a positive int"),
    ({"cache": "window"}, TypeError, "cache must be a CacheConfig"),
])
def test_perplexity_bad_arguments(model: specstream.Model, kwargs: dict[str, Any], exc: type, msg: str) -> None:
    with pytest.raises(exc, match=msg):
        specstream.eval.perplexity(model, [1, 2, 3], **kwargs)


def test_perplexity_model_not_a_model() -> None:
    with pytest.raises(TypeError, match="model must be a specstream Model, got str"):
        specstream.eval.perplexity("pythia", [1, 2, 3])


# -------------------------------------------------------------- after errors

def test_model_usable_after_errors(model: specstream.Model, draft: specstream.Model) -> None:
    for bad in ([VOCAB], [-1], []):
        with pytest.raises((ValueError, TypeError)):
            model.generate(bad, max_new_tokens=2, draft=draft)
    still_works(model)
    out = model.generate([1, 2, 3], max_new_tokens=5, draft=draft)
    ref = model.generate([1, 2, 3], max_new_tokens=5)
    np.testing.assert_array_equal(out.tokens, ref.tokens)


def test_core_rejects_bad_ids_itself(model: specstream.Model) -> None:
    # The binding is a second line of defence: bypassing the Python checks must
    # still give a named error, not an out-of-bounds read.
    cache = CacheConfig()._core_values()
    with pytest.raises(IndexError, match="token id 100 at index 1 is outside the vocabulary"):
        model._core.forward(np.array([1, VOCAB], dtype=np.int32), cache, 4)
    with pytest.raises(IndexError, match="token id -5 at index 0 is outside the vocabulary"):
        model._core.eval_nll(np.array([-5, 1], dtype=np.int32), cache, 1, False)
    with pytest.raises(ValueError, match="perplexity needs at least 2 tokens"):
        model._core.eval_nll(np.array([1], dtype=np.int32), cache, 1, False)
    with pytest.raises(ValueError, match="ids is empty"):
        model._core.forward(np.zeros(0, dtype=np.int32), cache, 4)
    with pytest.raises(ValueError, match="CacheConfig.policy: unknown policy 9"):
        model._core.forward(np.array([1], dtype=np.int32), {**cache, "policy": 9}, 4)
    with pytest.raises(TypeError, match="CacheConfig has no field 'windw'"):
        model._core.forward(np.array([1], dtype=np.int32), {**cache, "windw": 9}, 4)
