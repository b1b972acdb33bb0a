"""Loading GPT-NeoX models and running them: :func:`load` and :class:`Model`.

The weights are memory-mapped from the safetensors files and handed to the C
core without copies when their dtype is the one requested; every per-token
loop (forward, sampling, speculative verification, eviction) runs in C with
the GIL released.
"""

from __future__ import annotations

import os
import re
import resource
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from . import _core
from .config import ModelConfig
from .generation import CacheConfig, GenerationResult, GenerationStats, SpeculativeConfig
from .hub import resolve_model_dir
from . import safetensors as _st

__all__ = ["load", "Model", "TokenStream", "normalize_dtype", "as_token_ids"]

PathLike = Union[str, "os.PathLike[str]"]
TokenIds = Union[Sequence[int], np.ndarray]

#: The core's weight formats (csrc/kernels/cpu/formats.h): name -> its entry.
WEIGHT_FORMATS = {f["name"]: f for f in _core.weight_formats()}
#: Every accepted spelling (lower case) -> the core's name of the format.
_DTYPE_ALIASES = {alias: f["name"] for f in WEIGHT_FORMATS.values()
                  for alias in [f["name"], *filter(None, f["aliases"].split(","))]}
_PREFILL_CHUNK = 256
_MAX_CHUNK = 1 << 20          # the core's limit on tokens per forward call
_WEIGHT_DTYPES = ("F32", "F16", "BF16")
_DEVICES = {"cpu": 0, "cuda": 1}   # the core's ss_device
_LAYER_NAME = re.compile(r"gpt_neox\.layers\.(\d+)\.")


def normalize_dtype(dtype: str) -> str:
    """Maps "float32"/"bfloat16"/"i8"/... to the core's "f32"/"bf16"/"f16"/"int8"/"int4"."""
    if not isinstance(dtype, str) or dtype.lower() not in _DTYPE_ALIASES:
        raise ValueError(f"dtype must be one of {sorted(set(_DTYPE_ALIASES))}, got {dtype!r}")
    return _DTYPE_ALIASES[dtype.lower()]


def as_token_ids(ids: TokenIds, what: str = "ids", vocab: Optional[int] = None, allow_empty: bool = False) -> np.ndarray:
    """Validates token ids and returns them as a contiguous int32 array."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{what} must be token ids (ints), not text; encode it with a Tokenizer first")
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D sequence of token ids, got shape {arr.shape}")
    if arr.size == 0:
        if allow_empty:
            return np.zeros(0, dtype=np.int32)
        raise ValueError(f"{what} is empty")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{what} must hold integers, got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise ValueError(f"{what}: token id {lo} at index {int(np.argmin(arr))} is negative")
    if vocab is not None and hi >= vocab:
        raise ValueError(f"{what}: token id {hi} at index {int(np.argmax(arr))} is outside the vocabulary [0, {vocab})")
    if hi > np.iinfo(np.int32).max:
        raise ValueError(f"{what}: token id {hi} does not fit in int32")
    return np.ascontiguousarray(arr, dtype=np.int32)


def _peak_rss_bytes() -> int:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb) * (1 if sys.platform == "darwin" else 1024)


def _random_seed() -> int:
    return int.from_bytes(os.urandom(8), "little") >> 1


class Model:
    """A GPT-NeoX model ready to run on the CPU.

    Create it with :func:`specstream.load`. Attributes: ``config``
    (:class:`ModelConfig`), ``dtype`` (storage of the weight matrices),
    ``path`` (the directory loaded: for a Hugging Face repo id, its cache
    snapshot), ``tokenizer`` (when the directory has a tokenizer.json).
    A model is read-only and may be used from several threads at once.
    """

    def __init__(self, core: "_core.Model", config: ModelConfig, dtype: str, path: Optional[Path] = None,
                 tokenizer: object = None, device: str = "cpu") -> None:
        self._core = core
        self.config = config
        self.dtype = dtype
        self.path = path
        self.tokenizer = tokenizer
        self.device = device

    def __repr__(self) -> str:
        c = self.config
        return (f"Model({str(self.path) if self.path else '<memory>'!r}, layers={c.n_layer}, d_model={c.d_model}, "
                f"heads={c.n_head}, vocab={c.vocab_size}, dtype={self.dtype}, device={self.device})")

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding matrices (logits per position)."""
        return self.config.vocab_size

    @property
    def weight_bytes(self) -> int:
        """Bytes of weights one decode step reads (what bounds decode speed)."""
        return int(self._core.weight_bytes)

    def _ids(self, ids: TokenIds, what: str = "ids") -> np.ndarray:
        return as_token_ids(ids, what, vocab=self.vocab_size)

    # ----------------------------------------------------------------- forward

    def forward(self, ids: TokenIds, cache: Optional[CacheConfig] = None, chunk: int = _PREFILL_CHUNK) -> np.ndarray:
        """Logits (len(ids), vocab_size) float32 of a fresh sequence.

        With a bounded ``cache``, row i is what the model predicts after token
        i when it has read the sequence through that policy (evictions
        included) — the same numbers token-by-token decoding would give.
        ``chunk`` tokens go through each forward call.
        """
        arr = self._ids(ids)
        cache = cache or CacheConfig()
        if not isinstance(cache, CacheConfig):
            raise TypeError(f"cache must be a CacheConfig, got {type(cache).__name__}")
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or not 1 <= chunk <= _MAX_CHUNK:
            raise ValueError(f"chunk must be an int in [1, {_MAX_CHUNK}], got {chunk!r}")
        return self._core.forward(arr, cache._core_values(self.tokenizer), min(int(chunk), len(arr)))

    def forward_tree(self, prefix: TokenIds, tokens: TokenIds, parents: Sequence[int],
                     cache: Optional[CacheConfig] = None) -> tuple[np.ndarray, np.ndarray]:
        """Logits (len(tokens), vocab) and final hidden states (len(tokens),
        d_model; after the final LayerNorm) of a token tree after ``prefix``.

        ``parents[i]`` is the index of token i's parent among ``tokens``
        (earlier than i), or -1 when it follows the prefix. Token i sits at
        its parent's position + 1 and attends to the prefix (as ``cache``
        lets it) and to its ancestors only: the tree attention of speculative
        verification, in one forward.
        """
        pre = as_token_ids(prefix, "prefix", vocab=self.vocab_size, allow_empty=True)
        toks = self._ids(tokens, "tokens")
        par = np.asarray(parents, dtype=np.int64)
        if par.shape != toks.shape:
            raise ValueError(f"parents must have one entry per token ({len(toks)}), got shape {par.shape}")
        if np.any(par < -1) or np.any(par >= np.arange(len(par))):
            raise ValueError("parents[i] must be -1 or the index of an earlier token")
        cache = cache or CacheConfig()
        if not isinstance(cache, CacheConfig):
            raise TypeError(f"cache must be a CacheConfig, got {type(cache).__name__}")
        return self._core.forward_tree(pre, toks, par.astype(np.int32), cache._core_values(self.tokenizer))

    # -------------------------------------------------------------- generation

    def _generator(self, prompt_ids: TokenIds, max_new_tokens: int, temperature: float, top_k: int, top_p: float,
                   seed: Optional[int], stop_token_ids: Sequence[int], cache: CacheConfig,
                   draft: Optional["Model"], speculative: Optional[SpeculativeConfig],
                   draft_cache: Optional[CacheConfig]) -> tuple["_core.Generator", int]:
        prompt = self._ids(prompt_ids, "prompt_ids")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
                or not 0 <= max_new_tokens < 2**62:
            raise ValueError(f"max_new_tokens must be a non-negative int (< 2**62), got {max_new_tokens!r}")
        if isinstance(top_k, (int, np.integer)) and not isinstance(top_k, bool) and top_k > self.vocab_size:
            top_k = self.vocab_size  # k >= vocabulary keeps every token
        if isinstance(stop_token_ids, (str, bytes)) or not hasattr(stop_token_ids, "__iter__"):
            raise TypeError(f"stop_token_ids must be a sequence of token ids, got {stop_token_ids!r}")
        stops = as_token_ids(list(stop_token_ids), "stop_token_ids", vocab=self.vocab_size, allow_empty=True)
        if not isinstance(cache, CacheConfig):
            raise TypeError(f"cache must be a CacheConfig, got {type(cache).__name__}")
        spec, draft = self._speculation(draft, speculative)
        seed_used = _random_seed() if seed is None else seed
        dcache = draft_cache or cache
        if not isinstance(dcache, CacheConfig):
            raise TypeError(f"draft_cache must be a CacheConfig, got {type(dcache).__name__}")
        sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed_used}
        gen = _core.Generator(
            self._core, cache._core_values(self.tokenizer), draft._core if draft is not None else None,
            dcache._core_values(self.tokenizer), (spec or SpeculativeConfig())._core_values(spec is not None),
            sampling, prompt, int(max_new_tokens), stops,
        )
        return gen, int(seed_used)

    def _speculation(self, draft: Any, speculative: Optional[SpeculativeConfig]) -> tuple:
        """(the SpeculativeConfig to run, or None for target-only decoding,
        and the draft it runs with), after checking that they go together."""
        if speculative is not None and not isinstance(speculative, SpeculativeConfig):
            raise TypeError(f"speculative must be a SpeculativeConfig, got {type(speculative).__name__}")
        spec = speculative or SpeculativeConfig()
        if draft is not None:
            from .medusa import MedusaHeads

            if isinstance(draft, MedusaHeads):
                if spec.method != "medusa":
                    raise ValueError(f"Medusa heads were given as draft but SpeculativeConfig.method is "
                                     f"{spec.method!r} (use method='medusa')")
                if draft.target is not self:
                    raise ValueError("these Medusa heads were loaded for another target model")
            elif isinstance(draft, Model):
                self._check_draft(draft)
                if not spec.uses_draft_model:
                    raise ValueError(f"a draft model was given but SpeculativeConfig.method is {spec.method!r}")
            else:
                raise TypeError(f"draft must be a Model or MedusaHeads, got {type(draft).__name__}")
            return spec, draft
        needs = spec.needs_draft if speculative is not None else ""
        if needs == "medusa":
            raise ValueError("SpeculativeConfig.method 'medusa' needs draft=specstream.load_medusa(path, model)")
        if needs == "model" and spec.method != "draft":
            raise ValueError(f"SpeculativeConfig.method {spec.method!r} needs draft=<a draft Model>")
        if speculative is not None and spec.method in ("lookup", "lookahead"):
            return spec, None
        return None, None  # the target alone (a chain without a draft model, or method "none")

    def _check_draft(self, draft: "Model") -> None:
        t, d = self.config, draft.config
        if draft is self:
            return
        if self.tokenizer is not None and draft.tokenizer is not None:
            if self.tokenizer.vocab_size != draft.tokenizer.vocab_size or \
                    self.tokenizer.get_vocab() != draft.tokenizer.get_vocab():
                raise ValueError("draft and target tokenizers differ: speculative decoding needs a shared vocabulary")
        if min(t.vocab_size, d.vocab_size) * 2 < max(t.vocab_size, d.vocab_size):
            raise ValueError(
                f"draft vocabulary ({d.vocab_size} rows) and target vocabulary ({t.vocab_size} rows) cannot be the "
                "same tokenizer (only padding may differ)")
        if d.max_position_embeddings > t.max_position_embeddings:
            raise ValueError(
                f"draft context ({d.max_position_embeddings}) is longer than the target's "
                f"({t.max_position_embeddings}): the draft must not see what the target cannot")

    def generate(self, prompt_ids: TokenIds, max_new_tokens: int = 32, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, seed: Optional[int] = None, stop_token_ids: Sequence[int] = (),
                 cache: CacheConfig = CacheConfig(), draft: Any = None,
                 speculative: Optional[SpeculativeConfig] = SpeculativeConfig(k=5),
                 draft_cache: Optional[CacheConfig] = None, measure_speedup: bool = False,
                 step_tokens: int = 64) -> GenerationResult:
        """Generates ``max_new_tokens`` tokens after ``prompt_ids``.

        Greedy when ``temperature == 0`` (the default); otherwise samples with
        temperature / top_k / top_p, reproducibly for a given ``seed``.
        Generation stops early only at an id in ``stop_token_ids`` (included
        in the output). With ``draft`` (a smaller model sharing the
        vocabulary, for the "draft" and "tree" methods, or Medusa heads from
        ``specstream.load_medusa`` for "medusa"), decoding is speculative per
        ``speculative``: the output is the target's own (identical tokens when
        greedy, the same distribution when sampling).
        ``SpeculativeConfig(method="lookup")`` and ``method="lookahead"``
        speculate without a draft. ``cache`` (and
        ``draft_cache``, default: the same) bound the KV memory.
        ``measure_speedup`` also runs target-only decoding of the same length
        and reports the ratio in ``stats.speedup``. ``step_tokens`` sets how
        many tokens each call into C produces. Ctrl-C stops the call within a
        token (or a prompt chunk) with ``KeyboardInterrupt``; the model is
        unharmed (``stream`` keeps the tokens produced so far).
        """
        gen, seed_used = self._generator(prompt_ids, max_new_tokens, temperature, top_k, top_p, seed,
                                         stop_token_ids, cache, draft, speculative, draft_cache)
        speculating = self._speculation(draft, speculative)[0] is not None
        if isinstance(step_tokens, bool) or not isinstance(step_tokens, int) or step_tokens < 1:
            raise ValueError(f"step_tokens must be a positive int, got {step_tokens!r}")
        parts = []
        while not gen.done:
            parts.append(gen.step(step_tokens))
        tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        stats = GenerationStats._from_core(gen.stats(), self.weight_bytes + (draft.weight_bytes if draft else 0),
                                           _peak_rss_bytes(), seed_used)
        if measure_speedup and speculating:
            base = self.generate(prompt_ids, max_new_tokens=len(tokens), temperature=temperature, top_k=top_k,
                                 top_p=top_p, seed=seed_used, cache=cache, speculative=None)
            if stats.tokens_per_s > 0 and base.stats.tokens_per_s > 0:
                stats.speedup = stats.tokens_per_s / base.stats.tokens_per_s
        text = self.tokenizer.decode(tokens) if self.tokenizer is not None else None
        return GenerationResult(tokens=tokens, stats=stats, text=text)

    def stream(self, prompt_ids: TokenIds, max_new_tokens: int = 32, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, seed: Optional[int] = None, stop_token_ids: Sequence[int] = (),
               cache: CacheConfig = CacheConfig(), draft: Any = None,
               speculative: Optional[SpeculativeConfig] = SpeculativeConfig(k=5),
               draft_cache: Optional[CacheConfig] = None) -> "TokenStream":
        """Like :meth:`generate`, but yields token ids as they are produced.

        ``for token in model.stream(ids, 100): ...``; the stream's ``stats``
        are complete once it is exhausted.
        """
        gen, seed_used = self._generator(prompt_ids, max_new_tokens, temperature, top_k, top_p, seed,
                                         stop_token_ids, cache, draft, speculative, draft_cache)
        return TokenStream(gen, self.weight_bytes + (draft.weight_bytes if draft else 0), seed_used)


class TokenStream:
    """Iterator over the tokens of one generation (see :meth:`Model.stream`).

    A stream belongs to one thread at a time: while a thread is inside a
    step, iterating it or reading ``stats`` / ``cache_bytes`` from another
    thread raises ``RuntimeError("generator is in use by another thread")``.
    """

    def __init__(self, gen: "_core.Generator", weight_bytes: int, seed: int) -> None:
        self._gen = gen
        self._weight_bytes = weight_bytes
        self._seed = seed

    def __iter__(self) -> Iterator[int]:
        while not self._gen.done:
            for t in self._gen.step(1):
                yield int(t)

    @property
    def stats(self) -> GenerationStats:
        """Statistics of the tokens produced so far."""
        return GenerationStats._from_core(self._gen.stats(), self._weight_bytes, _peak_rss_bytes(), self._seed)

    @property
    def cache_bytes(self) -> int:
        """KV cache bytes of the target (constant for bounded policies)."""
        return int(self._gen.target_cache_bytes)


# ------------------------------------------------------------------------ loading

def _core_config(c: ModelConfig) -> dict:
    return {"n_layer": c.n_layer, "d_model": c.d_model, "n_head": c.n_head, "d_ff": c.d_ff,
            "vocab_rows": c.vocab_size, "rotary_dim": c.rotary_dim, "rotary_base": c.rotary_emb_base,
            "layer_norm_eps": c.layer_norm_eps, "parallel_residual": c.use_parallel_residual,
            "gelu_tanh": c.gelu_tanh}


def _find_tokenizer(directory: Path) -> object:
    path = directory / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        from .tokenizer import Tokenizer
    except ImportError:  # the tokenizer module is optional at this layer
        return None
    return Tokenizer.from_file(path)


def _load_weights(directory: Path, config: ModelConfig, mmap_files: bool = True) -> dict[str, np.ndarray]:
    """Memory-maps (or reads) every tensor of the checkpoint after checking that the
    weights the model uses are floating point (a U16 tensor would otherwise
    pass for bf16 bits, an I64 one fail without naming its file) and that
    each is aligned for its dtype."""
    entries = _st.read_dir_headers(directory)
    # Weights of layers the config does not declare mean that config.json
    # does not describe this checkpoint: loading it would silently cut the
    # model short.
    for name, (file, _info, _header) in entries.items():
        m = _LAYER_NAME.match(name)
        if m and (len(m.group(1)) > 9 or int(m.group(1)) >= config.n_layer):  # (int() of 5000 digits raises)
            raise ValueError(
                f"{file}: tensor {name!r} belongs to layer {m.group(1)}, but config.json declares "
                f"num_hidden_layers = {config.n_layer} (layers 0..{config.n_layer - 1}): the config does not "
                "describe this checkpoint")
    for name in config.tensor_shapes():
        if name in entries:
            file, info, _header = entries[name]
            if info.dtype not in _WEIGHT_DTYPES:
                raise ValueError(f"{file}: tensor {name!r} has dtype {info.dtype}; GPT-NeoX weights must be "
                                 f"{', '.join(_WEIGHT_DTYPES)}")
    arrays: dict[str, np.ndarray] = {}
    for file, header in {file: header for file, _info, header in entries.values()}.items():
        arrays.update(_st.load(file, header=header, mmap_file=mmap_files))
    # The format allows any byte offset; the core reads elements through typed
    # pointers, so a tensor misaligned for its dtype gets an aligned copy.
    return {name: a if a.flags.aligned else np.array(a) for name, a in arrays.items()}


def load(model_id_or_path: PathLike, dtype: str = "f32", device: str = "cpu", *, revision: Optional[str] = None,
         download: bool = False, mmap: bool = True) -> Model:
    """Loads a GPT-NeoX model: a Hugging Face directory (config.json +
    model.safetensors, or shards with model.safetensors.index.json), or a
    Hugging Face repo id such as ``"EleutherAI/pythia-160m"`` resolved in the
    local Hugging Face cache at ``revision`` (a branch such as Pythia's
    ``"step1000"``, a tag or a commit hash; None: ``main``). Nothing is
    downloaded unless ``download=True``: a repo id or revision missing from
    the cache raises FileNotFoundError naming the id, the revision and the
    cache (see :mod:`specstream.hub`). ``model.path`` is the directory
    loaded (for a repo id, its cache snapshot).

    ``dtype`` ("f32"|"float32", "bf16"|"bfloat16", "f16"|"float16",
    "int8"|"i8", "int4"|"i4") is how the weight matrices are stored and read
    while decoding; norms and biases are f32. Stored tensors of that dtype are
    used in place (memory-mapped, no copy); others are converted once. "int8"
    and "int4" are weight-only quantization at load (int8: per output row,
    symmetric, f32 scales; int4: groups of 64 weights of a row, bf16 scale and
    zero point; CPU only; the input embedding stays as stored). A ``tokenizer.json`` in the directory is
    loaded as ``model.tokenizer``. ``device="cuda"`` uploads the weights to
    the GPU once (states and generators of the model then run there); it
    raises a RuntimeError saying why when this build or machine cannot.

    ``mmap=False`` reads the weight files into memory instead of mapping
    them, so that rewriting a checkpoint in place cannot affect a loaded
    model. With maps (the default), a weights file truncated or rewritten
    in place after load makes the next call that reads the lost pages raise
    OSError (instead of the process dying of SIGBUS); load the model again.
    """
    core_dtype = normalize_dtype(dtype)
    if device not in _DEVICES:
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        _check_cuda()
    directory = resolve_model_dir(model_id_or_path, revision=revision, download=download)
    config = ModelConfig.from_dir(directory)
    if not isinstance(mmap, bool):
        raise TypeError(f"mmap must be a bool, got {mmap!r}")
    tensors = _load_weights(directory, config, mmap)
    if not config.attention_bias:
        # GPT-NeoX without attention biases: the core always adds a bias.
        for i in range(config.n_layer):
            p = f"gpt_neox.layers.{i}.attention."
            tensors.setdefault(p + "query_key_value.bias", np.zeros(3 * config.d_model, np.float32))
            tensors.setdefault(p + "dense.bias", np.zeros(config.d_model, np.float32))
    core = _core.Model(_core_config(config), tensors, core_dtype)
    _release_copied(tensors, core_dtype)
    if device == "cuda":
        try:
            core.to_device(_DEVICES["cuda"])
        except (NotImplementedError, ValueError) as e:  # MemoryError (GPU full) stays one
            raise RuntimeError(f"device='cuda': cannot move {directory} to the GPU: {e}") from e
    return Model(core, config, core_dtype, directory, _find_tokenizer(directory), device=device)


# numpy dtype of the tensors the core borrows for each storage dtype
_BORROWED_DTYPE = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16}


def _release_copied(tensors: dict[str, np.ndarray], core_dtype: str) -> None:
    """Releases the file pages of every tensor the core copied. Per
    specstream.h the core borrows a matrix stored in the requested dtype
    (and a quantized model's embed_in) and copies everything else, so after a
    conversion (e.g. int8 from an f32 file) the source pages need not stay
    resident: without this, peak RSS of an int8 410m model is ~4x its weights."""
    quantized = WEIGHT_FORMATS[core_dtype]["scales"] != "none"
    for name, arr in tensors.items():
        borrowed = arr.ndim == 2 and (arr.dtype == _BORROWED_DTYPE.get(core_dtype)
                                      or (quantized and name == "gpt_neox.embed_in.weight"))
        if not borrowed:
            _st.release_pages(arr)


def _check_cuda() -> None:
    """Raises a RuntimeError saying why the CUDA backend cannot run here."""
    if _core.cuda_available() > 0:
        return
    if not _core.build_info().get("cuda"):
        raise RuntimeError("device='cuda': this build of specstream has no CUDA backend (it was compiled without "
                           "nvcc; rebuild with a CUDA toolkit on PATH or SPECSTREAM_CUDA=1)")
    raise RuntimeError("device='cuda': no CUDA GPU is available (no device or no driver); use device='cpu'")
