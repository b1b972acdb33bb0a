"""atheris harness: encode and decode through the Python binding with a real
tokenizer (GPT-NeoX-20B when the shared data is there, see
_common.real_tokenizer_json).

The input drives a sequence of operations:
  - encode an arbitrary str (any code point, lone surrogates, NUL, combining
    marks, the added tokens' text): ids must be int32 in range, and for text
    without surrogates decode(encode(text)) == normalize(text);
  - decode arbitrary id lists (in range, out of range, negative, beyond
    int64, as lists or arrays of several dtypes), with and without
    skip_special_tokens: out-of-range ids must raise ValueError naming them;
  - push the same ids through a decode stream: same text as decode;
  - token_bytes / is_special / id_to_token on arbitrary ints.
The C core itself is fuzzed with AddressSanitizer by fuzz/c/ (tokenizer_*
targets); this one covers the binding's conversions and checks.
"""

from __future__ import annotations

import sys

import _common

_common.instrumented_specstream()

import atheris  # noqa: E402
import numpy as np  # noqa: E402

from specstream.tokenizer import Tokenizer  # noqa: E402

_PATH = _common.real_tokenizer_json()
TOK = Tokenizer.from_file(_PATH)
# decode(encode(text)) == normalize(text) needs a token for every byte of
# UTF-8 (true of real byte-level tokenizers, not of the tiny fallback seed).
ROUND_TRIP = _PATH.name != "small_bpe.json"
N = TOK.vocab_size
SPECIALS = sorted(TOK.added_tokens)
DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_]


def _text(fdp: atheris.FuzzedDataProvider) -> str:
    parts = []
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        k = fdp.ConsumeIntInRange(0, 4)
        if k == 0 and SPECIALS:
            parts.append(fdp.PickValueInList(SPECIALS))
        elif k == 1:
            parts.append(fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 64)))  # may hold surrogates
        else:
            parts.append(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 256)))
    return "".join(parts)


def _ids(fdp: atheris.FuzzedDataProvider) -> list[int]:
    out = []
    for _ in range(fdp.ConsumeIntInRange(0, 64)):
        k = fdp.ConsumeIntInRange(0, 9)
        if k == 0:
            out.append(fdp.ConsumeInt(9))  # anything, beyond int64 too
        elif k == 1:
            out.append(N + fdp.ConsumeIntInRange(0, 4))
        else:
            out.append(fdp.ConsumeIntInRange(0, N - 1))
    return out


def _decode_ok(ids: list[int], skip: bool) -> None:
    bad = [i for i in ids if not (0 <= i < N) or TOK.id_to_token(i) is None]
    try:
        text = TOK.decode(ids, skip_special_tokens=skip)
    except ValueError as e:
        assert bad, f"decode rejected valid ids: {e}"
        return
    assert not bad, f"decode accepted ids {bad[:4]} that name no token"
    stream = TOK.decode_stream(skip_special_tokens=skip)
    assert "".join(stream.push(i) for i in ids) + stream.flush() == text
    # The same ids as arrays of every dtype that holds them.
    for dt in DTYPES:
        info = np.iinfo(dt) if dt is not np.bool_ else None
        if info is None or (ids and (min(ids) < info.min or max(ids) > info.max)):
            continue
        assert TOK.decode(np.array(ids, dtype=dt), skip_special_tokens=skip) == text


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        op = fdp.ConsumeIntInRange(0, 3)
        if op == 0:
            text = _text(fdp)
            try:
                text.encode("utf-8")
                has_surrogate = False
            except UnicodeEncodeError:
                has_surrogate = True
            try:
                ids = TOK.encode(text)
            except UnicodeEncodeError:
                assert has_surrogate
                continue
            assert ids.dtype == np.int32 and (ids.size == 0 or (ids.min() >= 0 and ids.max() < N))
            if ROUND_TRIP:
                assert TOK.decode(ids) == TOK.normalize(text), text
            else:
                TOK.decode(ids)
        elif op == 1:
            _decode_ok(_ids(fdp), fdp.ConsumeBool())
        elif op == 2:
            i = fdp.ConsumeInt(5)
            valid = 0 <= i < N and TOK.id_to_token(i) is not None
            try:
                b = TOK.token_bytes(i)
                assert valid and isinstance(b, bytes)
            except ValueError:
                assert not valid
            try:
                special = TOK.is_special(i)
                assert special in (True, False) and (valid or not special)
            except ValueError:
                assert not 0 <= i < 2**31
        else:
            stream = TOK.decode_stream()
            for i in _ids(fdp):
                try:
                    piece = stream.push(i)
                    assert isinstance(piece, str)
                except ValueError:
                    assert not (0 <= i < N) or TOK.id_to_token(i) is None
            stream.flush()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--replay"]:
        sys.exit(1 if _common.replay(one_input, sys.argv[2:]) else 0)
    _common.main(one_input)
