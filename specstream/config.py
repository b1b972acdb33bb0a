"""GPT-NeoX model configuration, parsed from a Hugging Face ``config.json``.

:class:`ModelConfig` holds what the engine needs to build a GPT-NeoX (Pythia)
model, under short names (``n_layer``, ``d_model``, ...). It is read from the
Hugging Face names (``num_hidden_layers``, ``hidden_size``, ...) by
:meth:`ModelConfig.from_dict` / :meth:`ModelConfig.from_dir`, which accept the
short names too, and written back by :meth:`ModelConfig.to_hf_dict`.

Every problem raises ``ValueError`` naming the offending field.
"""

from __future__ import annotations

import json
import math
import os
import reprlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from . import _contract, _core

__all__ = ["ModelConfig", "HF_NAMES", "EXACT_GELU", "TANH_GELUS", "field_for_key"]

PathLike = Union[str, "os.PathLike[str]"]

#: Activation names meaning the exact erf GELU.
EXACT_GELU = ("gelu",)
#: Activation names meaning the tanh approximation of GELU.
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")

#: ModelConfig field -> accepted Hugging Face key(s), the first one canonical.
HF_NAMES: dict[str, tuple[str, ...]] = {
    "n_layer": ("num_hidden_layers",),
    "d_model": ("hidden_size",),
    "n_head": ("num_attention_heads",),
    "d_ff": ("intermediate_size",),
    "vocab_size": ("vocab_size",),
    "max_position_embeddings": ("max_position_embeddings",),
    "rotary_pct": ("rotary_pct", "partial_rotary_factor"),
    "rotary_emb_base": ("rotary_emb_base", "rope_theta"),
    "layer_norm_eps": ("layer_norm_eps",),
    "use_parallel_residual": ("use_parallel_residual",),
    "hidden_act": ("hidden_act",),
    "tie_word_embeddings": ("tie_word_embeddings",),
    "attention_bias": ("attention_bias",),
    "bos_token_id": ("bos_token_id",),
    "eos_token_id": ("eos_token_id",),
    "initializer_range": ("initializer_range",),
    "torch_dtype": ("torch_dtype", "dtype"),
}

# Fields without a default in Hugging Face's GPTNeoXConfig that a checkpoint
# must state (HF would silently fall back to a 6.9B-sized default).
_REQUIRED = ("n_layer", "d_model", "n_head", "d_ff", "vocab_size")

# Hugging Face GPTNeoXConfig defaults for everything else.
_DEFAULTS: dict[str, Any] = {
    "max_position_embeddings": 2048,
    "rotary_pct": 0.25,
    "rotary_emb_base": 10000.0,
    "layer_norm_eps": 1e-5,
    "use_parallel_residual": True,
    "hidden_act": "gelu",
    "tie_word_embeddings": False,
    "attention_bias": True,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "initializer_range": 0.02,
    "torch_dtype": None,
}

# Upper bounds of the sizes, checked before anything is built from them (a
# config.json is untrusted: 10**6 layers would otherwise make load() list
# 12 million tensor names before the core refuses them). The limits are the
# core's (its model field list): they keep every product it forms in C int
# arithmetic (3 * d_model rows of query_key_value, ...) far from overflow, at
# ~1000x the largest Pythia (d_model 5120, d_ff 20480, vocab 50688).
MAX_SIZES: dict[str, int] = {
    **{ours: int(_contract.field("model", core)["max"])
       for ours, core in (("n_layer", "n_layer"), ("d_model", "d_model"), ("n_head", "n_head"), ("d_ff", "d_ff"),
                          ("vocab_size", "vocab_rows"))},
    "max_position_embeddings": (1 << 31) - 1,
}
# The core computes LayerNorm in float32: an epsilon that is 0 or infinite
# there is not the one the config asks for.
_F32_MIN_NORMAL = 1.1754943508222875e-38
_F32_MAX = 3.4028234663852886e38

_ARCHITECTURE = "GPTNeoXForCausalLM"
_MODEL_TYPE = "gpt_neox"


def _hf(name: str) -> str:
    """The canonical Hugging Face key of a field, for error messages."""
    hf = HF_NAMES[name][0]
    return hf if hf == name else f"{hf} ({name})"


@dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a GPT-NeoX model.

    Attributes are validated on construction (``__post_init__``); the
    derived sizes are properties.
    """

    n_layer: int
    """Transformer blocks (``num_hidden_layers``)."""
    d_model: int
    """Residual stream width (``hidden_size``)."""
    n_head: int
    """Attention heads (``num_attention_heads``); divides ``d_model``."""
    d_ff: int
    """MLP hidden width (``intermediate_size``), 4 * d_model in Pythia."""
    vocab_size: int
    """Rows of embed_in/embed_out (the padded vocabulary, e.g. 50304)."""
    max_position_embeddings: int = 2048
    """Longest context the model was trained for (informational)."""
    rotary_pct: float = 0.25
    """Fraction of each head's dims that get rotary embeddings, in (0, 1]."""
    rotary_emb_base: float = 10000.0
    """Rotary base theta (``rotary_emb_base`` or ``rope_theta``)."""
    layer_norm_eps: float = 1e-5
    """LayerNorm epsilon."""
    use_parallel_residual: bool = True
    """True: x + attn(ln1 x) + mlp(ln2 x); False: sequential residual."""
    hidden_act: str = "gelu"
    """Activation name as in the checkpoint; see :attr:`gelu_tanh`."""
    tie_word_embeddings: bool = False
    """Must be False: GPT-NeoX keeps a separate embed_out matrix."""
    attention_bias: bool = True
    """Whether query_key_value and attention.dense carry biases."""
    bos_token_id: Optional[int] = 0
    """Beginning-of-sequence id (0 in Pythia)."""
    eos_token_id: Optional[int] = 2
    """End-of-sequence id (0 in Pythia)."""
    initializer_range: float = 0.02
    """Std of the normal initialisation (used by random model creation)."""
    torch_dtype: Optional[str] = None
    """Storage dtype the checkpoint declares ("float16", ...), if any."""

    # ------------------------------------------------------------ validation

    def __post_init__(self) -> None:
        for name, limit in MAX_SIZES.items():
            v = getattr(self, name)
            if not _is_int(v):
                raise ValueError(f"config field {_hf(name)} must be an integer, got {_short(v)}")
            if v <= 0:
                raise ValueError(f"config field {_hf(name)} must be positive, got {_short(v)}")
            if v > limit:
                raise ValueError(f"config field {_hf(name)} = {_short(v)} exceeds the limit of {limit}")
        for name in ("rotary_pct", "rotary_emb_base", "layer_norm_eps", "initializer_range"):
            v = getattr(self, name)
            try:
                f = float(v) if _is_number(v) else math.nan
            except OverflowError:  # an integer beyond the range of a float
                f = math.inf
            if not math.isfinite(f):
                raise ValueError(f"config field {_hf(name)} must be a finite number, got {_short(v)}")
            object.__setattr__(self, name, f)
        for name in ("use_parallel_residual", "tie_word_embeddings", "attention_bias"):
            v = getattr(self, name)
            if not isinstance(v, bool):
                raise ValueError(f"config field {_hf(name)} must be true or false, got {_short(v)}")
        for name in ("bos_token_id", "eos_token_id"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v < 0):
                raise ValueError(f"config field {_hf(name)} must be a non-negative integer or null, got {_short(v)}")
            if v is not None and v >= self.vocab_size:
                raise ValueError(
                    f"config field {_hf(name)} = {v} is outside the vocabulary (vocab_size {self.vocab_size})"
                )
        if self.torch_dtype is not None and not isinstance(self.torch_dtype, str):
            raise ValueError(f"config field torch_dtype must be a string, got {_short(self.torch_dtype)}")

        if self.d_model % self.n_head != 0:
            raise ValueError(
                f"config field hidden_size ({self.d_model}) must be divisible by "
                f"num_attention_heads ({self.n_head})"
            )
        if not 0.0 < self.rotary_pct <= 1.0:
            raise ValueError(f"config field rotary_pct must be in (0, 1], got {self.rotary_pct}")
        rd = self.rotary_dim
        if rd < 2 or rd % 2 != 0:
            raise ValueError(
                f"config field rotary_pct: rotary_dim = int(head_dim {self.head_dim} * "
                f"rotary_pct {self.rotary_pct}) = {rd} must be even and at least 2"
            )
        if self.rotary_emb_base <= 1.0:
            raise ValueError(f"config field rotary_emb_base must be > 1, got {self.rotary_emb_base}")
        if not _F32_MIN_NORMAL <= self.layer_norm_eps <= _F32_MAX:
            raise ValueError(f"config field layer_norm_eps must be positive and a normal float32 "
                             f"(in [{_F32_MIN_NORMAL:.4g}, {_F32_MAX:.4g}]), got {self.layer_norm_eps}")
        if self.initializer_range <= 0.0:
            raise ValueError(f"config field initializer_range must be positive, got {self.initializer_range}")
        if not isinstance(self.hidden_act, str) or self.hidden_act not in EXACT_GELU + TANH_GELUS:
            raise ValueError(
                f"config field hidden_act: unknown activation {_short(self.hidden_act)} "
                f"(supported: {', '.join(EXACT_GELU + TANH_GELUS)})"
            )
        if self.tie_word_embeddings:
            raise ValueError(
                "config field tie_word_embeddings: tied input/output embeddings are unsupported "
                "for GPT-NeoX (it has a separate embed_out matrix); set it to false"
            )

    # ------------------------------------------------------------ derived

    @property
    def head_dim(self) -> int:
        """Dimensions per attention head: d_model / n_head."""
        return self.d_model // self.n_head

    @property
    def rotary_dim(self) -> int:
        """Leading dims of each head that get rotary: int(head_dim * rotary_pct)."""
        return int(self.head_dim * self.rotary_pct)

    @property
    def gelu_tanh(self) -> bool:
        """True when hidden_act is a tanh approximation of GELU, False for exact erf."""
        return self.hidden_act in TANH_GELUS

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every weight of the checkpoint, by its Hugging Face name, in HF
        order (the core's tensor table, ``_core.tensor_specs()``)."""
        size = {"1": 1, "d": self.d_model, "3d": 3 * self.d_model, "ff": self.d_ff, "vocab": self.vocab_size}
        specs = _core.tensor_specs()
        shapes: dict[str, tuple[int, ...]] = {}

        def add(name: str, rows: str, cols: str, attention_bias: bool) -> None:
            if attention_bias and not self.attention_bias:
                return
            shapes[name] = (size[rows],) if cols == "1" else (size[rows], size[cols])

        for name, per_layer, rows, cols, bias in specs:
            if not per_layer and name.startswith("gpt_neox.embed_in"):
                add(name, rows, cols, bias)
        for i in range(self.n_layer):
            for name, per_layer, rows, cols, bias in specs:
                if per_layer:
                    add(name % i, rows, cols, bias)
        for name, per_layer, rows, cols, bias in specs:
            if not per_layer and not name.startswith("gpt_neox.embed_in"):
                add(name, rows, cols, bias)
        return shapes

    def num_params(self, embeddings: bool = True) -> int:
        """Parameter count; ``embeddings=False`` leaves out embed_in and embed_out.

        The non-embedding count matches the Pythia model card's column
        (it includes the final LayerNorm).
        """
        total = 0
        for name, shape in self.tensor_shapes().items():
            if not embeddings and name in ("gpt_neox.embed_in.weight", "embed_out.weight"):
                continue
            total += math.prod(shape)
        return total

    # ------------------------------------------------------------ parsing

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """Parses a Hugging Face GPT-NeoX config dict (short names accepted too).

        ``model_type``/``architectures``, when present, must name GPT-NeoX.
        The five size fields are required; the rest default as in Hugging
        Face's GPTNeoXConfig. Unrelated keys (dropouts, use_cache, ...) are
        ignored. Raises ``ValueError`` naming the offending field.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"config must be a JSON object, got {type(d).__name__}")
        model_type = d.get("model_type")
        if model_type is not None and model_type != _MODEL_TYPE:
            raise ValueError(
                f"config field model_type: unsupported architecture {_short(model_type)} "
                f"(only {_MODEL_TYPE!r} / {_ARCHITECTURE} is supported)"
            )
        archs = d.get("architectures")
        if archs is not None:
            if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
                raise ValueError(f"config field architectures must be a list of strings, got {_short(archs)}")
            if archs and not any(a.startswith("GPTNeoX") and not a.startswith("GPTNeoXJapanese") for a in archs):
                raise ValueError(
                    f"config field architectures: unsupported architecture {_short(archs)} "
                    f"(only {_ARCHITECTURE} is supported)"
                )

        src: dict[str, Any] = dict(d)
        rope = src.get("rope_scaling")
        if rope is not None:
            raise ValueError(f"config field rope_scaling: rotary scaling {_short(rope)} is unsupported")
        params = src.get("rope_parameters")
        if params is not None:
            # Newer transformers nest rotary settings here.
            if not isinstance(params, Mapping):
                raise ValueError(f"config field rope_parameters must be an object, got {_short(params)}")
            rope_type = params.get("rope_type", "default")
            if rope_type != "default":
                raise ValueError(f"config field rope_parameters: rope_type {_short(rope_type)} is unsupported")
            for key in ("rope_theta", "partial_rotary_factor"):
                if key in params:
                    src.setdefault(key, params[key])

        values: dict[str, Any] = {}
        for f in fields(cls):
            keys = [k for k in HF_NAMES[f.name] + (f.name,) if k in src]
            found = {k: src[k] for k in keys}
            first = next(iter(found.values()), None)
            if len(found) > 1 and any(v != first or (type(v) is bool) != (type(first) is bool) for v in found.values()):
                raise ValueError(f"config field {_hf(f.name)} is given inconsistently: {found}")
            if found:
                values[f.name] = next(iter(found.values()))
            elif f.name in _REQUIRED:
                raise ValueError(f"config field {_hf(f.name)} is missing")
            else:
                values[f.name] = _DEFAULTS[f.name]
        return cls(**values)

    @classmethod
    def from_json(cls, path: PathLike) -> "ModelConfig":
        """Parses a config.json file; errors name the file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{p}: not valid UTF-8 ({e})") from None
        try:
            d = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{p}: not valid JSON ({e})") from None
        except RecursionError:
            raise ValueError(f"{p}: JSON nested too deeply") from None
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from None
        except RecursionError:  # comparing or printing a value nested almost as deep as json allows
            raise ValueError(f"{p}: a value is nested too deeply") from None

    @classmethod
    def from_dir(cls, path: PathLike) -> "ModelConfig":
        """Parses ``<path>/config.json`` (``path`` may also be the file itself)."""
        p = Path(path)
        if p.is_dir():
            p = p / "config.json"
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no config.json found")
        return cls.from_json(p)

    def to_hf_dict(self) -> dict[str, Any]:
        """The config as a Hugging Face GPT-NeoX ``config.json`` dict."""
        d: dict[str, Any] = {"architectures": [_ARCHITECTURE], "model_type": _MODEL_TYPE}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "torch_dtype" and v is None:
                continue
            d[HF_NAMES[f.name][0]] = v
        d["use_cache"] = True
        return d

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with fields changed (short or Hugging Face names), re-validated."""
        d = self.to_hf_dict()
        for key, value in changes.items():
            target = field_for_key(key)
            for k in HF_NAMES[target] + (target,):
                d.pop(k, None)
            d[HF_NAMES[target][0]] = value
        return ModelConfig.from_dict(d)


def field_for_key(key: str) -> str:
    """Maps a short or Hugging Face key to the ModelConfig field name."""
    for name, hf in HF_NAMES.items():
        if key == name or key in hf:
            return name
    raise ValueError(f"unknown config field {key!r}")


def _short(v: Any) -> str:
    """repr of a config value for an error message: a value from an untrusted
    file may be a 10**5000 (whose repr raises) or a list nested 900 deep."""
    if isinstance(v, int) and v.bit_length() > 128:
        return f"an integer of about {int(v.bit_length() * math.log10(2)) + 1} digits"
    return reprlib.repr(v)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
