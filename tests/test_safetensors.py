"""Tests of specstream.safetensors: round trips, bf16, corrupt files, sharded dirs."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_

from specstream import safetensors as st
from specstream.safetensors import SafetensorsError
from conftest import rss_bytes


def write_raw(path: Path, header: Any, data: bytes = b"", length: int | None = None) -> Path:
    """Writes a hand-made file: header is a dict (JSON-encoded) or raw bytes."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return path


def entry(dtype: str = "F32", shape: list[int] | None = None, offsets: list[int] | None = None) -> dict:
    return {"dtype": dtype, "shape": [2, 2] if shape is None else shape,
            "data_offsets": [0, 16] if offsets is None else offsets}


# --------------------------------------------------------------- round trip


def test_round_trip_all_dtypes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {
        "a.weight": rng.standard_normal((3, 5)).astype(np.float32),
        "b.half": rng.standard_normal((7,)).astype(np.float16),
        "c.bf16": st.f32_to_bf16(rng.standard_normal((2, 3)).astype(np.float32)),
        "d.f64": rng.standard_normal((2,)),
        "e.ids": np.arange(5, dtype=np.int32),
        "f.mask": np.array([True, False, True]),
        "g.empty": np.zeros((0, 4), dtype=np.float32),
        "h.scalar": np.array(3.5, dtype=np.float32),
        "i.u8": np.arange(3, dtype=np.uint8),
    }
    path = tmp_path / "x.safetensors"
    st.save(tensors, path, dtypes={"c.bf16": "BF16"}, metadata={"format": "pt"})

    header = st.read_header(path)
    assert header.metadata == {"format": "pt"}
    assert header.data_start % 8 == 0
    assert header.tensors["c.bf16"].dtype == "BF16"
    assert header.tensors["a.weight"].shape == (3, 5)
    assert header.file_size == path.stat().st_size

    loaded = st.load(path)
    assert set(loaded) == set(tensors)
    for name, arr in tensors.items():
        assert loaded[name].dtype == arr.dtype, name
        assert loaded[name].shape == arr.shape, name
        np.testing.assert_array_equal(loaded[name], arr)
        assert not loaded[name].flags.writeable


def test_loaded_arrays_are_zero_copy_views(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    st.save({"w": np.ones((64, 64), np.float32)}, path)
    w = st.load(path)["w"]
    assert not w.flags.owndata
    assert isinstance(w.base, np.ndarray)
    with pytest.raises(ValueError):
        w[0, 0] = 2.0


def test_release_pages_drops_rss_and_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    st.save({"small": np.arange(10, dtype=np.float32), "big": np.full((2048, 1024), 0.5, np.float32)}, path)
    t = st.load(path)
    assert float(t["big"].sum()) == 2048 * 1024 * 0.5  # touches all 8 MiB
    before = rss_bytes()
    st.release_pages(t["big"])
    assert before - rss_bytes() >= 6 * 2**20
    assert float(t["big"].sum()) == 2048 * 1024 * 0.5  # faults back in, same bytes
    np.testing.assert_array_equal(t["small"], np.arange(10))
    st.release_pages(np.ones(5000))  # not a map: nothing happens


def test_save_converts_floats_on_request(tmp_path: Path) -> None:
    x = np.array([1.0, 1.00390625, -2.5, 65504.0], np.float32)
    path = tmp_path / "x.safetensors"
    st.save({"h": x, "b": x}, path, dtypes={"h": "F16", "b": "BF16"})
    out = st.load(path)
    assert out["h"].dtype == np.float16 and out["b"].dtype == np.uint16
    np.testing.assert_array_equal(out["h"].astype(np.float32), x.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(st.bf16_to_f32(out["b"]), st.bf16_to_f32(st.f32_to_bf16(x)))


def test_save_rejects_bad_requests(tmp_path: Path) -> None:
    with pytest.raises(SafetensorsError, match="'x'"):
        st.save({"x": np.arange(3, dtype=np.int32)}, tmp_path / "a", dtypes={"x": "F32"})
    with pytest.raises(SafetensorsError, match="not being saved"):
        st.save({"x": np.zeros(2, np.float32)}, tmp_path / "a", dtypes={"y": "F16"})
    with pytest.raises(SafetensorsError, match="no safetensors equivalent"):
        st.save({"x": np.zeros(2, np.complex64)}, tmp_path / "a")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_save_is_atomic_on_producer_failure(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    st.save({"w": np.zeros(4, np.float32)}, path)
    before = path.read_bytes()

    def boom() -> np.ndarray:
        raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError):
        st.save_lazy([st.LazyTensor("w", "F32", (4,), boom)], path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_save_lazy_checks_producer_output(tmp_path: Path) -> None:
    bad_shape = st.LazyTensor("w", "F32", (4,), lambda: np.zeros(5, np.float32))
    with pytest.raises(SafetensorsError, match="shape"):
        st.save_lazy([bad_shape], tmp_path / "a.safetensors")
    bad_dtype = st.LazyTensor("w", "F32", (4,), lambda: np.zeros(4, np.float64))
    with pytest.raises(SafetensorsError, match="float64"):
        st.save_lazy([bad_dtype], tmp_path / "a.safetensors")


def test_mixed_itemsizes_stay_aligned(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    st.save({"u8": np.arange(3, dtype=np.uint8), "f64": np.ones(3), "f16": np.ones(3, np.float16),
             "f32": np.ones(3, np.float32)}, path)
    h = st.read_header(path)
    for t in h.tensors.values():
        assert (h.data_start + t.begin) % t.numpy_dtype.itemsize == 0, t


# --------------------------------------------------------------- bf16


def test_bf16_rounding_cases() -> None:
    cases = {
        1.0: 0x3F80,
        -2.0: 0xC000,
        0.0: 0x0000,
        float("inf"): 0x7F80,
        float("-inf"): 0xFF80,
        3.4e38: 0x7F80,  # beyond bf16's largest finite value: rounds to infinity
    }
    for value, bits in cases.items():
        assert st.f32_to_bf16(np.array([value], np.float32))[0] == bits, value
    # ties go to even: 0x3F808000 is halfway between 0x3F80 and 0x3F81 -> 0x3F80;
    # 0x3F818000 is halfway between 0x3F81 and 0x3F82 -> 0x3F82
    halves = np.array([0x3F808000, 0x3F818000, 0x3F808001], np.uint32).view(np.float32)
    assert list(st.f32_to_bf16(halves)) == [0x3F80, 0x3F82, 0x3F81]


def test_bf16_nan_preserved() -> None:
    # A NaN whose payload lies entirely in the low 16 bits would truncate to inf.
    nans = np.array([0x7F800001, 0xFFC00000, 0x7FFFFFFF], np.uint32).view(np.float32)
    out = st.bf16_to_f32(st.f32_to_bf16(nans))
    assert np.isnan(out).all()


@settings(max_examples=300, deadline=None)
@given(st_.floats(width=32, allow_nan=False, allow_infinity=False))
def test_bf16_rounds_to_nearest_even(x: float) -> None:
    f = np.float32(x)
    bits = int(np.array([f]).view(np.uint32)[0])
    lo = bits & 0xFFFF0000  # truncation: the neighbour towards zero
    hi = lo + 0x10000  # the neighbour away from zero (may be the infinity pattern)

    def value(b: int) -> float:
        if b & 0x7FFFFFFF == 0x7F800000:  # rounding treats infinity as 2**128
            return -(2.0**128) if b >> 31 else 2.0**128
        return float(np.array([b], np.uint32).view(np.float32)[0])

    d_lo, d_hi = abs(float(f) - value(lo)), abs(value(hi) - float(f))
    if d_lo != d_hi:
        expected = lo if d_lo < d_hi else hi
    else:
        expected = lo if (lo >> 16) % 2 == 0 else hi
    assert int(st.f32_to_bf16(np.array([f]))[0]) == expected >> 16


def test_bf16_to_f32_rejects_other_dtypes() -> None:
    with pytest.raises(TypeError):
        st.bf16_to_f32(np.zeros(2, np.float32))


# --------------------------------------------------------------- corrupt files


def corrupt_cases(tmp: Path) -> list[tuple[str, Path, str]]:
    """(label, file, expected message fragment) for every malformed-file case."""
    d16 = b"\0" * 16
    cases: list[tuple[str, Path, str]] = []

    def add(label: str, match: str, header: Any, data: bytes = d16, length: int | None = None) -> None:
        cases.append((label, write_raw(tmp / f"{label}.safetensors", header, data, length), match))

    (tmp / "short.safetensors").write_bytes(b"\x01\x02\x03")
    cases.append(("short", tmp / "short.safetensors", "shorter than the 8-byte"))
    add("len_past_end", "runs past the end", {"w": entry()}, length=10_000)
    add("len_absurd", "exceeds", {"w": entry()}, length=2**40)
    add("bad_utf8", "UTF-8", b"\xff\xfe{}")
    add("bad_json", "not valid JSON", b'{"w": ')
    add("not_object", "must be a JSON object", [1, 2])
    add("entry_not_object", "'w'.*must be an object", {"w": 5})
    add("missing_dtype", "'w'.*'dtype'", {"w": {"shape": [2, 2], "data_offsets": [0, 16]}})
    add("missing_shape", "'w'.*'shape'", {"w": {"dtype": "F32", "data_offsets": [0, 16]}})
    add("missing_offsets", "'w'.*'data_offsets'", {"w": {"dtype": "F32", "shape": [2, 2]}})
    add("extra_field", "'w'.*unknown fields", {"w": {**entry(), "foo": 1}})
    add("unknown_dtype", "'w'.*unknown dtype 'F33'", {"w": entry(dtype="F33")})
    add("dtype_not_str", "'w'.*dtype must be a string", {"w": entry(dtype=4)})
    add("neg_shape", "'w'.*non-negative", {"w": entry(shape=[-2, -2])})
    add("float_shape", "'w'.*non-negative integers", {"w": entry(shape=[2.0, 2])})
    add("bool_shape", "'w'.*non-negative integers", {"w": entry(shape=[True, 4])})
    add("shape_not_list", "'w'.*shape must be a list", {"w": entry(shape=4)})
    add("offsets_three", "'w'.*data_offsets must be", {"w": entry(offsets=[0, 8, 16])})
    add("offsets_float", "'w'.*data_offsets must be", {"w": entry(offsets=[0, 16.0])})
    add("offsets_neg", "'w'.*negative", {"w": entry(offsets=[-16, 0])})
    add("begin_gt_end", "'w'.*begin 16 > end 0", {"w": entry(offsets=[16, 0])})
    add("end_past_data", "'w'.*beyond the data buffer", {"w": entry(offsets=[0, 16])}, data=b"\0" * 8)
    add("size_mismatch", "'w'.*holds 16 bytes but shape \\[2, 3\\]", {"w": entry(shape=[2, 3])})
    add("overlap", "'b'.*overlap tensor 'a'",
        {"a": entry(shape=[3], offsets=[0, 12]), "b": entry(shape=[2], offsets=[8, 16])})
    add("duplicate", "'w'.*more than once", b'{"w": ' + json.dumps(entry()).encode()
        + b', "w": ' + json.dumps(entry()).encode() + b"}")
    add("metadata_not_object", "__metadata__ must be an object", {"__metadata__": [1], "w": entry()})
    add("metadata_value", "__metadata__\\['k'\\] must be a string", {"__metadata__": {"k": 1}, "w": entry()})
    add("deep_nesting", "nested too deeply|not valid JSON", b"[" * 100_000 + b"]" * 100_000)
    return cases


def test_every_corrupt_file_raises_a_named_error(tmp_path: Path) -> None:
    for label, path, match in corrupt_cases(tmp_path):
        with pytest.raises(SafetensorsError, match=match) as info:
            st.load(path)
        assert str(path) in str(info.value), label
        assert isinstance(info.value, ValueError)


def test_empty_and_touching_tensors_are_not_overlaps(tmp_path: Path) -> None:
    header = {
        "a": entry(shape=[2], offsets=[0, 8]),
        "e": entry(shape=[0], offsets=[8, 8]),
        "b": entry(shape=[2], offsets=[8, 16]),
    }
    out = st.load(write_raw(tmp_path / "ok.safetensors", header, b"\0" * 16))
    assert out["e"].shape == (0,) and out["b"].shape == (2,)


def test_header_only_file(tmp_path: Path) -> None:
    out = st.load(write_raw(tmp_path / "h.safetensors", {"__metadata__": {"a": "b"}}, b""))
    assert out == {}


@settings(max_examples=150, deadline=None)
@given(st_.binary(min_size=0, max_size=200))
def test_random_bytes_never_crash_otherwise(blob: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.safetensors"
        path.write_bytes(blob)
        try:
            st.load(path)
        except SafetensorsError:
            pass


@settings(max_examples=100, deadline=None)
@given(st_.integers(0, 120), st_.integers(0, 255))
def test_single_byte_corruption_is_caught_or_harmless(pos: int, value: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.safetensors"
        st.save({"a": np.arange(4, dtype=np.float32), "b": np.ones((2, 2), np.float16)}, path)
        raw = bytearray(path.read_bytes())
        raw[pos % len(raw)] = value
        path.write_bytes(bytes(raw))
        try:
            out = st.load(path)
        except SafetensorsError:
            return
        h = st.read_header(path)
        for name, arr in out.items():
            assert arr.nbytes == h.tensors[name].nbytes


# --------------------------------------------------------------- directories


def make_sharded(d: Path, weight_map: dict[str, str] | None = None) -> None:
    st.save({"a": np.ones(2, np.float32), "b": np.zeros(3, np.float32)}, d / "s1.safetensors")
    st.save({"c": np.full(4, 2.0, np.float32)}, d / "s2.safetensors")
    wm = weight_map if weight_map is not None else {"a": "s1.safetensors", "b": "s1.safetensors",
                                                    "c": "s2.safetensors"}
    (d / st.INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": 36}, "weight_map": wm}))


def test_dir_single_file(tmp_path: Path) -> None:
    st.save({"x": np.ones(3, np.float32)}, tmp_path / st.SINGLE_FILE)
    out = st.load_dir_tensors(tmp_path)
    assert list(out) == ["x"]


def test_dir_sharded(tmp_path: Path) -> None:
    make_sharded(tmp_path)
    out = st.load_dir_tensors(tmp_path)
    assert sorted(out) == ["a", "b", "c"]
    np.testing.assert_array_equal(out["c"], [2, 2, 2, 2])
    headers = st.read_dir_headers(tmp_path)
    assert headers["c"][0].name == "s2.safetensors"


def test_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(SafetensorsError, match="neither"):
        st.load_dir_tensors(tmp_path)
    with pytest.raises(SafetensorsError, match="not a directory"):
        st.load_dir_tensors(tmp_path / "nope")

    cases = {
        "missing_shard": ({"a": "s1.safetensors", "b": "s1.safetensors", "c": "s3.safetensors"},
                          "'c'.*shard 's3.safetensors' is missing"),
        "absent_tensor": ({"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors",
                           "z": "s2.safetensors"}, "'z'.*absent"),
        "wrong_shard": ({"a": "s1.safetensors", "b": "s2.safetensors", "c": "s2.safetensors"},
                        "'b'.*listed in 's2.safetensors'"),
        "unlisted": ({"a": "s1.safetensors", "c": "s2.safetensors"}, "'b'.*not listed"),
        "escape": ({"a": "../s1.safetensors"}, "plain file name"),
        "not_str": ({"a": 3}, "must be a file name"),
        "empty": ({}, "empty"),
    }
    for label, (wm, match) in cases.items():
        d = tmp_path / label
        d.mkdir()
        make_sharded(d, wm)
        with pytest.raises(SafetensorsError, match=match):
            st.load_dir_tensors(d)

    d = tmp_path / "twice"
    d.mkdir()
    make_sharded(d)
    st.save({"c": np.ones(1, np.float32), "a": np.ones(1, np.float32)}, d / "s2.safetensors")
    with pytest.raises(SafetensorsError, match="'a'.*two shards"):
        st.load_dir_tensors(d)

    d = tmp_path / "noindexmap"
    d.mkdir()
    (d / st.INDEX_FILE).write_text('{"metadata": {}}')
    with pytest.raises(SafetensorsError, match="weight_map"):
        st.load_dir_tensors(d)


def test_bf16_keeps_shape_of_strided_and_0d_inputs() -> None:
    x = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]
    y = st.f32_to_bf16(x)
    assert y.shape == (4, 3) and y.dtype == np.uint16
    np.testing.assert_array_equal(st.bf16_to_f32(y), x)  # small integers are exact in bf16
    assert st.f32_to_bf16(np.float32(1.0)).shape == ()
