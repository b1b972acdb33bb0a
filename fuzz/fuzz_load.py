"""atheris harness: specstream.load on a model directory made from the input.

The input is ``config.json`` bytes, the separator ``SEP``, then
``model.safetensors`` bytes (without a separator: the whole input is the
config, next to a small valid checkpoint). With more parts it is a sharded
checkpoint: ``config SEP model.safetensors.index.json SEP shard1 SEP shard2
...``, the shards written as model-0000i-of-0000n.safetensors (index
parsing, shard names, tensors in the wrong or in two shards). Both files go into a directory
that specstream.load reads, through every check of the loader: config
parsing, header and offset validation, dtype and shape checks of each
tensor against the config, and the C core's own validation when it builds
the model. A model that loads must run a short forward pass (logits of the
right shape) and short generations (greedy, sampled, prompt-lookup
speculation, an H2O cache) that give valid ids. Documented failures: ValueError
(SafetensorsError, config errors), TypeError, KeyError, IndexError.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import _common

_common.instrumented_specstream()

import numpy as np  # noqa: E402

import specstream  # noqa: E402

SEP = b"\n--specstream-fuzz--\n"
_DIR = Path(tempfile.mkdtemp(prefix="specstream-fuzz-load-"))
_DEFAULT_WEIGHTS = (Path(__file__).resolve().parent / "corpus" / "load" / "tiny_valid.bin").read_bytes().split(SEP)[1]


def _write(parts: list[bytes]) -> None:
    for f in _DIR.iterdir():
        f.unlink()
    (_DIR / "config.json").write_bytes(parts[0])
    if len(parts) <= 2:
        (_DIR / "model.safetensors").write_bytes(parts[1] if len(parts) == 2 else _DEFAULT_WEIGHTS)
        return
    (_DIR / "model.safetensors.index.json").write_bytes(parts[1])
    shards = parts[2:12]
    for i, shard in enumerate(shards):
        (_DIR / f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors").write_bytes(shard)


def one_input(data: bytes) -> None:
    parts = data.split(SEP)
    _write(parts)
    model = specstream.load(_DIR)
    n = min(3, model.vocab_size)
    ids = np.arange(n, dtype=np.int32)
    logits = model.forward(ids)
    assert logits.shape == (n, model.vocab_size), logits.shape
    # Weights from the input may be NaN or huge: sampling, the speculative
    # verifier and the score-based caches must still give valid ids.
    # (fuzz/regressions/load/nan-weights-h2o: NaN scores once overflowed the
    # heap in the H2O cache.)
    for kw in (dict(), dict(temperature=1.0, top_p=0.9, seed=1),
               dict(temperature=0.8, top_k=3, seed=2, speculative=specstream.SpeculativeConfig(method="lookup", k=2)),
               dict(temperature=1.0, seed=3, cache=specstream.CacheConfig(policy="h2o", n_sink=1, window=2, heavy=1))):
        out = model.generate(ids, max_new_tokens=4, **kw)
        assert len(out.tokens) == 4 and all(0 <= t < model.vocab_size for t in out.tokens), (kw, out.tokens)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--replay"]:
        sys.exit(1 if _common.replay(one_input, sys.argv[2:], strict=(ValueError,)) else 0)
    _common.main(one_input, strict=(ValueError,))
