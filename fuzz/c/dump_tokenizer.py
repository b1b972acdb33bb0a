"""Writes a tokenizer.json as the binary dump the C fuzz harnesses read.

    python fuzz/c/dump_tokenizer.py tokenizer.json out.bin

The JSON is parsed and checked by specstream.tokenizer (as Tokenizer.from_file
does) and laid out as ss_tokenizer_config wants it -- the same arrays that
specstream.Tokenizer hands to the C core. Format (little-endian)::

    b"SSTOK001"
    i32 n_vocab_ids, n_merges, n_added, unk_id, fuse_unk, add_prefix_space, use_regex, ignore_merges
    i64 offsets[n_vocab_ids + 1]; bytes data[offsets[-1]]
    i32 merges[3 * n_merges]
    n_added x (i32 id, special, normalized, lstrip, rstrip, single_word;
               u32 len, content; u32 len, pattern)
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np

from specstream.tokenizer import _parse, nfc


def dump(src: Path, dst: Path) -> None:
    spec = _parse(json.loads(src.read_text(encoding="utf-8")), str(src))
    n_vocab_ids = max(spec.vocab.values(), default=-1) + 1
    strings = [b""] * n_vocab_ids
    for tok, tid in spec.vocab.items():
        strings[tid] = tok.encode("utf-8")
    offsets = np.zeros(n_vocab_ids + 1, dtype="<i8")
    np.cumsum([len(s) for s in strings], out=offsets[1:])
    merges = np.ascontiguousarray(spec.merges, dtype="<i4").reshape(-1, 3)
    # Special tokens are matched first, as specstream.Tokenizer orders them.
    added = [t for t in spec.added if t.special] + [t for t in spec.added if not t.special]
    out = bytearray(b"SSTOK001")
    out += struct.pack("<8i", n_vocab_ids, len(merges), len(added), spec.unk_id, int(spec.fuse_unk),
                       int(spec.add_prefix_space), int(spec.use_regex), int(spec.ignore_merges))
    out += offsets.tobytes() + b"".join(strings) + merges.tobytes()
    for t in added:
        content = t.content.encode("utf-8")
        pattern = (nfc(t.content) if (t.normalized and spec.nfc) else t.content).encode("utf-8")
        out += struct.pack("<6i", t.id, int(t.special), int(t.normalized), int(t.lstrip), int(t.rstrip),
                           int(t.single_word))
        out += struct.pack("<I", len(content)) + content + struct.pack("<I", len(pattern)) + pattern
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(bytes(out))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    dump(Path(sys.argv[1]), Path(sys.argv[2]))
