"""CUDA backend (csrc/kernels/cuda): GPU logits against the CPU backend, every
cache policy after evictions, and greedy speculative identity on the GPU.

Tests marked ``cuda`` need a GPU and skip cleanly without one; on a GPU
machine ``pytest -m cuda`` runs them all. The unmarked tests at the end run
everywhere: the module imports without a GPU, a CUDA build reports itself
(and is what a machine with nvcc builds), and ``load(..., device="cuda")``
fails with a clear error where no GPU can run it.

Tolerances, as rel_err = max |gpu - ref| / max |ref| of the logits:
  * against the CPU with f32 weights (the reference): f32 1e-4, f16 2e-2,
    bf16 6e-2 (the rounding of the weights, as in test_engine.py; prefill
    chunks of more than 8 tokens also round activations to the weight dtype
    for the tensor-core GEMM);
  * against the CPU with the same f16/bf16 weights, batches of <= 8 tokens:
    1e-4 (the GPU's GEMV keeps f32 activations and f32 accumulation, like the
    CPU; only the summation order differs).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import specstream
from specstream import CacheConfig, SpeculativeConfig, _core
from specstream.models import create_random
from conftest import rel_err, token_ids

HAVE_GPU = _core.cuda_available() > 0


def gpu(test):
    """Marks a test `cuda` and skips it without a usable GPU."""
    return pytest.mark.cuda(pytest.mark.skipif(not HAVE_GPU, reason="no CUDA GPU (or a build without CUDA)")(test))


TOL_VS_F32 = {"f32": 1e-4, "f16": 2e-2, "bf16": 6e-2}
TOL_SAME_DTYPE = 1e-4
DTYPES = ["f32", "f16", "bf16"]

# Shapes beyond conftest's: Pythia-like head dims (64 via "parallel", 80 as in
# 2.8b, 256 as in 1b), a d_model that is no multiple of 8 (scalar GEMV path),
# and wide matrices (fc1 and unembedding with thousands of rows: the GEMV
# variant with two weight rows per warp).
EXTRA_SHAPES = {
    "hd80": dict(n_layer=2, d_model=160, n_head=2, d_ff=640, vocab_size=600, rotary_pct=0.25),
    "hd256": dict(n_layer=1, d_model=512, n_head=2, d_ff=1024, vocab_size=500, rotary_pct=0.25),
    "odd": dict(n_layer=2, d_model=30, n_head=3, d_ff=90, vocab_size=301, rotary_pct=0.4,
                use_parallel_residual=False, hidden_act="gelu_new"),
    "wide": dict(n_layer=1, d_model=64, n_head=4, d_ff=4608, vocab_size=5000, rotary_pct=0.25),
}


@pytest.fixture(scope="module")
def all_dirs(model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda_models")
    extra = {name: create_random(dict(shape), root / name, seed=100 + i) for i, (name, shape) in enumerate(EXTRA_SHAPES.items())}
    return {**model_dirs, **extra}


@pytest.fixture(scope="module")
def cpu(all_dirs):
    """CPU models, per (name, dtype)."""
    cache = {}

    def get(name, dtype="f32"):
        if (name, dtype) not in cache:
            cache[name, dtype] = specstream.load(all_dirs[name], dtype=dtype)
        return cache[name, dtype]

    return get


@pytest.fixture(scope="module")
def gpu_model(all_dirs):
    """GPU models, per (name, dtype)."""
    cache = {}

    def get(name, dtype="f32"):
        if (name, dtype) not in cache:
            cache[name, dtype] = specstream.load(all_dirs[name], dtype=dtype, device="cuda")
        return cache[name, dtype]

    return get


def vocab_of(model):
    return model.config.vocab_size


# ------------------------------------------------------------------ logits


@gpu
@pytest.mark.parametrize("name", ["parallel", "sequential", "hd80", "hd256", "odd", "wide"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", [1, 6, 64], ids=lambda c: f"chunk{c}")
def test_gpu_logits_match_cpu_f32(cpu, gpu_model, name, dtype, chunk):
    """Prefill (chunks of 64: cuBLAS), verification-sized chunks (6: GEMV with
    8 rows) and decode (1: GEMV with 1 row) against the f32 CPU reference."""
    ref_model = cpu(name)
    ids = token_ids(40, vocab_of(ref_model), seed=3)
    want = ref_model.forward(ids)
    got = gpu_model(name, dtype).forward(ids, chunk=chunk)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.isfinite(got).all()
    assert rel_err(got, want) < TOL_VS_F32[dtype], f"{name} {dtype} chunk={chunk}"


@gpu
@pytest.mark.parametrize("name", ["parallel", "sequential", "hd80", "odd", "wide"])
@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_gpu_gemv_is_f32_math_on_the_same_weights(cpu, gpu_model, name, dtype, chunk):
    """Batches of <= 8 tokens: the GPU keeps activations in f32, so it agrees
    with the CPU running the same reduced-precision weights to f32 rounding."""
    ref_model = cpu(name, dtype)
    ids = token_ids(33, vocab_of(ref_model), seed=4)
    want = ref_model.forward(ids, chunk=chunk)
    got = gpu_model(name, dtype).forward(ids, chunk=chunk)
    assert rel_err(got, want) < TOL_SAME_DTYPE, f"{name} {dtype} chunk={chunk}"


@gpu
@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_long_full_cache_uses_split_attention(cpu, gpu_model, chunk):
    """Over 128 keys a token's attention is split over the KV length (several
    splits, merged by a second kernel): up to 5 splits here."""
    ids = token_ids(600, 1000, seed=5)
    want = cpu("parallel").forward(ids, cache=CacheConfig(policy="full"), chunk=50)
    got = gpu_model("parallel").forward(ids, cache=CacheConfig(policy="full"), chunk=chunk)
    assert rel_err(got, want) < TOL_VS_F32["f32"]


@gpu
def test_batch_size_does_not_change_a_tokens_logits(gpu_model):
    """Bit-identical logits for a token decoded alone or among up to 8 (the
    property greedy speculative decoding needs), over split attention too."""
    m = gpu_model("parallel", "f16")
    ids = token_ids(300, 1000, seed=6)
    one = m.forward(ids, chunk=1)
    for chunk in (2, 5, 8):
        np.testing.assert_array_equal(m.forward(ids, chunk=chunk), one, err_msg=f"chunk={chunk}")


# ------------------------------------------------------------ cache policies

POLICIES = {
    "streaming-R4": CacheConfig(policy="streaming", n_sink=2, window=8, compress_every=4),
    "streaming-R1": CacheConfig(policy="streaming", n_sink=4, window=8),
    "streaming-drop": CacheConfig(policy="streaming", n_sink=2, window=6, compress_every=8, max_drop=3),
    "streaming-overlap": CacheConfig(policy="streaming", n_sink=3, window=7, compress_every=6, overlap=2),
    "streaming-entropy": CacheConfig(policy="streaming", n_sink=2, window=8, compress_every=6, entropy_threshold=6.0),
    "window": CacheConfig(policy="window", window=7, compress_every=3),
    "full": CacheConfig(policy="full"),
    "recompute": CacheConfig(policy="recompute", window=6),
    "recompute-long": CacheConfig(policy="recompute", window=200),
}


@gpu
@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("chunk", [1, 5])
@pytest.mark.parametrize("name", ["parallel", "sequential"])
def test_cache_policies_after_evictions_match_cpu(cpu, gpu_model, policy, chunk, name):
    cache = POLICIES[policy]
    ids = token_ids(70, vocab_of(cpu(name)), seed=11)
    want = cpu(name).forward(ids, cache=cache, chunk=chunk)
    got = gpu_model(name).forward(ids, cache=cache, chunk=chunk)
    assert rel_err(got, want) < TOL_VS_F32["f32"], f"{policy} chunk={chunk}"


@gpu
@pytest.mark.parametrize("policy", ["full", "streaming-R4", "window", "recompute"])
def test_cuda_graph_decode_is_bit_identical_to_eager(gpu_model, monkeypatch, policy):
    """SPECSTREAM_CUDA_GRAPHS=1 replays captured one-token steps (a graph per
    split count: 300 tokens cross two split boundaries)."""
    m = gpu_model("parallel", "f16")
    ids = token_ids(300, 1000, seed=9)
    monkeypatch.delenv("SPECSTREAM_CUDA_GRAPHS", raising=False)
    eager = m.forward(ids, cache=POLICIES[policy], chunk=1)
    monkeypatch.setenv("SPECSTREAM_CUDA_GRAPHS", "1")
    np.testing.assert_array_equal(m.forward(ids, cache=POLICIES[policy], chunk=1), eager)
    draft = gpu_model("draft", "f16")
    prompt = token_ids(9, 1000, seed=10)
    want = m.generate(prompt, max_new_tokens=30).tokens
    got = m.generate(prompt, max_new_tokens=30, draft=draft, speculative=SpeculativeConfig(k=4))
    np.testing.assert_array_equal(got.tokens, want)


@gpu
def test_perplexity_on_gpu_matches_cpu(cpu, gpu_model):
    ids = token_ids(120, 1000, seed=12)
    cache = CacheConfig(policy="streaming", n_sink=2, window=16, compress_every=4)
    want = specstream.eval.perplexity(cpu("parallel"), ids, cache=cache)
    got = specstream.eval.perplexity(gpu_model("parallel"), ids, cache=cache)
    np.testing.assert_allclose(got.nll, want.nll, rtol=0, atol=1e-3)


@gpu
def test_score_policies_are_refused_on_the_gpu(gpu_model):
    with pytest.raises(NotImplementedError, match="CPU"):
        gpu_model("parallel").forward(token_ids(20, 1000), cache=CacheConfig(policy="h2o", n_sink=2, window=8, heavy=4))


# ---------------------------------------------------------------- generation

GEN_CACHES = [
    CacheConfig(),
    CacheConfig(policy="streaming", n_sink=2, window=10),
    CacheConfig(policy="streaming", n_sink=4, window=12, compress_every=6, max_drop=2, overlap=1),
    CacheConfig(policy="window", window=9, compress_every=3),
    CacheConfig(policy="recompute", window=10),
]


@gpu
@pytest.mark.parametrize("cache", GEN_CACHES, ids=lambda c: f"{c.policy}-R{c.compress_every}")
@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_greedy_speculative_is_token_identical_on_gpu(gpu_model, cache, dtype):
    target, draft = gpu_model("parallel", dtype), gpu_model("draft", dtype)
    for seed in range(3):
        prompt = token_ids(3 + 7 * seed, 1000, seed=seed)
        want = target.generate(prompt, max_new_tokens=40, cache=cache).tokens
        assert len(want) == 40
        for k in (1, 3, 5, 7):
            got = target.generate(prompt, max_new_tokens=40, cache=cache, draft=draft,
                                  speculative=SpeculativeConfig(k=k))
            np.testing.assert_array_equal(got.tokens, want, err_msg=f"k={k} seed={seed}")


@gpu
def test_gpu_target_with_cpu_draft(cpu, gpu_model):
    target = gpu_model("parallel")
    prompt = token_ids(12, 1000, seed=21)
    want = target.generate(prompt, max_new_tokens=30).tokens
    got = target.generate(prompt, max_new_tokens=30, draft=cpu("draft"), speculative=SpeculativeConfig(k=4))
    np.testing.assert_array_equal(got.tokens, want)


@gpu
def test_forced_acceptance_and_sampling_run_on_gpu(gpu_model):
    target, draft = gpu_model("parallel", "f16"), gpu_model("draft", "f16")
    r = target.generate([1, 2, 3], max_new_tokens=80, draft=draft, seed=1,
                        speculative=SpeculativeConfig(k=5, forced_acceptance=0.75))
    assert len(r.tokens) == 80 and 0.4 < r.stats.acceptance_rate < 1.0
    a = target.generate([5, 6], max_new_tokens=30, temperature=0.8, top_k=50, seed=7, draft=draft)
    b = target.generate([5, 6], max_new_tokens=30, temperature=0.8, top_k=50, seed=7, draft=draft)
    np.testing.assert_array_equal(a.tokens, b.tokens)


@gpu
def test_model_repr_and_moving_back_to_cpu(all_dirs, cpu):
    m = specstream.load(all_dirs["parallel"], device="cuda")
    assert "device=cuda" in repr(m) and m._core.device == 1
    ids = token_ids(20, 1000, seed=8)
    on_gpu = m.forward(ids)
    m._core.to_device(0)
    assert m._core.device == 0
    np.testing.assert_allclose(m.forward(ids), cpu("parallel").forward(ids), rtol=0, atol=1e-6)
    assert rel_err(on_gpu, cpu("parallel").forward(ids)) < TOL_VS_F32["f32"]


@gpu
def test_device_helpers():
    assert isinstance(_core.cuda_device_name(0), str) and _core.cuda_device_name(0)
    assert _core.cuda_copy_bandwidth(64 << 20, 3) > 10.0  # GB/s; any GPU copies faster


# ----------------------------------------------------- everywhere (no GPU)


def _nvcc_present() -> bool:
    if shutil.which("nvcc") or Path("/usr/local/cuda/bin/nvcc").exists():
        return True
    return any(os.environ.get(v) and (Path(os.environ[v]) / "bin" / "nvcc").exists() for v in ("CUDA_HOME", "CUDA_PATH"))


def test_module_imports_and_reports_its_build():
    info = _core.build_info()
    assert isinstance(info["cuda"], bool)
    assert isinstance(_core.cuda_available(), int) and _core.cuda_available() >= 0
    if not info["cuda"]:
        assert _core.cuda_available() == 0


@pytest.mark.skipif(not _nvcc_present(), reason="no nvcc: a CPU-only build is expected")
@pytest.mark.skipif(os.environ.get("SPECSTREAM_CUDA", "").lower() in ("0", "false", "no", "off"),
                    reason="SPECSTREAM_CUDA=0: CUDA explicitly off")
def test_cuda_objects_are_compiled_and_linked_when_nvcc_is_present():
    info = _core.build_info()
    if info.get("cuda_archs") == "simt-emulator":
        pytest.skip("the CPU emulator build of the CUDA backend links no CUDA libraries")
    assert info["cuda"] is True, "nvcc is present but the extension was built without the CUDA backend"
    assert info["cuda_runtime"] >= 11000 and info["cublas"] > 0
    assert info["cuda_runtime_loaded"] > 0, "libcudart is linked but could not be asked for its version"
    assert "800" in info["cuda_archs"] and "900" in info["cuda_archs"]
    if sys.platform.startswith("linux"):
        maps = Path("/proc/self/maps").read_text()
        assert "libcublas" in maps and "libcudart" in maps


@pytest.mark.skipif(HAVE_GPU, reason="a GPU is present")
def test_cuda_without_gpu_is_a_clear_error(model_dirs):
    with pytest.raises(RuntimeError, match="device='cuda'.*(no CUDA GPU|no CUDA backend)"):
        specstream.load(model_dirs["draft"], device="cuda")
    m = specstream.load(model_dirs["draft"])
    with pytest.raises(NotImplementedError):
        m._core.to_device(1)
    assert m._core.device == 0 and "device=cpu" in repr(m)
    m.forward([1, 2, 3])  # still usable on the CPU
    with pytest.raises((RuntimeError, NotImplementedError)):
        _core.cuda_copy_bandwidth(1 << 20, 1)


# a few minutes of emulation: decode/verify/prefill chunks per dtype, a
# streaming cache after evictions, and graph replay
EMU_QUICK = ("(gpu_logits_match_cpu_f32 and parallel and not chunk64) or (cache_policies and streaming-R4 and parallel) "
             "or (cuda_graph_decode and window)")


@pytest.mark.skipif(os.environ.get("SPECSTREAM_CUDA_EMU_TESTS") != "1",
                    reason="opt-in (SPECSTREAM_CUDA_EMU_TESTS=1): builds the CUDA backend on the CPU SIMT emulator")
def test_cuda_backend_on_the_simt_emulator(tmp_path):
    """The CUDA kernels and host driver, compiled for csrc/kernels/cuda/emu's
    fiber-per-thread emulator, against the CPU backend (a few minutes)."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "csrc" / "kernels" / "cuda" / "emu" / "build_emu.py"
    res = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--test", "-q", "-k", EMU_QUICK])
    assert res.returncode == 0


def test_bad_device_name_is_a_value_error(model_dirs):
    with pytest.raises(ValueError, match="device"):
        specstream.load(model_dirs["draft"], device="tpu")
    with pytest.raises(ValueError, match="device"):
        specstream.load(model_dirs["draft"])._core.to_device(2)
