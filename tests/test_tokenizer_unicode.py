"""The Unicode data of the tokenizer against Hugging Face ``tokenizers``:
the letter / number / whitespace classes of the GPT-2 pre-tokenizer regex
(csrc/tokenizer/unicode_tables.h), the \\w class of single_word added tokens,
and the NFC quirks that specstream.tokenizer.nfc reproduces.

The full check over all 1.1M code points takes ~20 s with Hugging Face; here
every range boundary of the tables plus a random sample is checked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import unicodedata
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

hf_tokenizers = pytest.importorskip("tokenizers", reason="Hugging Face tokenizers is the reference")

from specstream import _core  # noqa: E402
from specstream.tokenizer import Tokenizer, nfc  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TABLES = REPO / "csrc" / "tokenizer" / "unicode_tables.h"


def table_ranges() -> list[tuple[int, int, int]]:
    text = TABLES.read_text()
    return [(int(a, 16), int(b, 16), int(m)) for a, b, m in re.findall(r"\{0x([0-9A-F]+),0x([0-9A-F]+),(\d+)\}", text)]


def sample_code_points(n_random: int, seed: int = 0) -> list[int]:
    """Every range boundary (and its neighbours) plus random code points."""
    cps = set(range(0x800))  # the direct table, all of it
    for lo, hi, _ in table_ranges():
        cps.update((lo - 1, lo, hi, hi + 1))
    rng = random.Random(seed)
    cps.update(rng.randrange(0x110000) for _ in range(n_random))
    return sorted(c for c in cps if 0 <= c < 0x110000 and not 0xD800 <= c <= 0xDFFF)


def test_tables_parse() -> None:
    ranges = table_ranges()
    assert len(ranges) > 500
    assert all(lo <= hi for lo, hi, _ in ranges)
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:]))


def test_pretokenizer_classes_match_hugging_face() -> None:
    """Each code point in the contexts that reveal its class: after a letter,
    a digit and punctuation, after a space, before a word and at the end."""
    from tokenizers import pre_tokenizers

    ref = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    cps = sample_code_points(20000)
    for start in range(0, len(cps), 4000):
        text = "".join(f"a{c}1{c}!{c} {c}x{c}\n{c}{c} {c}'s" for c in map(chr, cps[start : start + 4000])) + "\u3000"
        ours = _core.pretokenize(text)
        theirs = [text[a:b] for _, (a, b) in ref.pre_tokenize_str(text)]
        if ours != theirs:
            i = next(i for i, (x, y) in enumerate(zip(ours, theirs)) if x != y)
            pytest.fail(f"word {i}: ours {ours[i - 2 : i + 3]!r} vs {theirs[i - 2 : i + 3]!r}")


def test_pretokenize_words_tile_any_bytes() -> None:
    rng = random.Random(5)
    for _ in range(200):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        assert b"".join(_core.pretokenize(raw)) == raw


def _neox_dict() -> dict:
    data = Path(os.environ.get("SPECSTREAM_DATA", REPO.parent / "shared" / "data"))
    path = data / "tokenizer" / "gpt-neox-20b.tokenizer.json"
    if not path.is_file():
        pytest.skip(f"no tokenizer data at {path} (set SPECSTREAM_DATA)")
    return json.loads(path.read_text(encoding="utf-8"))


def test_word_and_space_classes_of_added_tokens() -> None:
    """single_word uses Rust's \\w, lstrip Rust's \\s (White_Space)."""
    d = _neox_dict()
    n = 50281
    d["added_tokens"] += [
        dict(id=n, content="§§", single_word=True, lstrip=False, rstrip=False, normalized=False, special=True),
        dict(id=n + 1, content="¤¤", single_word=False, lstrip=True, rstrip=True, normalized=False, special=True),
    ]
    ours = Tokenizer.from_dict(d)
    hf = hf_tokenizers.Tokenizer.from_str(json.dumps(d))
    cps = [c for c in sample_code_points(3000, seed=1) if c not in (0xA4, 0xA7)]
    texts = [f"{c}§§ §§{c} x{c}¤¤{c}x" for c in map(chr, cps)]
    for text, ref in zip(texts, hf.encode_batch(texts)):
        assert ours.encode(text).tolist() == ref.ids, f"U+{ord(text[0]):04X}"


def test_nfc_reproduces_hugging_face() -> None:
    """Every combining mark, and every canonical composition, in a context
    where Hugging Face's older tables and Python's disagree if at all."""
    from tokenizers import normalizers

    ref = normalizers.NFC()
    texts = []
    for cp in range(0x110000):
        c = chr(cp)
        if unicodedata.combining(c):
            texts.append("b\u0345" + c + "\u0301")
        d = unicodedata.decomposition(c)
        if d and not d.startswith("<"):
            parts = "".join(chr(int(x, 16)) for x in d.split())
            texts += [parts, c, parts + "\u0327"]
    bad = [t for t in texts if nfc(t) != ref.normalize_str(t)]
    assert not bad, f"{len(bad)} differ, e.g. {[hex(ord(ch)) for ch in bad[0]]}"


@pytest.mark.skipif(importlib.util.find_spec("unicodedata2") is None, reason="unicodedata2 not installed")
def test_generated_tables_are_current() -> None:
    import unicodedata2

    if unicodedata2.unidata_version != "16.0.0":
        pytest.skip(f"unicodedata2 has Unicode {unicodedata2.unidata_version}, the tables 16.0.0")
    spec = importlib.util.spec_from_file_location("gen", REPO / "scripts" / "gen_unicode_tables.py")
    gen = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(gen)
    assert gen.render() == TABLES.read_text()
