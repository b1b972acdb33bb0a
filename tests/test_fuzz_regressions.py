"""Regression tests from fuzzing (fuzz/, docs/RELIABILITY.md).

Every input that broke a parser's contract -- a crash, a hang, an exception
other than the documented ones, a sanitizer report -- is a test here, through
the public API. Findings whose fix lies outside fuzz/ and is still open are
strict xfails: they pass while the bug is there and fail (XPASS) once it is
fixed, as a reminder to drop the marker and the matching entry of
fuzz/_common.KNOWN. The reproducer files themselves are in fuzz/regressions/
(replayed under the sanitizers by fuzz/run.sh).

The seed corpora are replayed too: each parser must accept the valid seeds
and reject the others with its documented error.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import specstream
from specstream import safetensors as st
from specstream.config import ModelConfig
from specstream.tokenizer import Tokenizer, TokenizerFormatError

REPO = Path(__file__).resolve().parents[1]
FUZZ = REPO / "fuzz"
CORPUS = FUZZ / "corpus"
SEP = b"\n--specstream-fuzz--\n"
TINY_CFG = dict(num_hidden_layers=1, hidden_size=8, num_attention_heads=2, intermediate_size=16, vocab_size=16,
                rotary_pct=0.5)
# What a parser may raise for bad input (the contract).
DOCUMENTED = (ValueError, TypeError, KeyError, IndexError)


def _files(target: str) -> list[Path]:
    return sorted(p for p in (CORPUS / target).iterdir() if p.is_file()) + sorted(
        p for p in (FUZZ / "regressions" / target).glob("*") if p.is_file() and p.suffix != ".md")


def _model_dir(tmp_path: Path, config: dict | bytes, weights: bytes | None = None) -> Path:
    if weights is None:
        weights = (CORPUS / "load" / "tiny_valid.bin").read_bytes().split(SEP)[1]
    (tmp_path / "config.json").write_bytes(config if isinstance(config, bytes) else json.dumps(config).encode())
    (tmp_path / "model.safetensors").write_bytes(weights)
    return tmp_path


# ------------------------------------------------------------- corpus replay


@pytest.mark.parametrize("path", _files("safetensors"), ids=lambda p: p.name)
def test_safetensors_corpus(path: Path, tmp_path: Path) -> None:
    f = tmp_path / "model.safetensors"
    f.write_bytes(path.read_bytes())
    try:
        header = st.read_header(f)
    except st.SafetensorsError:
        return
    arrays = st.load(f, header=header)
    for name, info in header.tensors.items():
        assert arrays[name].shape == info.shape and arrays[name].nbytes == info.nbytes


@pytest.mark.parametrize("path", _files("config"), ids=lambda p: p.name)
def test_config_corpus(path: Path, tmp_path: Path) -> None:
    f = tmp_path / "config.json"
    f.write_bytes(path.read_bytes())
    try:
        cfg = ModelConfig.from_json(f)
    except ValueError:
        return
    assert ModelConfig.from_dict(cfg.to_hf_dict()) == cfg


@pytest.mark.parametrize("path", _files("load"), ids=lambda p: p.name)
def test_load_corpus(path: Path, tmp_path: Path) -> None:
    parts = path.read_bytes().split(SEP)  # as fuzz/fuzz_load.py lays them out
    if len(parts) <= 2:
        d = _model_dir(tmp_path, parts[0], parts[1] if len(parts) == 2 else None)
    else:
        d = tmp_path
        (d / "config.json").write_bytes(parts[0])
        (d / "model.safetensors.index.json").write_bytes(parts[1])
        for i, shard in enumerate(parts[2:]):
            (d / f"model-{i + 1:05d}-of-{len(parts) - 2:05d}.safetensors").write_bytes(shard)
    try:
        model = specstream.load(d)
    except ValueError:
        return
    logits = model.forward([0, 1, 2])
    assert logits.shape == (3, model.vocab_size)


@pytest.mark.parametrize("path", _files("tokenizer_json"), ids=lambda p: p.name)
def test_tokenizer_json_corpus(path: Path) -> None:
    try:
        tok = Tokenizer.from_str(path.read_bytes().decode("utf-8", errors="replace"))
    except TokenizerFormatError:
        return
    for text in ["", "hello world", "caf\u00e9 <|endoftext|>", "\x00\ud7ff\U0010ffff"]:
        ids = tok.encode(text)
        assert ids.size == 0 or ids.max() < tok.vocab_size
        tok.decode(ids)


# ------------------------------------------------------------- C tokenizer

def _small_tokenizer() -> Tokenizer:
    return Tokenizer.from_file(CORPUS / "tokenizer_json" / "small_bpe.json")


def test_decode_nothing_gives_empty_text() -> None:
    """fuzz/regressions/tokenizer_encode/empty, tokenizer_decode/no-ids:
    decoding no ids (or only skipped special tokens) computed NULL + 0 in
    tok_utf8_repair (undefined behaviour, reported by UBSan); the result must
    be the empty string."""
    tok = _small_tokenizer()
    assert tok.decode([]) == ""
    assert tok.decode(np.zeros(0, dtype=np.int32)) == ""
    assert tok.decode([0, 0], skip_special_tokens=True) == ""
    assert tok.encode("").size == 0
    stream = tok.decode_stream(skip_special_tokens=True)
    assert stream.push(0) == "" and stream.flush() == ""


def test_encode_ill_formed_and_control_bytes_round_trip() -> None:
    """Seeds of the tokenizer_encode target through the binding: every valid
    string round-trips, surrogates are refused with UnicodeEncodeError."""
    tok = _small_tokenizer()
    for path in sorted((CORPUS / "tokenizer_encode").iterdir()):
        text = path.read_bytes().decode("utf-8", errors="replace")
        assert tok.decode(tok.encode(text)) == tok.normalize(text), path.name
    with pytest.raises(UnicodeEncodeError):
        tok.encode("a\ud800b")


def test_decode_out_of_range_ids_are_value_errors() -> None:
    tok = _small_tokenizer()
    for ids in ([tok.vocab_size], [-1], [2**31], [2**63], [2**64 + 5], np.array([2**32], dtype=np.uint64)):
        with pytest.raises(ValueError):
            tok.decode(ids)
        stream = tok.decode_stream()
        if not isinstance(ids, np.ndarray):
            with pytest.raises(ValueError):
                stream.push(ids[0])


# ------------------------------------------------------------- fixed findings
# Open findings were strict xfails here (and entries of fuzz/_common.KNOWN)
# until their fix; these are the findings 4-9 of docs/RELIABILITY.md.


@pytest.mark.parametrize("field", ["rotary_pct", "rotary_emb_base", "layer_norm_eps", "hidden_size"])
def test_config_huge_integer_is_a_value_error(field: str) -> None:
    """fuzz/regressions/config/overflow-int-field: {"rotary_pct": 10**400}
    (an integer literal in the JSON) -> OverflowError from math.isfinite /
    float(); hidden_size=10**400 -> OverflowError computing rotary_dim."""
    d = dict(TINY_CFG)
    d[field] = 10**400
    with pytest.raises(ValueError, match=field.split("_")[0]):
        ModelConfig.from_dict(d)


def test_config_json_nested_too_deeply_is_a_value_error(tmp_path: Path) -> None:
    f = tmp_path / "config.json"
    f.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError):
        ModelConfig.from_json(f)


def test_tokenizer_json_nested_too_deeply_is_a_format_error() -> None:
    with pytest.raises(TokenizerFormatError):
        Tokenizer.from_str('{"model": ' + "[" * 100_000 + "]" * 100_000 + "}")


@pytest.mark.parametrize("change", [dict(hidden_size=2**32, num_attention_heads=2**30), dict(vocab_size=2**40),
                                    dict(intermediate_size=2**33)], ids=["hidden_size", "vocab_size", "d_ff"])
def test_load_config_sizes_beyond_int32_are_value_errors(tmp_path: Path, change: dict) -> None:
    with pytest.raises(ValueError, match=f"{next(iter(change))}.* exceeds the limit"):
        specstream.load(_model_dir(tmp_path, dict(TINY_CFG, **change)))


def test_load_huge_layer_count_fails_fast(tmp_path: Path) -> None:
    """A 200-byte config.json declaring 3 million layers must be rejected at
    once (the core allows 4096), not after minutes of building tensor names."""
    d = _model_dir(tmp_path, dict(TINY_CFG, num_hidden_layers=3_000_000))
    code = textwrap.dedent(f"""
        import specstream
        try:
            specstream.load({str(d)!r})
        except ValueError as e:
            assert "num_hidden_layers" in str(e) and "4096" in str(e), e
        else:
            raise SystemExit("3,000,000 layers were accepted")
    """)
    try:
        subprocess.run([sys.executable, "-c", code], timeout=4, check=True, cwd=REPO)
    except subprocess.TimeoutExpired:
        pytest.fail("load() did not reject 3,000,000 layers within 4 s")


def test_safetensors_huge_empty_shape_is_a_safetensors_error(tmp_path: Path) -> None:
    """fuzz/corpus/safetensors/huge_dims_empty.st: shape [0, 2**62, 2**62]
    holds 0 bytes (valid by the byte count) but is larger than any NumPy
    array may be; also more than 64 dimensions."""
    for shape in ([0, 2**62, 2**62], [1] * 65):
        header = json.dumps({"a": {"dtype": "U8", "shape": shape, "data_offsets": [0, int(np.prod(shape))]}})
        raw = header.encode() + b" " * (-(8 + len(header)) % 8)
        f = tmp_path / "x.safetensors"
        f.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * int(np.prod(shape)))
        with pytest.raises(st.SafetensorsError, match="'a'"):
            st.load(f)


@pytest.mark.parametrize("where", ["vocab", "added_tokens"])
def test_tokenizer_json_lone_surrogate_is_a_format_error(where: str) -> None:
    """Found by fuzz/run.sh tokenizer_json with SPECSTREAM_FUZZ_STRICT=1:
    JSON may spell a lone surrogate ("\\ud800"); the parser passes it on and
    UTF-8 encoding it fails in Tokenizer.__init__ / the binding."""
    vocab = {"a": 0, "\ud800": 1} if where == "vocab" else {"a": 0, "b": 1}
    added = [{"id": 2, "content": "\udc00x"}] if where == "added_tokens" else []
    text = json.dumps({"model": {"type": "BPE", "vocab": vocab, "merges": []}, "added_tokens": added,
                       "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
                       "decoder": {"type": "ByteLevel"}})
    with pytest.raises(TokenizerFormatError, match="t.json"):
        Tokenizer.from_str(text, name="t.json")


_NAN_ATTENTION = textwrap.dedent("""
    import sys, tempfile
    from pathlib import Path
    import numpy as np
    import specstream
    from specstream import safetensors as st, CacheConfig
    from specstream.models import create_random

    root = Path(tempfile.mkdtemp())
    src = create_random(dict(n_layer=1, d_model=8, n_head=2, d_ff=16, vocab_size=16, rotary_pct=0.5), root / "ok")
    t = {k: np.array(v) for k, v in st.load(src / "model.safetensors").items()}
    t["gpt_neox.layers.0.attention.query_key_value.weight"][:] = np.nan  # NaN attention scores
    (root / "nan").mkdir()
    st.save(t, root / "nan" / "model.safetensors")
    (root / "nan" / "config.json").write_text((src / "config.json").read_text())
    model = specstream.load(root / "nan")
    cache = CacheConfig(policy=sys.argv[1], n_sink=1, window=2, heavy=1)
    out = model.generate([1, 2, 3], max_new_tokens=200, cache=cache)
    assert len(out.tokens) == 200 and all(0 <= t < 16 for t in out.tokens)
""")


@pytest.mark.parametrize("policy", ["h2o", "snapkv", "keynorm"])
def test_score_caches_survive_nan_attention(policy: str) -> None:
    """fuzz/regressions/load/nan-weights-h2o (found by fuzz/run.sh load in 16
    runs: a checkpoint with NaN/huge weights): NaN scores once made keep_top
    keep more candidates than the budget and rebuild_pinned write past its
    buffers. Run in a child process, as a heap corruption would take the
    test runner down."""
    r = subprocess.run([sys.executable, "-c", _NAN_ATTENTION, policy], capture_output=True, text=True, timeout=120,
                       cwd=REPO)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-500:]}"
