"""The configuration contract between Python and the C core: the core's field
lists (csrc/include/specstream.h) are the one source of names, defaults,
limits, choices and rules; the dataclasses declare the same fields, take
their defaults from the core and let it check every instance; the binding
parses dicts of values (no positional tuples); one tensor-name table."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import specstream
from specstream import CacheConfig, SpeculativeConfig, _contract, _core
from specstream.config import MAX_SIZES, ModelConfig
from specstream.generation import CACHE_POLICIES, SPECULATIVE_METHODS


@pytest.mark.parametrize("cls,kind", [(CacheConfig, "cache"), (SpeculativeConfig, "speculative")])
def test_dataclasses_declare_the_cores_fields_with_its_defaults(cls, kind):
    schema = _core.config_schema(kind)
    assert [f.name for f in dataclasses.fields(cls)] == [f["name"] for f in schema]
    for f, core in zip(dataclasses.fields(cls), schema):
        assert f.default == core["default"], f.name
        assert core["doc"], f"{kind}.{f.name} has no documentation in the field list"


def test_choices_and_limits_come_from_the_core():
    assert CACHE_POLICIES == tuple(_contract.field("cache", "policy")["choices"])
    assert {"full", "window", "streaming", "recompute", "h2o", "snapkv", "keynorm"} <= set(CACHE_POLICIES)
    assert SPECULATIVE_METHODS[:3] == ("none", "draft", "lookup")
    assert MAX_SIZES["n_layer"] == _contract.field("model", "n_layer")["max"] == 4096
    assert MAX_SIZES["vocab_size"] == _contract.field("model", "vocab_rows")["max"]
    k = _contract.field("speculative", "k")
    with pytest.raises(ValueError, match=f"SpeculativeConfig.k must be <= {int(k['max'])}"):
        SpeculativeConfig(k=int(k["max"]) + 1)
    ema = _contract.field("speculative", "ema_decay")
    assert ema["max_open"] and not ema["min_open"]


def test_every_schema_field_is_a_cli_flag():
    from specstream.__main__ import build_parser

    parser = build_parser()
    generate = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("generate"))
    dests = {a.dest for a in generate._actions}
    for kind in ("cache", "speculative"):
        for f in _core.config_schema(kind):
            assert f["name"] in dests, f"--{f['name']} missing"


def test_core_checks_dicts_itself():
    """The binding refuses what the dataclasses would: a dict bypassing
    Python gets the same named errors."""
    with pytest.raises(ValueError, match="CacheConfig.window must be >= 1, got 0"):
        _core.config_check("cache", {"policy": "window", "window": 0})
    with pytest.raises(TypeError, match="CacheConfig has no field 'windw'"):
        _core.config_check("cache", {"windw": 3})
    with pytest.raises(ValueError, match=r"CacheConfig.window \(2\) is smaller than CacheConfig.n_sink \(4\)"):
        _core.config_check("cache", {"policy": "streaming", "window": 2})
    assert _core.config_check("cache", {})["window"] == _contract.default("cache", "window")


def test_wrong_types_are_type_and_value_errors():
    err = _core.ConfigTypeError
    assert issubclass(err, TypeError) and issubclass(err, ValueError)
    with pytest.raises(err, match="CacheConfig.window must be an integer, got '8'"):
        CacheConfig(window="8")


# --------------------------------------------------- defects found by probing

def test_numpy_scalars_are_accepted_everywhere(model_dirs):
    """temperature=np.float32(0.7) used to be refused as not a finite number."""
    m = specstream.load(model_dirs["parallel"])
    a = m.generate([1, 2, 3], max_new_tokens=6, temperature=np.float32(0.7), top_p=np.float64(0.9),
                   top_k=np.int64(50), seed=np.uint64(5))
    b = m.generate([1, 2, 3], max_new_tokens=6, temperature=0.7, top_p=0.9, top_k=50, seed=5)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    c = CacheConfig(policy="streaming", n_sink=np.int32(2), window=np.int64(16), entropy_threshold=np.float32(2.5))
    assert type(c.window) is int and c.window == 16 and type(c.entropy_threshold) is float
    assert SpeculativeConfig(k=np.int16(3), adaptive=np.bool_(True)).adaptive is True


@pytest.mark.parametrize("ids,what", [([5, -1], "token id -1 at index 1 is negative"),
                                      ([2**31], "token id 2147483648 at index 0 is too large"),
                                      (np.array([2**40], np.int64), "token id 1099511627776 at index 0 is too large"),
                                      (np.array([2**63], np.uint64), "token id 9223372036854775808 at index 0 is too large")])
def test_out_of_range_structural_ids_are_value_errors(ids, what):
    """They used to raise OverflowError or IndexError."""
    with pytest.raises(ValueError, match=f"CacheConfig.structural_ids: {what}"):
        CacheConfig(policy="window", window=8, refresh_budget=2, refresh="structural", structural_ids=ids)


def test_structural_ids_beyond_the_vocabulary_fail_when_used(model_dirs):
    m = specstream.load(model_dirs["parallel"])
    cache = CacheConfig(policy="window", window=8, refresh_budget=2, refresh="structural",
                        structural_ids=(1, m.vocab_size + 5))
    with pytest.raises(IndexError, match=f"structural id {m.vocab_size + 5} is outside the vocabulary"):
        m.forward(list(range(20)), cache=cache)


# --------------------------------------------------------------- tensors

def test_one_tensor_table():
    specs = _core.tensor_specs()
    names = [name for name, *_ in specs]
    assert names[0] == "gpt_neox.embed_in.weight" and names[-1] == "embed_out.weight"
    cfg = ModelConfig(n_layer=2, d_model=64, n_head=4, d_ff=256, vocab_size=100)
    shapes = cfg.tensor_shapes()
    per_layer = [name for name, layer, *_ in specs if layer]
    assert len(shapes) == (len(specs) - len(per_layer)) + 2 * len(per_layer)
    assert shapes["gpt_neox.layers.1.attention.query_key_value.weight"] == (192, 64)
    assert shapes["gpt_neox.layers.0.mlp.dense_4h_to_h.weight"] == (64, 256)
    no_bias = cfg.replace(attention_bias=False).tensor_shapes()
    dropped = set(shapes) - set(no_bias)
    assert dropped == {n % i for n, layer, _, _, bias in specs if bias for i in range(2)}


def test_float_fields_read_back_as_given():
    """The core stores some numbers as float32; the dataclass keeps the digits."""
    assert SpeculativeConfig(ema_decay=0.7).ema_decay == 0.7
    assert CacheConfig(entropy_threshold=0.1).entropy_threshold == 0.1
    assert math.isclose(SpeculativeConfig().ema_decay, 0.8)
