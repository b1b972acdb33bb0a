"""Writes the seed corpora of the fuzz targets under fuzz/corpus/<target>/.

    python fuzz/make_seeds.py

Seeds are small valid inputs (so that mutations start from deep inside each
parser) plus hand-written edge cases. The output is committed; rerun this
after changing it. Deterministic: the same files every time.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from specstream import safetensors as st  # noqa: E402
from specstream.config import ModelConfig  # noqa: E402
from specstream.models import create_random  # noqa: E402

CORPUS = HERE / "corpus"
SEP = b"\n--specstream-fuzz--\n"


def _put(target: str, name: str, data: bytes | str) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def _st_bytes(tensors: dict, **kw) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "x.safetensors"
        st.save(tensors, p, **kw)
        return p.read_bytes()


def _raw_st(header: object, data: bytes = b"", pad: bool = True) -> bytes:
    raw = (header if isinstance(header, bytes) else json.dumps(header).encode()) if header is not None else b""
    if pad:
        raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


# ------------------------------------------------------------------ safetensors

def safetensors_seeds() -> None:
    rng = np.random.default_rng(0)
    _put("safetensors", "f32_2d.st", _st_bytes({"w": rng.standard_normal((3, 4)).astype(np.float32)}))
    _put("safetensors", "mixed.st", _st_bytes(
        {"a": np.arange(6, dtype=np.float16).reshape(2, 3), "b": np.array([1, 2, 3], dtype=np.int64),
         "c": np.array([True, False]), "d": np.zeros((0, 5), np.float32), "e": np.float64(3.5),
         "f": np.arange(4, dtype=np.uint8)},
        metadata={"format": "pt", "note": "seed"}))
    _put("safetensors", "bf16.st", _st_bytes({"x": np.linspace(-2, 2, 8, dtype=np.float32)}, dtypes={"x": "BF16"}))
    _put("safetensors", "empty_header.st", _raw_st({}))
    _put("safetensors", "metadata_only.st", _raw_st({"__metadata__": {"a": "b"}}))
    # Unaligned offsets (allowed by the format), a gap between tensors.
    _put("safetensors", "unaligned.st", _raw_st(
        {"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
         "b": {"dtype": "F32", "shape": [2], "data_offsets": [1, 9]},
         "c": {"dtype": "I16", "shape": [1], "data_offsets": [12, 14]}}, bytes(range(14))))
    # Edge cases that must be rejected.
    _put("safetensors", "too_short.st", b"\x01\x00")
    _put("safetensors", "len_only.st", struct.pack("<Q", 0))
    _put("safetensors", "len_huge.st", struct.pack("<Q", 2**64 - 1) + b"{}")
    _put("safetensors", "len_past_end.st", struct.pack("<Q", 100) + b"{}")
    _put("safetensors", "not_json.st", _raw_st(b"{not json"))
    _put("safetensors", "not_object.st", _raw_st([1, 2]))
    _put("safetensors", "bad_utf8.st", _raw_st(b'{"\xff": 1}'))
    _put("safetensors", "duplicate.st", _raw_st(
        b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
        b'"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}', b"\x00"))
    _put("safetensors", "overlap.st", _raw_st(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
         "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)))
    _put("safetensors", "offset_past_end.st", _raw_st(
        {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8)))
    _put("safetensors", "size_mismatch.st", _raw_st(
        {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)))
    _put("safetensors", "bad_dtype.st", _raw_st({"a": {"dtype": "F8", "shape": [1], "data_offsets": [0, 1]}}, b"\0"))
    _put("safetensors", "bool_shape.st", _raw_st({"a": {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}},
                                                 b"\0"))
    _put("safetensors", "neg_offsets.st", _raw_st({"a": {"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]}}))
    _put("safetensors", "float_offsets.st", _raw_st({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1.0]}},
                                                    b"\0"))
    _put("safetensors", "many_dims.st", _raw_st({"a": {"dtype": "U8", "shape": [1] * 40, "data_offsets": [0, 1]}},
                                                b"\0"))
    _put("safetensors", "huge_dims_empty.st", _raw_st(
        {"a": {"dtype": "F32", "shape": [0, 2**62, 2**62], "data_offsets": [0, 0]}}))
    _put("safetensors", "extra_field.st", _raw_st(
        {"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "x": 1}}, b"\0"))
    _put("safetensors", "deep.st", _raw_st(b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}"))
    _put("safetensors", "metadata_bad.st", _raw_st({"__metadata__": {"a": 1}}))


# ------------------------------------------------------------------ load

TINY = dict(n_layer=1, d_model=8, n_head=2, d_ff=16, vocab_size=16, rotary_pct=0.5, max_position_embeddings=64)


def load_seeds() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        variants = {
            "tiny_valid": (dict(TINY), "f32"),
            "tiny_f16": (dict(TINY), "f16"),
            "tiny_bf16": (dict(TINY), "bf16"),
            "tiny_sequential": (dict(TINY, use_parallel_residual=False, hidden_act="gelu_new", n_layer=2), "f32"),
            "tiny_no_attn_bias": (dict(TINY, attention_bias=False), "f32"),
        }
        for name, (shape, dtype) in variants.items():
            d = create_random(shape, Path(tmp) / name, seed=3, dtype=dtype)
            config = json.dumps(json.loads((d / "config.json").read_text()), indent=1).encode()
            _put("load", f"{name}.bin", config + SEP + (d / "model.safetensors").read_bytes())
        # Sharded: config SEP index SEP shard1 SEP shard2 ...
        d = create_random(dict(TINY, n_layer=2), Path(tmp) / "sharded", seed=4, max_shard_bytes=3000)
        shards = sorted(d.glob("model-*.safetensors"))
        assert len(shards) > 1
        _put("load", "sharded.bin", SEP.join([(d / "config.json").read_bytes(),
                                              (d / "model.safetensors.index.json").read_bytes()] +
                                             [s.read_bytes() for s in shards]))
        index = json.loads((d / "model.safetensors.index.json").read_text())
        first = next(iter(index["weight_map"]))
        bad = dict(index, weight_map=dict(index["weight_map"], **{first: "../model-00001-of-00002.safetensors"}))
        _put("load", "sharded_escape.bin", SEP.join([(d / "config.json").read_bytes(), json.dumps(bad).encode()] +
                                                    [s.read_bytes() for s in shards]))
        # Config only (the harness puts the tiny valid checkpoint beside it).
        d = Path(tmp) / "tiny_valid"
        cfg = json.loads((d / "config.json").read_text())
        _put("load", "config_only.bin", json.dumps(cfg).encode())
        _put("load", "config_wrong_shape.bin", json.dumps(dict(cfg, hidden_size=16)).encode())
        _put("load", "config_more_layers.bin", json.dumps(dict(cfg, num_hidden_layers=3)).encode())
        # A checkpoint whose tensors are integers / missing / extra.
        tensors = st.load(d / "model.safetensors")
        ints = {k: np.zeros(v.shape, np.int32) for k, v in tensors.items()}
        _put("load", "int_weights.bin", json.dumps(cfg).encode() + SEP + _st_bytes(ints))
        fewer = dict(list({k: np.array(v) for k, v in tensors.items()}.items())[:-1])
        _put("load", "missing_tensor.bin", json.dumps(cfg).encode() + SEP + _st_bytes(fewer))
        extra = {k: np.array(v) for k, v in tensors.items()}
        extra["gpt_neox.layers.7.mlp.dense_h_to_4h.weight"] = np.zeros((2, 2), np.float32)
        _put("load", "extra_tensor.bin", json.dumps(cfg).encode() + SEP + _st_bytes(extra))


# ------------------------------------------------------------------ config

def config_seeds() -> None:
    pythia70m = {
        "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
        "hidden_size": 512, "initializer_range": 0.02, "intermediate_size": 2048, "layer_norm_eps": 1e-05,
        "max_position_embeddings": 2048, "model_type": "gpt_neox", "num_attention_heads": 8,
        "num_hidden_layers": 6, "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": False,
        "torch_dtype": "float16", "transformers_version": "4.24.0", "use_cache": True,
        "use_parallel_residual": True, "vocab_size": 50304,
    }
    _put("config", "pythia70m.json", json.dumps(pythia70m, indent=2))
    _put("config", "tiny_short_names.json", json.dumps(TINY))
    _put("config", "rope_parameters.json", json.dumps(
        dict(pythia70m, rope_parameters={"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.5})))
    _put("config", "both_names.json", json.dumps(dict(pythia70m, n_layer=6, d_model=512)))
    _put("config", "inconsistent.json", json.dumps(dict(pythia70m, n_layer=7)))
    _put("config", "missing_field.json", json.dumps({k: v for k, v in pythia70m.items() if k != "hidden_size"}))
    _put("config", "bool_as_int.json", json.dumps(dict(pythia70m, num_hidden_layers=True)))
    _put("config", "float_size.json", json.dumps(dict(pythia70m, hidden_size=512.0)))
    _put("config", "llama.json", json.dumps(dict(pythia70m, model_type="llama", architectures=["LlamaForCausalLM"])))
    _put("config", "rope_scaling.json", json.dumps(dict(pythia70m, rope_scaling={"type": "linear", "factor": 2})))
    _put("config", "null_ids.json", json.dumps(dict(pythia70m, bos_token_id=None, eos_token_id=None)))
    _put("config", "tanh.json", json.dumps(dict(pythia70m, hidden_act="gelu_pytorch_tanh")))
    _put("config", "not_object.json", "[1, 2, 3]")
    _put("config", "empty.json", "")
    _put("config", "bad_utf8.json", b'{"hidden_size": "\xff"}')
    _put("config", "nan.json", '{"num_hidden_layers": 1, "hidden_size": 8, "num_attention_heads": 2, '
                               '"intermediate_size": 16, "vocab_size": 16, "rotary_pct": NaN}')
    # Round-trip seed: the dict a ModelConfig writes.
    _put("config", "to_hf_dict.json", json.dumps(ModelConfig.from_dict(TINY).to_hf_dict()))


# ------------------------------------------------------------------ tokenizer.json

def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable bytes map to themselves, the
    rest to code points from U+0100 on."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


def small_tokenizer() -> dict:
    """A complete byte-level BPE tokenizer.json: the 256-symbol alphabet and
    merges learned by hand for a few English words, one special token."""
    b2u = _bytes_to_unicode()
    vocab = {"<|endoftext|>": 0}
    for b in range(256):
        vocab[b2u[b]] = len(vocab)
    merges = []

    sp = b2u[ord(" ")]
    nl = b2u[ord("\n")]
    for a, b in [("h", "e"), ("t", "h"), ("th", "e"), (sp, "t"), (sp + "t", "he"), ("i", "n"), (sp, "a"),
                 ("n", "d"), (sp + "a", "nd"), ("e", "r"), ("o", "r"), (sp, "w"), (sp + "w", "or"), ("l", "d"),
                 (sp + "wor", "ld"), ("l", "l"), ("he", "ll"), ("hell", "o"), (nl, nl), (sp, sp),
                 (sp + sp, sp + sp)]:
        assert a in vocab and b in vocab, (a, b)
        merges.append(f"{a} {b}")
        vocab.setdefault(a + b, len(vocab))
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": 0, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def tokenizer_json_seeds() -> None:
    base = small_tokenizer()
    _put("tokenizer_json", "small_bpe.json", json.dumps(base, ensure_ascii=False, indent=1))
    v = json.loads(json.dumps(base))
    v["model"]["merges"] = [m.split(" ") for m in v["model"]["merges"]]
    v["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [dict(base["pre_tokenizer"], add_prefix_space=True)]}
    v["normalizer"] = None
    v["post_processor"] = None
    _put("tokenizer_json", "pairs_sequence.json", json.dumps(v, ensure_ascii=False))
    v = json.loads(json.dumps(base))
    n = len(v["model"]["vocab"])
    v["added_tokens"] += [
        {"id": n, "content": "<pad>", "single_word": False, "lstrip": True, "rstrip": True, "normalized": False,
         "special": True},
        {"id": n + 1, "content": " hello", "single_word": True, "lstrip": False, "rstrip": False,
         "normalized": True, "special": False},
        {"id": n + 2, "content": "caf\u00e9", "single_word": False, "lstrip": False, "rstrip": True,
         "normalized": True, "special": False},
    ]
    v["model"]["ignore_merges"] = True
    v["model"]["unk_token"] = "<|endoftext|>"
    v["model"]["fuse_unk"] = True
    v["pre_tokenizer"]["use_regex"] = False
    _put("tokenizer_json", "added_flags.json", json.dumps(v, ensure_ascii=False))
    # Minimal: a vocabulary without merges, no optional fields.
    _put("tokenizer_json", "minimal.json", json.dumps({
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
        "decoder": {"type": "ByteLevel"}}))
    # Rejected: unknown model, bad merge, duplicate ids, wrong added id.
    _put("tokenizer_json", "wordpiece.json", json.dumps({"model": {"type": "WordPiece", "vocab": {}}}))
    _put("tokenizer_json", "bad_merge.json", json.dumps({
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a c"]},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False}, "decoder": {"type": "ByteLevel"}}))
    _put("tokenizer_json", "dup_ids.json", json.dumps({
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": []},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False}, "decoder": {"type": "ByteLevel"}}))
    _put("tokenizer_json", "added_wrong_id.json", json.dumps({
        "added_tokens": [{"id": 7, "content": "<x>"}],
        "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False}, "decoder": {"type": "ByteLevel"}}))
    _put("tokenizer_json", "not_json.json", "{\"model\": ")


# ------------------------------------------------------------------ tokenizer text / ids

TEXTS = {
    "english.txt": "The quick brown fox jumps over the lazy dog. It's 12:30 -- isn't it? We'll see; they've gone.\n",
    "code.txt": "def f(x):\n    return {'a': [1, 2.5e-3], \"b\": x ** 2}  # comment\n\t\tif x != 0: pass\r\n",
    "unicode.txt": "caf\u00e9 na\u00efve e\u0301 \u00c5ngstr\u00f6m \u4e2d\u6587 \u65e5\u672c\u8a9e "
                   "\ud55c\uad6d\uc5b4 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \U0001f600\U0001f44d\U0001f3fd "
                   "\u2019quotes\u201d \u00a0nbsp\u2003em\u3000ideo",
    "specials.txt": "<|endoftext|>Hello<|endoftext|> <|endoftext|>\n<|padding|>",
    "whitespace.txt": "   \n\n\n  \t \u00a0 \u2028x  y   ",
    "digits.txt": "0123456789 \u0663\u0664 \u2460 3.14159 1,000,000",
    "contractions.txt": "'s't're've'm'll'd 'S 'T ''' don't DON'T",
}
ILL_FORMED = {
    "lone_cont.bin": b"a\x80b\xbfc",
    "truncated.bin": b"\xe2\x82 \xf0\x9f\x98 x",
    "overlong.bin": b"\xc0\xaf\xe0\x80\xaf\xf0\x80\x80\xaf",
    "surrogate.bin": b"\xed\xa0\x80\xed\xbf\xbf",
    "beyond.bin": b"\xf4\x90\x80\x80\xf5\xff\xfe",
    "nul.bin": b"a\x00b\x00\x00c",
    "controls.bin": bytes(range(32)) + b"\x7f",
}


def tokenizer_text_seeds() -> None:
    for name, text in TEXTS.items():
        _put("tokenizer_encode", name, text)
    for name, data in ILL_FORMED.items():
        _put("tokenizer_encode", name, data)
    _put("tokenizer_encode", "long_word.txt", "a" * 3000 + " " + "\u00e9" * 500)
    # Decode inputs: a flag byte, then little-endian uint16 ids.
    rng = np.random.default_rng(1)
    _put("tokenizer_decode", "small_ids.bin", b"\x00" + np.arange(0, 300, dtype="<u2").tobytes())
    _put("tokenizer_decode", "skip_special.bin", b"\x01" + np.array([0, 1, 0, 50276, 50277, 2], "<u2").tobytes())
    _put("tokenizer_decode", "random.bin", b"\x02" + rng.integers(0, 50300, 200).astype("<u2").tobytes())
    _put("tokenizer_decode", "out_of_range.bin", b"\x04" + np.array([5, 0xFF01, 0xFF00, 65000], "<u2").tobytes())
    _put("tokenizer_decode", "empty.bin", b"\x06")
    # Binding-level target: FuzzedDataProvider bytes, any will do.
    for i in range(4):
        _put("tokenizer_py", f"random{i}.bin", rng.integers(0, 256, 64 * (i + 1)).astype(np.uint8).tobytes())
    _put("tokenizer_py", "text.bin", b"\x00\x00\x02" + TEXTS["unicode.txt"].encode("utf-8"))
    # Config target: a tokenizer described by the bytes, then text.
    _put("tokenizer_config", "basic.bin", bytes([9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 20]) +
         bytes(x for i in range(20) for x in (i % 9, (i * 7) % 9, 0)) + bytes([0, 3, 3, 0x1f, 0, 65, 66, 67,
                                                                                  2, 0, 0, 120, 121, 0x40]) +
         b"abcd \xc3\xa9! 11 ABC xy")
    _put("tokenizer_config", "empty.bin", b"")


def main() -> None:
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    safetensors_seeds()
    load_seeds()
    config_seeds()
    tokenizer_json_seeds()
    tokenizer_text_seeds()
    for d in sorted(CORPUS.iterdir()):
        print(f"{d.name}: {len(list(d.iterdir()))} seeds")


if __name__ == "__main__":
    main()
