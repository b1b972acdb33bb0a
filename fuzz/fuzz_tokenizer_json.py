"""atheris harness: tokenizer.json parsing (specstream.Tokenizer.from_str).

The input, decoded as UTF-8 (invalid bytes replaced), is given to
Tokenizer.from_str. Seeds are small but complete tokenizer.json files
(byte-level BPE with merges in both spellings, added tokens with every flag,
NFC and Sequence components); the mutations break them in every way. A
tokenizer that loads is then used: a few texts are encoded (ids must name
tokens, decode must accept them), every id is decoded alone and all ids
through a decode stream (same text as decode). Documented failure:
TokenizerFormatError (a ValueError).
"""

from __future__ import annotations

import sys

import _common

_common.instrumented_specstream()

import numpy as np  # noqa: E402

from specstream.tokenizer import Tokenizer, TokenizerFormatError  # noqa: E402

TEXTS = ["", "a", "hello world", " \n\t  x", "<|endoftext|>a<|endoftext|>", "caf\u00e9 e\u0301", "\u00ff\u0100",
         "12345 !!", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    tok = Tokenizer.from_str(text, name="fuzz")
    n = tok.vocab_size
    assert n >= 0
    for t in TEXTS + [text[:200]]:
        ids = tok.encode(t)
        assert ids.dtype == np.int32 and ids.ndim == 1
        assert ids.size == 0 or (0 <= ids.min() and ids.max() < n), ids
        tok.decode(ids)
    present = [i for i in range(min(n, 512)) if tok.id_to_token(i) is not None]
    for i in present:
        tok.decode([i])
        tok.token_bytes(i)
    whole = tok.decode(present)
    stream = tok.decode_stream()
    assert "".join(stream.push(i) for i in present) + stream.flush() == whole
    assert tok.decode(present, skip_special_tokens=True) is not None


if __name__ == "__main__":
    if sys.argv[1:2] == ["--replay"]:
        sys.exit(1 if _common.replay(one_input, sys.argv[2:], strict=(TokenizerFormatError,)) else 0)
    _common.main(one_input, strict=(TokenizerFormatError,))
