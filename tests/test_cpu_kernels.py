"""The CPU matrix-product kernels (csrc/kernels/cpu/) against NumPy, for every
weight format, every kernel level, batch sizes on both sides of
SS_WIDE_MAX and odd shapes; quantization; the dispatch table; the forced
portable path; the FLOP-rate and bandwidth probes; quantized models end to
end.

Every kernel test runs once per SIMD level the CPU has (scalar, avx2,
avx512, amx), forced in-process with ``level=``.

Tolerances are derived from each kernel's documented arithmetic
(csrc/kernels/cpu/kernels.h, modelled in tests/kernel_arithmetic.py), per
element: |kernel - exact| <= (activation error + weight error + (terms k +
8) u) sum_c |x_c w_c|, where exact is float64 NumPy on the weights the
format stands for (f16/bf16 as stored, int8 q s, int4 (q - z) s). Levels
this CPU lacks are still checked through the model: the stated bounds hold
for it on every machine.
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

FORMATS = ["f32", "f16", "bf16", "int8", "int4"]
WIDE_MAX = 96  # SS_WIDE_MAX
EPI_NONE, EPI_GELU, EPI_GELU_TANH, EPI_ADD = 0, 1, 2, 3


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    b = np.ascontiguousarray(a, np.float32).view(np.uint32)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(u: np.ndarray) -> np.ndarray:
    return (u.astype(np.uint32) << 16).view(np.float32)


def unpack_i8(packed: np.ndarray, m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    off = _core.layout("int8", m, k)["scales"]
    return packed[: m * k].view(np.int8).reshape(m, k), packed[off:off + 4 * m].view(np.float32)


def unpack_i4(packed: np.ndarray, m: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q [m, k] in 0..15, scales [m, groups] f32, zero points [m, groups]) of an int4 matrix."""
    lay = _core.layout("int4", m, k)
    rb, g = lay["row_bytes"], lay["groups"]
    chunks = packed[: m * rb].reshape(m, rb // 16, 16)
    q = np.concatenate([chunks & 15, chunks >> 4], axis=2).reshape(m, -1)[:, :k]
    s = from_bf16_bits(packed[lay["scales"]:lay["scales"] + 2 * m * g].view(np.uint16)).reshape(m, g)
    z = packed[lay["zeros"]:lay["zeros"] + m * g].reshape(m, g)
    return q, s, z


def stored(w: np.ndarray, fmt: str):
    """(array handed to the kernel, the f64 matrix it stands for, the weights
    each kernel level multiplies: level -> f64 matrix)."""
    if fmt == "f32":
        packed, w64 = w, w.astype(np.float64)
    elif fmt == "f16":
        packed = w.astype(np.float16)
        w64 = packed.astype(np.float64)
    elif fmt == "bf16":
        packed = to_bf16_bits(w)
        w64 = from_bf16_bits(packed).astype(np.float64)
    elif fmt == "int8":
        packed = _core.pack(w, "int8")
        q, s = unpack_i8(packed, *w.shape)
        w64 = q.astype(np.float64) * s.astype(np.float64)[:, None]
        return packed, w64, {lv: ka.weights(lv, fmt, w64, (q, s)) for lv in ka.LEVELS}
    else:
        packed = _core.pack(w, "int4")
        q, s, z = unpack_i4(packed, *w.shape)
        group = _core.layout("int4", *w.shape)["group"]
        w64 = (q.astype(np.float64) - np.repeat(z, group, axis=1)[:, : w.shape[1]]) * \
            np.repeat(s.astype(np.float64), group, axis=1)[:, : w.shape[1]]
    return packed, w64, {lv: ka.weights(lv, fmt, w64) for lv in ka.LEVELS}


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
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m,k", [(37, 29), (100, 257), (129, 520), (16, 8), (5, 3), (48, 1), (33, 64)])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 11, 17, 31, 64, WIDE_MAX, WIDE_MAX + 1, 300])
def test_matmul_matches_numpy(level, fmt, n, m, k):
    """k not a multiple of the 32-column chunk, m not a multiple of any row
    tile, n across tiles, both sides of SS_WIDE_MAX; per element within the
    kernel's stated bound, and within accumulation error of its model."""
    x, w, b = case(n, m, k)
    wk, w64, used = stored(w, fmt)
    kl = ka.kernel_level(_core.matmul_path(fmt, n, level))
    ref = x.astype(np.float64) @ w64.T + b
    out = _core.matmul(x, wk, fmt, m, b, level=level)
    assert out.shape == (n, m)
    assert within_bound(out, ref, ka.bound(x, w64, kl, fmt, b))
    modelled = ka.model(x, used[kl], kl, fmt) + b
    assert within_bound(out, modelled, ka.bound(x, w64, kl, fmt, b, exact=False))
    no_bias = _core.matmul(x, wk, fmt, m, level=level)
    assert within_bound(no_bias, ref - b, ka.bound(x, w64, kl, fmt))


@level_param
@pytest.mark.parametrize("fmt", ["f32", "bf16", "int8", "int4"])
@pytest.mark.parametrize("n", [1, 4, 40, WIDE_MAX + 4])
def test_epilogues(level, fmt, n):
    m, k = 70, 45
    x, w, b = case(n, m, k, seed=3)
    wk, w64, _ = stored(w, fmt)
    kl = ka.kernel_level(_core.matmul_path(fmt, n, level))
    v = x.astype(np.float64) @ w64.T + b
    err = ka.bound(x, w64, kl, fmt, b)
    for epi, tanh in [(EPI_GELU, False), (EPI_GELU_TANH, True)]:
        # |gelu'| <= 1.13; the f32 GELU itself adds a few ulps of its value
        expect = gelu(v, tanh)
        got = _core.matmul(x, wk, fmt, m, b, epilogue=epi, level=level)
        assert within_bound(got, expect, 1.13 * err + 16 * ka.U * (np.abs(expect) + 1e-3))
    resid = np.random.default_rng(5).standard_normal((n, m)).astype(np.float32)
    out = resid.copy()
    _core.matmul(x, wk, fmt, m, b, epilogue=EPI_ADD, out=out, level=level)
    assert within_bound(out, resid + v, err + ka.U * np.abs(resid + v))


@pytest.mark.parametrize("level", ka.LEVELS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_modelled_errors_within_stated_bounds(level, fmt):
    """On every machine, for every level: what the level's arithmetic does to
    the activations and the weights stays within its stated bounds, on random
    values and on values whose low mantissa bits are all set (the worst case
    for a split or a rounding)."""
    rng = np.random.default_rng(17)
    x = (rng.standard_normal((6, 300)) * 2.0 ** rng.integers(-20, 20, (6, 300))).astype(np.float32)
    worst = (x.view(np.uint32) | np.uint32(0x7FFF)).view(np.float32)
    _, w64, used = stored(rng.standard_normal((40, 300)).astype(np.float32), fmt)
    w_err = ka.WEIGHT_ERROR.get((level, fmt), 0.0)
    assert np.all(np.abs(used[level] - w64) <= w_err * np.abs(w64))
    for xs in (x, worst):
        x64 = xs.astype(np.float64)
        act = ka.activation_bound(xs, level, fmt)
        assert np.all(np.abs(ka.activations(xs, level, fmt) - x64) <= act)
        err = (act @ np.abs(w64).T) * (1 + w_err) + w_err * (np.abs(x64) @ np.abs(w64).T)
        assert within_bound(ka.model(xs, used[level], level, fmt), x64 @ w64.T, err + 1e-300)


def test_stated_bounds_detect_broken_arithmetic():
    """The stated bounds are tight enough to fail a split that drops lo (x
    rounded to bf16 alone), a coarser fixed point, and int4 weights rounded
    to fewer bits than bf16, so the model tests above can fail."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    hi_only = ka.bf16_round(x).astype(np.float64)
    assert not np.all(np.abs(hi_only - x) <= ka.ACTIVATION_ERROR["amx"] * np.abs(x))
    coarse_fixed = np.round(x * 2.0**16) / 2.0**16  # 4 bits fewer than the int8 kernel's fixed point
    assert not np.all(np.abs(coarse_fixed - x) <= ka.activation_bound(x, "amx", "int8"))
    _, w64, _ = stored(rng.standard_normal((8, 64)).astype(np.float32), "int4")
    coarse = np.round(w64 * 2.0**-np.floor(np.log2(np.abs(w64) + 1e-300)) * 64) / 64 * \
        2.0**np.floor(np.log2(np.abs(w64) + 1e-300))  # 7 significant bits
    assert not np.all(np.abs(coarse - w64) <= ka.WEIGHT_ERROR["amx", "int4"] * np.abs(w64))


@level_param
def test_dispatch_by_level_and_batch_size(level):
    """One kernel per (format, level) for every batch up to SS_WIDE_MAX; a
    larger batch may take a GEMM; a forced level runs its own kernel where the
    format has one."""
    for fmt in FORMATS:
        wide = _core.matmul_path(fmt, 1, level)
        assert all(_core.matmul_path(fmt, n, level) == wide for n in (2, 16, 64, WIDE_MAX))
        assert ka.kernel_level(wide) == level or (level == "amx" and fmt in ("f32", "f16"))
        if level == "scalar":
            assert _core.matmul_path(fmt, WIDE_MAX + 1, level) == "scalar"
        elif level == "amx" and fmt in ("bf16", "int8", "int4"):
            assert _core.matmul_path(fmt, WIDE_MAX + 1, level) == "amx"
        else:
            assert _core.matmul_path(fmt, WIDE_MAX + 1, level) == "avx2-gemm"


def test_auto_dispatch_follows_the_measured_order():
    """Without a forced level, each format runs the first kernel of its
    preference order (formats.c, from benchmarks/bench_kernels.py) that the
    CPU has, for batches up to SS_WIDE_MAX and beyond."""
    have = _core.simd_levels()
    for f in _core.weight_formats():
        for n, order in ((1, f["wide_order"]), (WIDE_MAX, f["wide_order"]), (WIDE_MAX + 1, f["gemm_order"])):
            assert order[-1] == "scalar"
            want = next(lv for lv in order if lv in have)
            assert ka.kernel_level(_core.matmul_path(f["name"], n)) == want, (f["name"], n)
    if "amx" in have:  # the orders measured on the machine of formats.c
        assert _core.matmul_path("bf16", 1) == "amx" and _core.matmul_path("int8", 1) == "avx512-gemv"
        assert _core.matmul_path("f32", 1) == "avx512-gemv" and _core.matmul_path("int8", WIDE_MAX + 1) == "amx"


def test_levels_this_cpu_lacks_are_refused():
    have = _core.simd_levels()
    assert have[0] == "scalar" and have == ka.LEVELS[:len(have)]
    x, w, _ = case(1, 8, 8)
    with pytest.raises(ValueError, match="unknown kernel level"):
        _core.matmul(x, w, "f32", 8, level="sse9")
    with pytest.raises(ValueError, match="unknown weight format"):
        _core.matmul(x, w, "int3", 8)
    if len(have) < len(ka.LEVELS):
        with pytest.raises(ValueError, match="cannot run"):
            _core.matmul(x, w, "f32", 8, level=ka.LEVELS[-1])


def test_weight_format_table():
    """Names, aliases and sizes come from the core's table; specstream.load
    accepts exactly its names and aliases."""
    table = {f["name"]: f for f in _core.weight_formats()}
    assert list(table) == FORMATS
    assert [table[f]["bits"] for f in FORMATS] == [32, 16, 16, 8, 4]
    assert [f for f in FORMATS if table[f]["checkpoint"]] == ["f32", "f16", "bf16"]
    m, k = 10, 100
    assert _core.layout("f16", m, k)["bytes"] == 2 * m * k
    lay = _core.layout("int4", m, k)
    assert lay["row_bytes"] == 64 and lay["groups"] == 2 and lay["bytes"] == lay["zeros"] + m * 2
    from specstream.model import normalize_dtype
    assert normalize_dtype("I4") == "int4" and normalize_dtype("bfloat16") == "bf16"
    with pytest.raises(ValueError, match="dtype must be one of"):
        normalize_dtype("int3")


def test_int8_quantization_error_bound():
    rng = np.random.default_rng(11)
    w = (rng.standard_normal((67, 203)) * rng.uniform(0.01, 10, size=(67, 1))).astype(np.float32)
    w[3] = 0.0                      # an all-zero row
    w[4, 7] = 1e4                   # an outlier sets its row's scale
    q, s = unpack_i8(_core.pack(w, "int8"), *w.shape)
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


def test_int4_quantization_error_bound():
    """Per group of 64: 16 levels (q - z) s covering [min(w, 0), max(w, 0)],
    s rounded up to bf16; every weight within half a step; zeros and padding
    exact; the dequantized values are what the portable path computes."""
    rng = np.random.default_rng(12)
    m, k = 41, 203                  # 4 groups, the last one partial; 7 chunks, the last one padded
    w = (rng.standard_normal((m, k)) * rng.uniform(0.01, 10, size=(m, 1))).astype(np.float32)
    w[3] = 0.0                      # an all-zero row
    w[4, 7] = 1e4                   # an outlier sets its group's scale
    w[5, :64] = 0.37                # a constant group
    w[6] = np.abs(w[6])             # one-signed rows: zero points 0 and 15
    w[7] = -np.abs(w[7])
    packed = _core.pack(w, "int4")
    assert packed.nbytes == _core.layout("int4", m, k)["bytes"]
    q, s, z = unpack_i4(packed, m, k)
    assert q.max() <= 15 and z.max() <= 15
    g = np.arange(k) // 64
    deq = (q.astype(np.float64) - z[:, g]) * s[:, g].astype(np.float64)
    np.testing.assert_array_equal(deq.astype(np.float32), _core.dequantize(packed, "int4", m, k))
    lo = np.minimum(np.minimum.reduceat(w, [0, 64, 128, 192], axis=1), 0)
    hi = np.maximum(np.maximum.reduceat(w, [0, 64, 128, 192], axis=1), 0)
    span = (hi - lo).astype(np.float64) / 15
    assert (s >= span).all() and (s <= span * (1 + 2.0**-7) + 1e-45).all()   # rounded up to bf16
    assert (np.abs(deq - w) <= 0.5 * s[:, g] * (1 + 1e-6) + 1e-30).all()    # half a step
    assert (deq[3] == 0).all() and (z[6] == 0).all() and (z[7] == 15).all()
    np.testing.assert_allclose(deq[5, :64], 0.37, rtol=2.0**-7)
    rows = np.ones(m, bool)
    rows[[3, 4, 5]] = False
    rel = np.linalg.norm((deq - w)[rows]) / np.linalg.norm(w[rows])
    assert rel < 0.12  # Gaussian groups: ~9% (uniform error of s/2 on a range of ~5 sigma)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("n", [1, 3, 40, 200])
def test_matmul_bitwise_identical_across_thread_counts(fmt, n):
    m, k = 300, 200   # large enough for both threads to work
    x, w, b = case(n, m, k, seed=9)
    wk, _, _ = stored(w, fmt)
    before = specstream.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 3):
            specstream.set_num_threads(t)
            outs.append(_core.matmul(x, wk, fmt, m, b, epilogue=EPI_GELU))
    finally:
        specstream.set_num_threads(before)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_peak_flops_probe():
    g = _core.peak_gflops(0.05, 2)
    assert 0.1 < g < 1e5
    with pytest.raises(ValueError):
        _core.peak_gflops(0.0, 1)


def test_read_bandwidth_probe():
    gbs = _core.read_bandwidth(64 << 20, 2)
    assert 0.1 < gbs < 1e4
    with pytest.raises(ValueError):
        _core.read_bandwidth(1000, 1)


_PORTABLE_SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, sys.argv[1])
    import specstream
    from specstream import _core
    data = dict(np.load(sys.argv[2]))
    out = {"level": np.array(_core.simd_level()), "variant": np.array(specstream.cpu_kernels()),
           "path": np.array(_core.matmul_path("bf16", 1))}
    for fmt in ("f32", "f16", "bf16", "int8", "int4"):
        for n in (1, 3, 40):
            out[f"{fmt}-{n}"] = _core.matmul(data[f"x{n}"], data[f"w-{fmt}"], fmt, int(data["m"]), data["b"])
    for fmt in ("int8", "int4"):
        m = specstream.load(sys.argv[3], dtype=fmt)
        out[f"logits-{fmt}"] = m.forward(data["ids"])
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


def test_kernel_cap_from_the_environment(tmp_path, model_dirs):
    """SPECSTREAM_KERNELS caps the level: "scalar" runs the portable C
    everywhere (matmul, attention, the model), each cap keeps to kernels of
    its level or below, and all agree within their stated tolerances."""
    m, k = 53, 75
    rng = np.random.default_rng(21)
    w = rng.standard_normal((m, k)).astype(np.float32)
    data = {"m": np.array(m), "b": rng.standard_normal(m).astype(np.float32),
            "ids": token_ids(20, 1000, seed=8)}
    for n in (1, 3, 40):
        data[f"x{n}"] = rng.standard_normal((n, k)).astype(np.float32)
    for fmt in FORMATS:
        data[f"w-{fmt}"] = stored(w, fmt)[0]
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **data)
    have = _core.simd_levels()
    runs = {cap: _run_with_kernels(cap, tmp_path, model_dirs["parallel"], inputs) for cap in have + ["auto"]}
    assert str(runs["scalar"]["variant"]) == "scalar" and str(runs["scalar"]["path"]) == "scalar"
    assert int(runs["auto"]["level"]) == len(have) - 1 == _core.simd_level()
    for i, cap in enumerate(have):
        assert int(runs[cap]["level"]) == i and str(runs[cap]["variant"]) == cap
        assert ka.LEVELS.index(ka.kernel_level(str(runs[cap]["path"]))) <= i
    for cap in have[1:] + ["auto"]:
        for fmt in FORMATS:
            # AMX rounds int4 weights to bf16: up to 2^-8 sum|x w|, ~2% of the largest output here
            tol = 2e-2 if fmt == "int4" else 1e-4
            for n in (1, 3, 40):
                assert rel_err(runs[cap][f"{fmt}-{n}"], runs["scalar"][f"{fmt}-{n}"]) < tol, (cap, fmt, n)
            if fmt in ("int8", "int4"):
                assert rel_err(runs[cap][f"logits-{fmt}"], runs["scalar"][f"logits-{fmt}"]) < tol, (cap, fmt)


# ---------------------------------------------------------- quantized models

#: Largest logit difference from the f32 model, relative to the largest
#: logit (test models: random weights, d_model 32-64). int8: half a step of
#: 1/127 of each row's range per weight, measured 0.007-0.010 on these
#: models; int4: half a step of 1/15 of each group's range (~9% RMS weight
#: error), measured 0.11-0.14.
QUANTIZED_TOLERANCE = {"int8": 3e-2, "int4": 0.25}


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_quantized_model_close_to_f32(model_dirs, fmt):
    ids = token_ids(40, 1000, seed=3)
    ref = specstream.load(model_dirs["parallel"]).forward(ids)
    mq = specstream.load(model_dirs["parallel"], dtype=fmt)
    assert mq.dtype == fmt
    assert specstream.load(model_dirs["parallel"], dtype=fmt.replace("int", "i")).dtype == fmt
    assert rel_err(mq.forward(ids), ref) < QUANTIZED_TOLERANCE[fmt]
    # weights read per token: ~bits/32 of f32 (plus scales and zero points)
    f32_bytes = specstream.load(model_dirs["parallel"]).weight_bytes
    assert mq.weight_bytes < {"int8": 0.4, "int4": 0.3}[fmt] * f32_bytes


@pytest.mark.parametrize("fmt", ["int8", "int4"])
@pytest.mark.parametrize("name", ["parallel", "sequential"])
def test_quantized_decode_equals_prefill(model_dirs, name, fmt):
    """Token-by-token decoding and one prefill of a quantized model agree
    to f32 rounding (bitwise where one kernel serves both, as on AMX)."""
    mq = specstream.load(model_dirs[name], dtype=fmt)
    ids = token_ids(48, mq.vocab_size, seed=4)
    assert rel_err(mq.forward(ids, chunk=1), mq.forward(ids)) < 1e-4


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_quantized_perplexity_cost_is_small(model_dirs, fmt):
    """PPL of quantized weights near f32 on a random model (the measured
    figures for the bundled target are in formats.h / the benchmarks)."""
    from specstream.eval import perplexity

    ids = token_ids(200, 1000, seed=12)
    p32 = perplexity(specstream.load(model_dirs["parallel"]), ids, chunk=64).ppl
    pq = perplexity(specstream.load(model_dirs["parallel"], dtype=fmt), ids, chunk=64).ppl
    assert abs(pq / p32 - 1) < {"int8": 0.01, "int4": 0.05}[fmt]


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_quantized_results_identical_across_thread_counts(model_dirs, fmt):
    mq = specstream.load(model_dirs["parallel"], dtype=fmt)
    ids = token_ids(33, 1000, seed=6)
    before = specstream.get_num_threads()
    try:
        specstream.set_num_threads(1)
        one = mq.forward(ids), mq.forward(ids, chunk=1)
        specstream.set_num_threads(2)
        two = mq.forward(ids), mq.forward(ids, chunk=1)
    finally:
        specstream.set_num_threads(before)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


@pytest.mark.skipif("amx" not in _core.simd_levels(), reason="CPU lacks amx")
def test_amx_int8_is_the_rounded_exact_fixed_point_sum():
    """The AMX int8 kernel's only rounding is the activations' fixed point
    (and the final one): its outputs are bitwise NumPy's exact integer sums
    of the digits' products, scaled."""
    rng = np.random.default_rng(8)
    m, k = 45, 200
    x = (rng.standard_normal((7, k)) * 2.0 ** rng.integers(-8, 8, (7, 1))).astype(np.float32)
    x[2] = 0.0                                    # a zero token
    packed = _core.pack(rng.standard_normal((m, k)).astype(np.float32), "int8")
    q, s = unpack_i8(packed, m, k)
    _, e = np.frexp(np.abs(x).max(axis=1, keepdims=True).astype(np.float64))
    F = np.where(np.abs(x).max(axis=1, keepdims=True) > 0, 20 - e, 0)
    v = np.rint(x.astype(np.float64) * 2.0**F).astype(np.int64)
    want = ((v @ q.T.astype(np.int64)).astype(np.float64) * 2.0**-F * s.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(_core.matmul(x, packed, "int8", m, level="amx"), want)


@level_param
@pytest.mark.parametrize("fmt", FORMATS)
def test_non_finite_activations_give_non_finite_outputs(level, fmt):
    """A NaN or infinite activation makes its token's outputs non-finite
    (never a finite wrong number), and leaves the other tokens alone."""
    x, w, _ = case(3, 20, 70, seed=2)
    wk, w64, _ = stored(w, fmt)
    x[0, 5] = np.nan
    x[2, 9] = np.inf
    out = _core.matmul(x, wk, fmt, 20, level=level)
    assert not np.isfinite(out[0]).any() and not np.isfinite(out[2]).any()
    kl = ka.kernel_level(_core.matmul_path(fmt, 3, level))
    assert within_bound(out[1:2], x[1:2].astype(np.float64) @ w64.T, ka.bound(x[1:2], w64, kl, fmt))
