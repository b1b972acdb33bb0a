"""atheris harness: config.json handling (specstream.config.ModelConfig).

Each input is used twice:
  1. as the bytes of a config.json read by ModelConfig.from_json (UTF-8 and
     JSON errors, then from_dict);
  2. as a JSON value given to ModelConfig.from_dict: the input parsed as JSON
     when it is JSON, otherwise a value built from the bytes -- mostly a
     valid config with a few fields replaced by arbitrary JSON values (nested
     objects, lists, huge and negative numbers, NaN/inf floats, booleans
     where numbers belong) or removed, sometimes an arbitrary object or value.
A config that parses must be self-consistent: every derived size is a
positive int, to_hf_dict() parses back to an equal config, and
tensor_shapes() is computed for configs of a sane size. Documented failure:
ValueError naming the field (TypeError, KeyError, IndexError tolerated).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import _common

_common.instrumented_specstream()

import atheris  # noqa: E402

from specstream.config import HF_NAMES, ModelConfig  # noqa: E402

_PATH = os.path.join(tempfile.mkdtemp(prefix="specstream-fuzz-config-"), "config.json")
_KEYS = sorted({k for names in HF_NAMES.values() for k in names} | set(HF_NAMES) |
               {"model_type", "architectures", "rope_scaling", "rope_parameters", "rope_type", "use_cache"})
_STRINGS = ["gpt_neox", "GPTNeoXForCausalLM", "gelu", "gelu_new", "gelu_fast", "relu", "float16", "default",
            "linear", "", "GPTNeoXJapaneseForCausalLM", "LlamaForCausalLM"]
_NUMBERS = [0, 1, 2, 3, 4, 8, 16, 64, -1, 2**31, 2**63, 10**400, 0.5, 0.25, 1e-5, 1.0, -0.0, float("nan"),
            float("inf"), -float("inf"), 1e308, 5e-324]


def _value(fdp: atheris.FuzzedDataProvider, depth: int = 0):
    kind = fdp.ConsumeIntInRange(0, 9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.PickValueInList(_NUMBERS)
    if kind == 3:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 80))
    if kind == 4:
        return fdp.ConsumeFloat()
    if kind == 5:
        return fdp.PickValueInList(_STRINGS)
    if kind == 6:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12))
    if kind == 7:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return _object(fdp, depth + 1)


def _object(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> dict:
    out = {}
    for _ in range(fdp.ConsumeIntInRange(0, 24)):
        key = fdp.PickValueInList(_KEYS) if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeUnicodeNoSurrogates(6)
        out[key] = _value(fdp, depth)
    return out


_BASE = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 256,
         "vocab_size": 1000, "rotary_pct": 0.25, "model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"]}


def _mutated_config(fdp: atheris.FuzzedDataProvider) -> dict:
    """A valid config with a few fields replaced, added or removed: deep
    inside the validation, where random objects rarely get."""
    out = dict(_BASE)
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        key = fdp.PickValueInList(_KEYS)
        if fdp.ConsumeIntInRange(0, 5) == 0:
            out.pop(key, None)
        else:
            out[key] = _value(fdp, 3)
    return out


def _check(cfg: ModelConfig) -> None:
    for name in ("n_layer", "d_model", "n_head", "d_ff", "vocab_size", "head_dim", "rotary_dim"):
        v = getattr(cfg, name)
        assert isinstance(v, int) and not isinstance(v, bool) and v > 0, (name, v)
    assert cfg.rotary_dim % 2 == 0 and cfg.rotary_dim <= cfg.head_dim
    assert ModelConfig.from_dict(cfg.to_hf_dict()) == cfg
    json.dumps(cfg.to_hf_dict(), allow_nan=False)  # what save_pretrained would write
    if cfg.n_layer <= 64:
        shapes = cfg.tensor_shapes()
        assert len(shapes) >= 4 + 8 * cfg.n_layer
        assert cfg.num_params() > 0


def one_input(data: bytes) -> None:
    with open(_PATH, "wb") as f:
        f.write(data)
    try:
        _check(ModelConfig.from_json(_PATH))
    except _common.allowed((ValueError,)):
        pass
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # not JSON (or too deep for Python's parser)
        fdp = atheris.FuzzedDataProvider(data)
        kind = fdp.ConsumeIntInRange(0, 7)
        value = _mutated_config(fdp) if kind < 5 else _object(fdp) if kind < 7 else _value(fdp)
    _check(ModelConfig.from_dict(value))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--replay"]:
        sys.exit(1 if _common.replay(one_input, sys.argv[2:], strict=(ValueError,)) else 0)
    _common.main(one_input, strict=(ValueError,))
