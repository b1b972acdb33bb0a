"""The CPU matrix-product kernels (csrc/kernels/cpu/matmul.c, gemm.c, quant.c)
against NumPy, for every weight dtype, both paths (dot-product kernels for
small batches, blocked GEMM from SS_GEMM_MIN_TOKENS tokens on) and odd shapes;
int8 quantization; thread-count invariance; the forced-portable path; the
FLOP-rate probe; int8 models end to end.

Every kernel test runs once per SIMD level the CPU has (scalar, avx2,
avx512bf16), forced in-process with ``level=``.

Tolerances are derived from each level's documented arithmetic
(csrc/kernels/cpu/kernels.h, modelled in tests/kernel_arithmetic.py), per
element: |kernel - exact| <= (activation error + (k + 8) u) sum_c |x_c w_c|,
where exact is float64 NumPy on the weights as stored (f16/bf16 rounded,
int8 times its scale). Levels this CPU lacks are still checked through the
model: the stated activation bound holds for it on every machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import specstream
from specstream import _core
from conftest import rel_err, token_ids
import kernel_arithmetic as ka

DTYPES = ["f32", "f16", "bf16", "i8"]
GEMM_MIN = 12  # SS_GEMM_MIN_TOKENS
EPI_NONE, EPI_GELU, EPI_GELU_TANH, EPI_ADD = 0, 1, 2, 3


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    b = np.ascontiguousarray(a, np.float32).view(np.uint32)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(u: np.ndarray) -> np.ndarray:
    return (u.astype(np.uint32) << 16).view(np.float32)


def unpack_i8(packed: np.ndarray, m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    off = _core.i8_scale_offset(m, k)
    return packed[: m * k].view(np.int8).reshape(m, k), packed[off:off + 4 * m].view(np.float32)


def stored(w: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(array handed to the kernel, the f64 matrix it stands for)."""
    if dtype == "f32":
        return w, w.astype(np.float64)
    if dtype == "f16":
        h = w.astype(np.float16)
        return h, h.astype(np.float64)
    if dtype == "bf16":
        b = to_bf16_bits(w)
        return b, from_bf16_bits(b).astype(np.float64)
    packed = _core.quantize_i8(w)
    q, s = unpack_i8(packed, *w.shape)
    return packed, q.astype(np.float64) * s.astype(np.float64)[:, None]


def gelu(v: np.ndarray, tanh: bool) -> np.ndarray:
    if tanh:
        return 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3)))
    from math import erf
    return 0.5 * v * (1 + np.vectorize(erf)(v / np.sqrt(2)))


def case(n: int, m: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed + 1000 * n + 7 * m + k)
    return (rng.standard_normal((n, k)).astype(np.float32), rng.standard_normal((m, k)).astype(np.float32),
            rng.standard_normal(m).astype(np.float32))


def level_param(test):
    """Runs a test once per kernel level; levels this CPU lacks are skipped."""
    have = _core.simd_levels()
    marks = [pytest.param(lv, marks=pytest.mark.skipif(lv not in have, reason=f"CPU lacks {lv}")) for lv in ka.LEVELS]
    return pytest.mark.parametrize("level", marks)(test)


def within_bound(got, want, bound) -> bool:
    return bool(np.all(np.abs(got.astype(np.float64) - want) <= bound))


@level_param
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k", [(37, 29), (100, 257), (129, 520), (16, 8), (5, 3), (48, 1)])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 11, 12, 13, 31, 64, 300])
def test_matmul_matches_numpy(level, dtype, n, m, k):
    """k not a multiple of 8, m not a multiple of the 16-row panel or of 4,
    n across both paths and the 6-token panel edge; per element within the
    level's stated bound, and within accumulation error of its model."""
    x, w, b = case(n, m, k)
    wk, wref = stored(w, dtype)
    act = ka.activation_error(level, dtype, n, GEMM_MIN)
    ref = x.astype(np.float64) @ wref.T + b
    out = _core.matmul(x, wk, dtype, m, b, level=level)
    assert out.shape == (n, m)
    assert within_bound(out, ref, ka.bound(x, wref, act, b))
    modelled = ka.model(x, wref, split=act > 0) + b
    assert within_bound(out, modelled, ka.bound(x, wref, 0.0, b))
    no_bias = _core.matmul(x, wk, dtype, m, level=level)
    assert within_bound(no_bias, ref - b, ka.bound(x, wref, act))


@level_param
@pytest.mark.parametrize("dtype", ["f32", "bf16", "i8"])
@pytest.mark.parametrize("n", [1, 4, GEMM_MIN, 40])
def test_epilogues(level, dtype, n):
    m, k = 70, 45
    x, w, b = case(n, m, k, seed=3)
    wk, wref = stored(w, dtype)
    v = x.astype(np.float64) @ wref.T + b
    err = ka.bound(x, wref, ka.activation_error(level, dtype, n, GEMM_MIN), b)
    for epi, tanh in [(EPI_GELU, False), (EPI_GELU_TANH, True)]:
        # |gelu'| <= 1.13; the f32 GELU itself adds a few ulps of its value
        expect = gelu(v, tanh)
        got = _core.matmul(x, wk, dtype, m, b, epilogue=epi, level=level)
        assert within_bound(got, expect, 1.13 * err + 16 * ka.U * (np.abs(expect) + 1e-3))
    resid = np.random.default_rng(5).standard_normal((n, m)).astype(np.float32)
    out = resid.copy()
    _core.matmul(x, wk, dtype, m, b, epilogue=EPI_ADD, out=out, level=level)
    assert within_bound(out, resid + v, err + ka.U * np.abs(resid + v))


@pytest.mark.parametrize("level", ka.LEVELS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_modelled_activation_error_within_stated_bound(level, dtype):
    """On every machine, for every level: what the level's arithmetic does to
    the activations stays within its stated bound, on random values and on
    values whose low mantissa bits are all set (the worst case for a split)."""
    rng = np.random.default_rng(17)
    x = (rng.standard_normal((6, 300)) * 2.0 ** rng.integers(-20, 20, (6, 300))).astype(np.float32)
    worst = (x.view(np.uint32) | np.uint32(0x7FFF)).view(np.float32)
    w = rng.standard_normal((40, 300))
    for xs in (x, worst):
        act = ka.activation_error(level, dtype, 1, GEMM_MIN)
        used = ka.activations(xs, split=act > 0)
        assert np.all(np.abs(used - xs.astype(np.float64)) <= act * np.abs(xs.astype(np.float64)))
        x64 = xs.astype(np.float64)
        assert within_bound(ka.model(xs, w, split=act > 0), x64 @ w.T, act * (np.abs(x64) @ np.abs(w).T) + 1e-300)


def test_activation_bound_detects_a_broken_split():
    """The stated 2^-16 bound is tight enough to fail a split that drops lo
    (x rounded to bf16 alone), so the model test above can fail."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    hi_only = ka.bf16_round(x).astype(np.float64)
    assert not np.all(np.abs(hi_only - x) <= ka.ACTIVATION_ERROR["avx512bf16", "bf16"] * np.abs(x))


@level_param
def test_paths_dispatch_by_batch_size(level):
    if level == "scalar":
        assert _core.matmul_path("bf16", 1, level) == "scalar"
        return
    assert _core.matmul_path("f32", 1, level).startswith("gemv")
    assert _core.matmul_path("i8", GEMM_MIN - 1, level).startswith("gemv")
    assert _core.matmul_path("bf16", GEMM_MIN, level) == "gemm-avx2"
    assert _core.matmul_path("f32", 512, level) == "gemm-avx2"
    expect = "gemv-avx512bf16" if level == "avx512bf16" else "gemv-avx2"
    assert _core.matmul_path("bf16", 1, level) == expect


def test_levels_this_cpu_lacks_are_refused():
    have = _core.simd_levels()
    assert have[0] == "scalar" and have == ka.LEVELS[:len(have)]
    x, w, _ = case(1, 8, 8)
    with pytest.raises(ValueError, match="unknown kernel level"):
        _core.matmul(x, w, "f32", 8, level="sse9")
    if len(have) < len(ka.LEVELS):
        with pytest.raises(ValueError, match="cannot run"):
            _core.matmul(x, w, "f32", 8, level=ka.LEVELS[-1])


def test_int8_quantization_error_bound():
    rng = np.random.default_rng(11)
    w = (rng.standard_normal((67, 203)) * rng.uniform(0.01, 10, size=(67, 1))).astype(np.float32)
    w[3] = 0.0                      # an all-zero row
    w[4, 7] = 1e4                   # an outlier sets its row's scale
    q, s = unpack_i8(_core.quantize_i8(w), *w.shape)
    np.testing.assert_allclose(s, np.abs(w).max(axis=1) / 127, rtol=1e-6)
    assert np.abs(q.astype(np.int32)).max() <= 127
    err = np.abs(q * s[:, None] - w)
    assert (err <= s[:, None] * (0.5 + 1e-5) + 1e-30).all()  # round to nearest: half a step
    assert (q[3] == 0).all()
    # relative Frobenius error of Gaussian rows: about 1 / (127 * sqrt(3) * 2.5) ~ 0.2%
    ok = np.ones(len(w), bool)
    ok[[3, 4]] = False
    rel = np.linalg.norm((q * s[:, None] - w)[ok]) / np.linalg.norm(w[ok])
    assert rel < 0.01


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 40, 200])
def test_matmul_bitwise_identical_across_thread_counts(dtype, n):
    m, k = 300, 200   # large enough for both threads to work
    x, w, b = case(n, m, k, seed=9)
    wk, _ = stored(w, dtype)
    before = specstream.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 3):
            specstream.set_num_threads(t)
            outs.append(_core.matmul(x, wk, dtype, m, b, epilogue=EPI_GELU))
    finally:
        specstream.set_num_threads(before)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_peak_flops_probe():
    g = _core.peak_gflops(0.05, 2)
    assert 0.1 < g < 1e5
    with pytest.raises(ValueError):
        _core.peak_gflops(0.0, 1)


_PORTABLE_SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, sys.argv[1])
    import specstream
    from specstream import _core
    data = dict(np.load(sys.argv[2]))
    out = {"level": np.array(_core.simd_level()), "variant": np.array(specstream.cpu_kernels()),
           "path": np.array(_core.matmul_path("bf16", 1))}
    for dt in ("f32", "f16", "bf16", "i8"):
        for n in (1, 3, 40):
            out[f"{dt}-{n}"] = _core.matmul(data[f"x{n}"], data[f"w-{dt}"], dt, int(data["m"]), data["b"])
    m = specstream.load(sys.argv[3], dtype="int8")
    out["logits"] = m.forward(data["ids"])
    np.savez(sys.argv[4], **out)
""")


def _run_with_kernels(setting: str, tmp_path, model_dir, inputs) -> dict:
    script = tmp_path / "portable.py"
    script.write_text(_PORTABLE_SCRIPT)
    result = tmp_path / f"out-{setting}.npz"
    env = dict(os.environ, SPECSTREAM_KERNELS=setting)
    root = os.path.dirname(os.path.dirname(specstream.__file__))
    subprocess.run([sys.executable, str(script), root, str(inputs), str(model_dir), str(result)], check=True,
                   env=env, timeout=300)
    return dict(np.load(result))


def test_forced_portable_path_matches_simd(tmp_path, model_dirs):
    """SPECSTREAM_KERNELS=scalar runs the portable C everywhere (matmul,
    attention, the model); its results equal the SIMD ones within 1e-5."""
    m, k = 53, 75
    rng = np.random.default_rng(21)
    w = rng.standard_normal((m, k)).astype(np.float32)
    data = {"m": np.array(m), "b": rng.standard_normal(m).astype(np.float32),
            "ids": token_ids(20, 1000, seed=8)}
    for n in (1, 3, 40):
        data[f"x{n}"] = rng.standard_normal((n, k)).astype(np.float32)
    for dt in DTYPES:
        data[f"w-{dt}"] = stored(w, dt)[0]
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **data)
    scalar = _run_with_kernels("scalar", tmp_path, model_dirs["parallel"], inputs)
    auto = _run_with_kernels("auto", tmp_path, model_dirs["parallel"], inputs)
    assert int(scalar["level"]) == 0 and str(scalar["variant"]) == "scalar" and str(scalar["path"]) == "scalar"
    assert int(auto["level"]) == _core.simd_level()
    capped = _run_with_kernels("avx2", tmp_path, model_dirs["parallel"], inputs)
    assert int(capped["level"]) == min(1, _core.simd_level())
    assert str(capped["path"]) != "gemv-avx512bf16"
    for dt in DTYPES:
        for n in (1, 3, 40):
            assert rel_err(scalar[f"{dt}-{n}"], auto[f"{dt}-{n}"]) < 1e-5, (dt, n)
    assert rel_err(scalar["logits"], auto["logits"]) < 1e-4


# --------------------------------------------------------------- int8 models

def test_int8_model_close_to_f32(model_dirs):
    ids = token_ids(40, 1000, seed=3)
    ref = specstream.load(model_dirs["parallel"]).forward(ids)
    m8 = specstream.load(model_dirs["parallel"], dtype="int8")
    assert m8.dtype == "int8"
    assert specstream.load(model_dirs["parallel"], dtype="i8").dtype == "int8"
    assert rel_err(m8.forward(ids), ref) < 3e-2
    # weights read per token: ~1/4 of f32 (plus per-row scales)
    f32_bytes = specstream.load(model_dirs["parallel"]).weight_bytes
    assert m8.weight_bytes < 0.4 * f32_bytes


@pytest.mark.parametrize("name", ["parallel", "sequential"])
def test_int8_decode_equals_prefill(models, model_dirs, name):
    """Token-by-token decoding (dot-product kernels) and one prefill (GEMM)
    of an int8 model agree to f32 rounding."""
    m8 = specstream.load(model_dirs[name], dtype="int8")
    ids = token_ids(48, m8.vocab_size, seed=4)
    assert rel_err(m8.forward(ids, chunk=1), m8.forward(ids)) < 1e-4


def test_int8_perplexity_cost_is_small(model_dirs):
    """PPL of int8 weights within 1% of f32 on a random model (the measured
    figure for the benchmark shapes is in benchmarks/results/cpu_peers.json)."""
    from specstream.eval import perplexity

    ids = token_ids(200, 1000, seed=12)
    p32 = perplexity(specstream.load(model_dirs["parallel"]), ids, chunk=64).ppl
    p8 = perplexity(specstream.load(model_dirs["parallel"], dtype="int8"), ids, chunk=64).ppl
    assert abs(p8 / p32 - 1) < 0.01


def test_int8_results_identical_across_thread_counts(model_dirs):
    m8 = specstream.load(model_dirs["parallel"], dtype="int8")
    ids = token_ids(33, 1000, seed=6)
    before = specstream.get_num_threads()
    try:
        specstream.set_num_threads(1)
        one = m8.forward(ids), m8.forward(ids, chunk=1)
        specstream.set_num_threads(2)
        two = m8.forward(ids), m8.forward(ids, chunk=1)
    finally:
        specstream.set_num_threads(before)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
