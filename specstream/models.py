"""Pythia model shapes and random GPT-NeoX checkpoints for tests and benchmarks.

:data:`PYTHIA_SHAPES` holds the Hugging Face configs of the eight Pythia
sizes. :func:`create_random` writes a real Hugging Face model directory
(``config.json`` plus ``model.safetensors``, or shards and an index) with
random weights of any of those shapes, or of a custom one, so that the whole
stack can be exercised and timed without downloading a model.

Random weights are drawn tensor by tensor from a generator seeded with
``(seed, crc32(tensor name))``: the values do not depend on sharding or
write order, and only one tensor is in memory at a time.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Union

import numpy as np

from ._atomic import write_text_atomic
from .config import ModelConfig, HF_NAMES, field_for_key
from .safetensors import INDEX_FILE, SINGLE_FILE, LazyTensor, f32_to_bf16, save_lazy

__all__ = ["PYTHIA_SHAPES", "pythia_config", "resolve_config", "create_random", "DTYPES"]

PathLike = Union[str, "os.PathLike[str]"]

# Settings shared by every Pythia size (as in their config.json files).
_PYTHIA_COMMON: dict[str, Any] = {
    "architectures": ["GPTNeoXForCausalLM"],
    "model_type": "gpt_neox",
    "max_position_embeddings": 2048,
    "rotary_pct": 0.25,
    "rotary_emb_base": 10000,
    "layer_norm_eps": 1e-5,
    "use_parallel_residual": True,
    "hidden_act": "gelu",
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "initializer_range": 0.02,
    "vocab_size": 50304,
}


def _pythia(n_layer: int, d_model: int, n_head: int, vocab_size: int = 50304) -> dict[str, Any]:
    d = dict(_PYTHIA_COMMON)
    d.update(
        num_hidden_layers=n_layer,
        hidden_size=d_model,
        num_attention_heads=n_head,
        intermediate_size=4 * d_model,
        vocab_size=vocab_size,
    )
    return d


#: Hugging Face config dicts of the Pythia suite, keyed by size name.
#: The embedding matrices are padded for tensor parallelism: 50304 rows up to
#: 2.8b, 50432 for 6.9b and 50688 for 12b (as in the released checkpoints).
PYTHIA_SHAPES: dict[str, dict[str, Any]] = {
    "70m": _pythia(6, 512, 8),
    "160m": _pythia(12, 768, 12),
    "410m": _pythia(24, 1024, 16),
    "1b": _pythia(16, 2048, 8),
    "1.4b": _pythia(24, 2048, 16),
    "2.8b": _pythia(32, 2560, 32),
    "6.9b": _pythia(32, 4096, 32, vocab_size=50432),
    "12b": _pythia(36, 5120, 40, vocab_size=50688),
}

#: create_random dtype names -> (safetensors dtype, torch_dtype for config.json).
DTYPES: dict[str, tuple[str, str]] = {
    "f32": ("F32", "float32"),
    "float32": ("F32", "float32"),
    "f16": ("F16", "float16"),
    "float16": ("F16", "float16"),
    "bf16": ("BF16", "bfloat16"),
    "bfloat16": ("BF16", "bfloat16"),
}

# Models at least this large get a progress bar while being written.
_PROGRESS_PARAMS = 300_000_000


def _shape_key(name: str) -> str:
    key = name.strip().lower()
    key = re.sub(r"^(eleutherai/)?pythia-", "", key)
    key = key.removesuffix("-deduped")
    return key


def pythia_config(name: str, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` of a Pythia size ("70m", "pythia-410m", ...)."""
    return resolve_config(name, **overrides)


def resolve_config(shape: str | Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """Builds a ModelConfig from a Pythia size name or a custom dict, plus overrides.

    A custom dict uses ModelConfig or Hugging Face keys; what it leaves out
    is taken from the Pythia family (d_ff defaults to 4 * d_model).
    Overrides patch any field, by either name.
    """
    if isinstance(shape, str):
        key = _shape_key(shape)
        if key not in PYTHIA_SHAPES:
            raise ValueError(f"unknown Pythia shape {shape!r} (known: {', '.join(PYTHIA_SHAPES)})")
        base: dict[str, Any] = dict(PYTHIA_SHAPES[key])
        custom: Mapping[str, Any] = {}
    elif isinstance(shape, Mapping):
        base = dict(_PYTHIA_COMMON)
        custom = shape
    else:
        raise TypeError(f"shape must be a Pythia size name or a dict, got {type(shape).__name__}")

    merged = _canonical(base)
    patches = {**_canonical(custom), **_canonical(overrides)}
    merged.update(patches)
    # A new width without a new MLP width keeps the Pythia ratio d_ff = 4 * d_model.
    if "intermediate_size" not in patches and isinstance(merged.get("hidden_size"), int):
        merged["intermediate_size"] = 4 * merged["hidden_size"]
    return ModelConfig.from_dict(merged)


def _canonical(d: Mapping[str, Any]) -> dict[str, Any]:
    """Renames short/alias keys to canonical Hugging Face keys."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if key in ("architectures", "model_type"):
            out[key] = value
            continue
        hf = HF_NAMES[field_for_key(key)][0]
        if hf in out and out[hf] != value:
            raise ValueError(f"config field {hf} is given twice with different values")
        out[hf] = value
    return out


def _init(name: str, shape: tuple[int, ...], cfg: ModelConfig, seed: int) -> np.ndarray:
    """Random float32 values for one tensor.

    Matrices ~ N(0, initializer_range), except embed_out ~ N(0, 1/d_model),
    which keeps logits near unit std whatever the width (so greedy and
    sampled decoding are neither flat nor one-hot). LayerNorm weights are
    1 + N(0, 0.05); all biases N(0, 0.02), so every parameter matters.
    """
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    x = rng.standard_normal(shape, dtype=np.float32)
    if name == "embed_out.weight":
        x *= np.float32(1.0 / np.sqrt(cfg.d_model))
    elif name.endswith("norm.weight"):
        x *= np.float32(0.05)
        x += np.float32(1.0)
    elif name.endswith(".bias"):
        x *= np.float32(0.02)
    else:
        x *= np.float32(cfg.initializer_range)
    return x


def _producer(name: str, shape: tuple[int, ...], cfg: ModelConfig, seed: int, st_dtype: str,
              on_done: Callable[[int], None]) -> Callable[[], np.ndarray]:
    def make() -> np.ndarray:
        x = _init(name, shape, cfg, seed)
        if st_dtype == "F16":
            x = x.astype(np.float16)
        elif st_dtype == "BF16":
            x = f32_to_bf16(x)
        on_done(x.nbytes)
        return x

    return make


_SHARD_RE = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")


def _remove_old_checkpoint(d: Path) -> None:
    """Deletes checkpoint files a previous call may have left, so none goes stale."""
    for p in d.iterdir():
        if p.name in (SINGLE_FILE, INDEX_FILE) or _SHARD_RE.match(p.name):
            p.unlink()


def create_random(
    shape: str | Mapping[str, Any],
    path: PathLike,
    seed: int = 0,
    dtype: str = "f32",
    max_shard_bytes: int | None = None,
    progress: bool | None = None,
    **overrides: Any,
) -> Path:
    """Writes a random GPT-NeoX model as a Hugging Face directory and returns its path.

    Args:
        shape: a Pythia size ("70m" ... "12b", "pythia-" prefix allowed) or a
            custom config dict (ModelConfig or Hugging Face keys).
        path: the directory to create (parents too); existing checkpoint
            files in it are replaced.
        seed: the weights are a deterministic function of (seed, shape).
        dtype: "f32", "f16" or "bf16" storage of every tensor.
        max_shard_bytes: when the weights exceed this, they are split into
            ``model-0000i-of-0000n.safetensors`` shards plus
            ``model.safetensors.index.json``, as ``save_pretrained`` does.
        progress: show a tqdm bar; default: only for models >= ~300M params.
        **overrides: config fields to patch, e.g. ``use_parallel_residual=False``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if max_shard_bytes is not None and max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    st_dtype, torch_dtype = DTYPES[dtype]
    overrides = dict(overrides)
    overrides["torch_dtype"] = torch_dtype
    cfg = resolve_config(shape, **overrides)

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    _remove_old_checkpoint(out)

    shapes = cfg.tensor_shapes()
    itemsize = 4 if st_dtype == "F32" else 2
    total = sum(int(np.prod(s)) * itemsize for s in shapes.values())

    if progress is None:
        progress = cfg.num_params() >= _PROGRESS_PARAMS
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"random model -> {out.name}")
    on_done = bar.update if bar is not None else (lambda n: None)

    entries = [
        LazyTensor(name, st_dtype, s, _producer(name, s, cfg, seed, st_dtype, on_done))
        for name, s in shapes.items()
    ]
    # Greedy packing in Hugging Face order; a tensor bigger than the limit gets its own shard.
    shards: list[list[LazyTensor]] = [[]]
    size = 0
    for e in entries:
        if max_shard_bytes is not None and shards[-1] and size + e.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += e.nbytes

    meta = {"format": "pt"}
    try:
        if len(shards) == 1:
            save_lazy(shards[0], out / SINGLE_FILE, metadata=meta)
        else:
            weight_map: dict[str, str] = {}
            n = len(shards)
            for i, group in enumerate(shards, start=1):
                fname = f"model-{i:05d}-of-{n:05d}.safetensors"
                save_lazy(group, out / fname, metadata=meta)
                weight_map.update({e.name: fname for e in group})
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            write_text_atomic(out / INDEX_FILE, json.dumps(index, indent=2) + "\n")
    finally:
        if bar is not None:
            bar.close()

    write_text_atomic(out / "config.json", json.dumps(cfg.to_hf_dict(), indent=2) + "\n")
    return out
