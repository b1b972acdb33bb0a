"""Byte-level BPE tokenizer of the GPT-NeoX / Pythia family, run by the C core.

:class:`Tokenizer` reads a Hugging Face ``tokenizer.json`` of the GPT-2 /
GPT-NeoX family -- a BPE model over GPT-2's byte-level alphabet with a
``ByteLevel`` pre-tokenizer and decoder -- and gives the same token ids as the
Hugging Face ``tokenizers`` library::

    tok = Tokenizer.from_file("shared/data/tokenizer/gpt-neox-20b.tokenizer.json")
    ids = tok.encode("Hello world")          # numpy int32 array
    text = tok.decode(ids)                   # "Hello world"

Division of labour: this module parses and checks the JSON and applies the
NFC normalizer (``unicodedata``); the C core (``csrc/tokenizer/``) splits out
added tokens, pre-tokenizes with the GPT-2 regex, merges and decodes.

Supported files: ``model.type`` BPE (merges as ``"a b"`` strings or
``[a, b]`` pairs), optional ``added_tokens``, ``normalizer`` NFC or null,
``pre_tokenizer`` ByteLevel (alone or as the only member of a Sequence),
``decoder`` ByteLevel, ``post_processor`` ByteLevel or null. Anything else,
and every inconsistency (unknown merge tokens, duplicate or out-of-range ids,
invalid JSON), raises :class:`TokenizerFormatError`, a ``ValueError`` whose
message names the file and the offending field.

Differences from Hugging Face, on purpose: ``decode`` keeps special tokens
unless ``skip_special_tokens=True`` (so that ``decode(encode(x)) == NFC(x)``),
and raises ``ValueError`` for ids that name no token instead of dropping them.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from . import _core

__all__ = ["Tokenizer", "DecodeStream", "TokenizerFormatError"]

PathLike = Union[str, "os.PathLike[str]"]

#: Names tried, in order, for :attr:`Tokenizer.eos_token_id`.
EOS_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")
#: Names tried, in order, for :attr:`Tokenizer.bos_token_id` (GPT-NeoX uses
#: ``<|endoftext|>`` for both).
BOS_NAMES = ("<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>")

# Flags of _core.Tokenizer.encode: which added tokens it splits out itself.
_MATCH_RAW = 1
_MATCH_NORMALIZED = 2

# Hugging Face's NFC uses Unicode tables that predate Unicode 10: to it, the
# combining marks and composition partners added since are unknown characters,
# which never reorder or compose. These are those characters (computed against
# tokenizers 0.23 with Unicode 16 data, see tests/test_tokenizer_unicode.py);
# the text is normalized around them so that Python's newer tables agree.
_NFC_INERT = re.compile(
    "(["
    "\u07fd\u0897-\u089f\u08ca-\u08d3\u09fe\u0c3c\u0d3b\u0d3c\u0eba\u1715\u1abf-\u1ace"
    "\u1df6-\u1dfa\ua82c"
    "\U000105c9\U000105d2\U000105da\U000105e4\U00010d24-\U00010d27\U00010d69-\U00010d6d"
    "\U00010eab\U00010eac\U00010efd-\U00010eff\U00010f46-\U00010f50\U00010f82-\U00010f85"
    "\U00011070\U0001133b\U00011382-\U00011385\U0001138b\U0001138e\U00011390\U00011391"
    "\U000113b8\U000113bb\U000113c2\U000113c5\U000113c7-\U000113c9\U000113ce-\U000113d0"
    "\U0001145e\U00011839\U0001183a\U00011930\U00011935\U00011938\U0001193d\U0001193e"
    "\U00011943\U000119e0\U00011a34\U00011a47\U00011a99\U00011d42\U00011d44\U00011d45"
    "\U00011d97\U00011f41\U00011f42\U0001611e-\U00016129\U0001612f\U00016d63"
    "\U00016d67-\U00016d6a\U00016ff0\U00016ff1\U0001e08f\U0001e130-\U0001e136\U0001e2ae"
    "\U0001e2ec-\U0001e2ef\U0001e4ec-\U0001e4ef\U0001e5ee\U0001e5ef"
    "])"
)


def nfc(text: str) -> str:
    """NFC exactly as Hugging Face ``tokenizers`` computes it (see above)."""
    if unicodedata.is_normalized("NFC", text):
        return text
    if _NFC_INERT.search(text) is None:
        return unicodedata.normalize("NFC", text)
    # re.split with a group keeps the inert characters at the odd indices.
    parts = _NFC_INERT.split(text)
    return "".join(p if i % 2 else unicodedata.normalize("NFC", p) for i, p in enumerate(parts))


class TokenizerFormatError(ValueError):
    """A tokenizer.json that is malformed or outside the supported family."""


@dataclass
class _AddedToken:
    content: str
    id: int
    special: bool
    normalized: bool
    lstrip: bool
    rstrip: bool
    single_word: bool


@dataclass
class _Spec:
    """What the C core needs, checked."""

    vocab: dict[str, int]
    vocab_by_id: dict[int, str]
    merges: np.ndarray  # (n, 3) int32: left, right, merged
    added: list[_AddedToken] = field(default_factory=list)
    nfc: bool = False
    unk_id: int = -1
    fuse_unk: bool = False
    add_prefix_space: bool = False
    use_regex: bool = True
    ignore_merges: bool = False


# ------------------------------------------------------------------ parsing


def _fail(where: str, msg: str) -> TokenizerFormatError:
    return TokenizerFormatError(f"{where}: {msg}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _get_bool(d: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    v = d.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise _fail(where, f"'{key}' must be true or false, got {v!r}")
    return v


def _components(obj: Any, kind: str, list_key: str, where: str) -> list[Mapping[str, Any]]:
    """A normalizer / pre-tokenizer / decoder / post-processor as a flat list
    of components (a Sequence is flattened; null is an empty list)."""
    if obj is None:
        return []
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise _fail(where, f"'{kind}' must be an object with a 'type', got {obj!r:.80}")
    if obj["type"] != "Sequence":
        return [obj]
    items = obj.get(list_key)
    if not isinstance(items, list):
        raise _fail(where, f"'{kind}' is a Sequence without a '{list_key}' list")
    out: list[Mapping[str, Any]] = []
    for item in items:
        out += _components(item, kind, list_key, where)
    return out


def _check_encodable(tokens: Iterable[str], what: str, where: str) -> None:
    """JSON can spell a lone surrogate ("\\ud800"), which has no UTF-8 form:
    the C core gets every token as UTF-8, so such a file is malformed."""
    tokens = list(tokens)
    try:
        "".join(tokens).encode("utf-8")
    except UnicodeEncodeError:
        bad = next(t for t in tokens if not _encodable(t))
        raise _fail(where, f"{what} has the token {bad!r}, which holds a lone surrogate (not valid Unicode)") from None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_merges(raw: Any, vocab: Mapping[str, int], where: str) -> np.ndarray:
    if not isinstance(raw, list):
        raise _fail(where, f"'model.merges' must be a list, got {type(raw).__name__}")
    flat: list[int] = []
    get = vocab.get
    for i, m in enumerate(raw):
        if isinstance(m, str):
            a, sep, b = m.partition(" ")
            if not sep or " " in b:
                raise _fail(where, f"model.merges[{i}] = {m!r} is not two tokens separated by one space")
        elif isinstance(m, (list, tuple)) and len(m) == 2 and isinstance(m[0], str) and isinstance(m[1], str):
            a, b = m
        else:
            raise _fail(where, f"model.merges[{i}] = {m!r:.80} must be 'a b' or [a, b]")
        ia, ib, im = get(a), get(b), get(a + b)
        if ia is None or ib is None or im is None:
            for tok in (a, b):
                if tok not in vocab:
                    raise _fail(where, f"model.merges[{i}] names {tok!r}, which is not in the vocabulary")
            raise _fail(where, f"model.merges[{i}] gives {a + b!r}, which is not in the vocabulary")
        flat += (ia, ib, im)
    return np.array(flat, dtype=np.int32).reshape(-1, 3)


def _parse_added(raw: Any, vocab: Mapping[str, int], by_id: Mapping[int, str], where: str) -> list[_AddedToken]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _fail(where, f"'added_tokens' must be a list, got {type(raw).__name__}")
    out: list[_AddedToken] = []
    seen: dict[str, int] = {}
    # Ids as Hugging Face assigns them (it ignores the ones in the file): a
    # token of the vocabulary keeps its id, the others come after the largest
    # id given so far (at least len(vocab)). A file that says otherwise would
    # encode differently from what it claims, so it is rejected.
    max_added = -1
    for i, t in enumerate(raw):
        w = f"added_tokens[{i}]"
        if not isinstance(t, dict):
            raise _fail(where, f"{w} must be an object")
        content, tid = t.get("content"), t.get("id")
        if not isinstance(content, str) or not content:
            raise _fail(where, f"{w} needs a non-empty string 'content'")
        if not _is_int(tid) or tid < 0:
            raise _fail(where, f"{w} ({content!r}) needs a non-negative integer 'id', got {tid!r}")
        if content in seen:
            raise _fail(where, f"{w} repeats {content!r} (already added_tokens[{seen[content]}])")
        seen[content] = i
        if content in vocab:
            expected = vocab[content]
        elif max_added < 0:
            expected = len(vocab)
        else:
            expected = max_added + 1 if max_added >= len(vocab) or not vocab else len(vocab)
        if tid != expected:
            raise _fail(
                where,
                f"{w} ({content!r}) has id {tid}, but Hugging Face would give it id {expected} "
                f"(vocabulary tokens keep their id; others follow the vocabulary in order)",
            )
        if tid in by_id and by_id[tid] != content:
            raise _fail(where, f"{w} ({content!r}) has id {tid}, which the vocabulary gives to {by_id[tid]!r}")
        max_added = max(max_added, tid)
        special = _get_bool(t, "special", False, where)
        out.append(
            _AddedToken(
                content=content,
                id=tid,
                special=special,
                normalized=_get_bool(t, "normalized", not special, where),
                lstrip=_get_bool(t, "lstrip", False, where),
                rstrip=_get_bool(t, "rstrip", False, where),
                single_word=_get_bool(t, "single_word", False, where),
            )
        )
    return out


def _parse(obj: Any, where: str) -> _Spec:
    if not isinstance(obj, dict):
        raise _fail(where, f"the top level must be a JSON object, got {type(obj).__name__}")
    model = obj.get("model")
    if not isinstance(model, dict):
        raise _fail(where, "missing 'model' object")
    mtype = model.get("type", "BPE" if "merges" in model else None)
    if mtype != "BPE":
        raise _fail(where, f"model type {mtype!r} is not supported (expected 'BPE')")
    for key in ("vocab", "merges"):
        if key not in model:
            raise _fail(where, f"missing 'model.{key}'")

    vocab = model["vocab"]
    if not isinstance(vocab, dict):
        raise _fail(where, f"'model.vocab' must be an object, got {type(vocab).__name__}")
    owner: dict[int, str] = {}
    for tok, tid in vocab.items():
        if not tok:
            raise _fail(where, "'model.vocab' has an empty token")
        if type(tid) is not int or tid < 0:
            raise _fail(where, f"vocabulary id of {tok!r} must be a non-negative integer, got {tid!r}")
        if tid in owner:
            raise _fail(where, f"vocabulary id {tid} is given to both {owner[tid]!r} and {tok!r}")
        owner[tid] = tok

    _check_encodable(vocab, "model.vocab", where)
    added = _parse_added(obj.get("added_tokens"), vocab, owner, where)
    _check_encodable([t.content for t in added], "added_tokens", where)
    limit = len(vocab) + len(added)
    for tok, tid in vocab.items():
        if tid >= limit:
            raise _fail(where, f"vocabulary id {tid} of {tok!r} is out of range [0, {limit})")

    dropout = model.get("dropout")
    if dropout not in (None, 0, 0.0):
        raise _fail(where, f"BPE dropout {dropout!r} is not supported")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key) not in (None, ""):
            raise _fail(where, f"'model.{key}' {model[key]!r} is not supported by byte-level BPE")
    if _get_bool(model, "byte_fallback", False, where):
        raise _fail(where, "'model.byte_fallback' is not supported by byte-level BPE")
    unk = model.get("unk_token")
    if unk is not None and (not isinstance(unk, str) or unk not in vocab):
        raise _fail(where, f"'model.unk_token' {unk!r} is not in the vocabulary")

    normalizers = _components(obj.get("normalizer"), "normalizer", "normalizers", where)
    for n in normalizers:
        if n["type"] != "NFC":
            raise _fail(where, f"normalizer {n['type']!r} is not supported (expected NFC or null)")

    pre = _components(obj.get("pre_tokenizer"), "pre_tokenizer", "pretokenizers", where)
    if len(pre) != 1 or pre[0]["type"] != "ByteLevel":
        names = [p["type"] for p in pre] or None
        raise _fail(where, f"pre_tokenizer must be ByteLevel (alone or in a Sequence), got {names}")
    if "add_prefix_space" not in pre[0]:
        raise _fail(where, "pre_tokenizer ByteLevel needs 'add_prefix_space'")

    decoders = _components(obj.get("decoder"), "decoder", "decoders", where)
    if [d["type"] for d in decoders] != ["ByteLevel"]:
        raise _fail(where, f"decoder must be ByteLevel, got {[d['type'] for d in decoders] or None}")
    for p in _components(obj.get("post_processor"), "post_processor", "processors", where):
        if p["type"] != "ByteLevel":
            raise _fail(where, f"post_processor {p['type']!r} is not supported (it would add tokens)")
    for key in ("truncation", "padding"):
        if obj.get(key) is not None:
            raise _fail(where, f"'{key}' must be null (it changes what encode returns)")

    return _Spec(
        vocab=vocab,
        vocab_by_id=owner,
        merges=_parse_merges(model["merges"], vocab, where),
        added=added,
        nfc=bool(normalizers),
        unk_id=vocab[unk] if unk is not None else -1,
        fuse_unk=_get_bool(model, "fuse_unk", False, where),
        add_prefix_space=_get_bool(pre[0], "add_prefix_space", False, where),
        use_regex=_get_bool(pre[0], "use_regex", True, where),
        ignore_merges=_get_bool(model, "ignore_merges", False, where),
    )


# ---------------------------------------------------------------- tokenizer


class DecodeStream:
    """Decodes generated tokens one at a time, for printing as they come.

    :meth:`push` returns the text that the token completes -- possibly ``""``
    while a multi-byte character is split across tokens -- and :meth:`flush`
    what is left at the end. The pieces concatenated equal
    :meth:`Tokenizer.decode` of all the ids.
    """

    __slots__ = ("_stream",)

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def push(self, token_id: int) -> str:
        """Adds one token; returns the newly completed text."""
        return self._stream.push(token_id)

    def flush(self) -> str:
        """Ends the stream: a dangling partial character becomes U+FFFD."""
        return self._stream.flush()


class Tokenizer:
    """A byte-level BPE tokenizer; build it with :meth:`from_file`."""

    def __init__(self, spec: _Spec, name: str = "<tokenizer>") -> None:
        self.name = name
        self._vocab: dict[str, int] = spec.vocab
        self._nfc = spec.nfc
        self._added = {t.content: t.id for t in spec.added}
        self._id_to_token: dict[int, str] = spec.vocab_by_id
        self._id_to_token.update({t.id: t.content for t in spec.added})
        self._raw_added = [t.content for t in spec.added if not t.normalized]

        # Vocabulary as one UTF-8 blob indexed by id; b"" where no token.
        n_vocab_ids = max(self._vocab.values(), default=-1) + 1
        strings = [b""] * n_vocab_ids
        for tok, tid in self._vocab.items():
            strings[tid] = tok.encode("utf-8")
        offsets = np.zeros(n_vocab_ids + 1, dtype=np.int64)
        np.cumsum([len(s) for s in strings], out=offsets[1:])
        # Hugging Face matches special tokens first, then the others, each
        # in file order; C keeps the first of identical patterns.
        ordered = [t for t in spec.added if t.special] + [t for t in spec.added if not t.special]
        added = [
            (
                t.content,
                nfc(t.content) if (t.normalized and self._nfc) else t.content,
                t.id,
                t.special,
                t.normalized,
                t.lstrip,
                t.rstrip,
                t.single_word,
            )
            for t in ordered
        ]
        self._core = _core.Tokenizer(
            b"".join(strings),
            offsets,
            np.ascontiguousarray(spec.merges, dtype=np.int32).reshape(-1, 3),
            added,
            spec.unk_id,
            spec.fuse_unk,
            spec.add_prefix_space,
            spec.use_regex,
            spec.ignore_merges,
        )

    # -- construction

    @classmethod
    def from_file(cls, path: PathLike) -> "Tokenizer":
        """Loads a Hugging Face ``tokenizer.json``."""
        where = os.fspath(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise TokenizerFormatError(f"{where}: not UTF-8 ({e})") from None
        return cls.from_str(text, name=where)

    @classmethod
    def from_str(cls, text: str, name: str = "<string>") -> "Tokenizer":
        """Loads the contents of a ``tokenizer.json``."""
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise TokenizerFormatError(f"{name}: invalid JSON: {e}") from None
        except RecursionError:
            raise TokenizerFormatError(f"{name}: JSON nested too deeply") from None
        return cls.from_dict(obj, name=name)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], name: str = "<dict>") -> "Tokenizer":
        """Loads an already parsed ``tokenizer.json`` (not kept: the caller
        may change it afterwards)."""
        try:
            spec = _parse(obj, name)
        except RecursionError:  # Sequences of Sequences nested almost as deep as json allows
            raise TokenizerFormatError(f"{name}: nested too deeply") from None
        spec.vocab = dict(spec.vocab)
        return cls(spec, name=name)

    # -- encoding

    def _pieces(self, text: str) -> Optional[list[Union[str, int]]]:
        """Text split on the added tokens that match before normalization
        (ids), or None when there is no such token in it."""
        return self._core.split_added(text) if self._raw_added else None

    def normalize(self, text: str) -> str:
        """The text as the model sees it: NFC (if the file asks for it) of
        each piece between the added tokens that are matched unnormalized.
        ``decode(encode(text)) == normalize(text)``; this differs from plain
        NFC only where such a token is followed by a combining mark."""
        if not self._nfc:
            return text
        pieces = self._pieces(text)
        if pieces is None:
            return nfc(text)
        return "".join(self._id_to_token[p] if isinstance(p, int) else nfc(p) for p in pieces)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` as a 1-D int32 array.

        ``text`` must be a ``str``: decode bytes yourself, choosing how to
        handle invalid UTF-8. Lone surrogates raise ``UnicodeEncodeError``.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__} (decode bytes to str first)")
        # Text already in NFC (most text) is what the model sees as it is:
        # every piece of it is in NFC too.
        if not self._nfc or unicodedata.is_normalized("NFC", text):
            return self._core.encode(text, _MATCH_RAW | _MATCH_NORMALIZED)
        # Hugging Face splits out the non-normalized added tokens first and
        # normalizes only the text between them (NFC could otherwise merge a
        # token's last character with a combining mark after it).
        pieces = self._pieces(text)
        if pieces is None:
            return self._core.encode(nfc(text), _MATCH_NORMALIZED)
        parts = [
            np.array([p], dtype=np.int32) if isinstance(p, int) else self._core.encode(nfc(p), _MATCH_NORMALIZED)
            for p in pieces
        ]
        return np.concatenate(parts)

    def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
        """:meth:`encode` of each text."""
        return [self.encode(t) for t in texts]

    # -- decoding

    def _ids(self, ids: Union[Sequence[int], np.ndarray]) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {arr.shape}")
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if arr.dtype.kind == "O":  # Python ints beyond int64
            for x in arr:
                if not _is_int(x) and not isinstance(x, np.integer):
                    raise TypeError(f"token ids must be integers, got {type(x).__name__}")
                if not 0 <= int(x) < self.vocab_size:
                    raise ValueError(f"token id {int(x)} is not in the vocabulary (ids 0..{self.vocab_size - 1})")
        if arr.dtype.kind not in "iub":
            raise TypeError(f"token ids must be integers, got dtype {arr.dtype}")
        if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"token id {int(arr.max())} is not in the vocabulary (ids 0..{self.vocab_size - 1})")
        return arr.astype(np.int64, copy=False)

    def decode(self, ids: Union[Sequence[int], np.ndarray], skip_special_tokens: bool = False) -> str:
        """Text of ``ids`` (a list or integer array).

        Byte sequences that are not valid UTF-8 become U+FFFD, as in Hugging
        Face. An id that names no token raises ``ValueError`` naming it.
        """
        return self._core.decode(self._ids(ids), bool(skip_special_tokens))

    def decode_stream(self, skip_special_tokens: bool = False) -> DecodeStream:
        """A :class:`DecodeStream` for printing tokens as they are generated."""
        return DecodeStream(self._core.decode_stream(bool(skip_special_tokens)))

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes that decoding ``token_id`` alone gives."""
        return self._core.token_bytes(token_id)

    # -- vocabulary

    @property
    def vocab_size(self) -> int:
        """Size of the id space (largest id + 1), added tokens included."""
        return int(self._core.n_ids)

    def __len__(self) -> int:
        return self.vocab_size

    def token_to_id(self, token: str) -> Optional[int]:
        """Id of a token as written in the file (byte-level form, e.g.
        ``"Ġthe"``), or of an added token; None if there is none."""
        tid = self._added.get(token)
        return tid if tid is not None else self._vocab.get(token)

    def id_to_token(self, token_id: int) -> Optional[str]:
        """The token string of an id as written in the file, or None."""
        return self._id_to_token.get(int(token_id))

    def get_vocab(self) -> dict[str, int]:
        """Every token (vocabulary and added) and its id."""
        out = dict(self._vocab)
        out.update(self._added)
        return out

    @property
    def added_tokens(self) -> dict[str, int]:
        """Added tokens (special or not) and their ids."""
        return dict(self._added)

    def is_special(self, token_id: int) -> bool:
        """Whether the id is a special added token (dropped by
        ``decode(..., skip_special_tokens=True)``)."""
        return bool(self._core.is_special(token_id))

    def _first_of(self, names: Sequence[str]) -> Optional[int]:
        for name in names:
            tid = self.token_to_id(name)
            if tid is not None:
                return tid
        return None

    @property
    def eos_token_id(self) -> Optional[int]:
        """End-of-text id: the first of :data:`EOS_NAMES` that the file has."""
        return self._first_of(EOS_NAMES)

    @property
    def bos_token_id(self) -> Optional[int]:
        """Beginning-of-text id: the first of :data:`BOS_NAMES` the file has."""
        return self._first_of(BOS_NAMES)

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r}, vocab_size={self.vocab_size}, added={len(self._added)})"
