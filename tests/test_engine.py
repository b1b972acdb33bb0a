"""The C forward pass against independent references: the NumPy GPT-NeoX in
tests/reference.py (float64) and golden logits recorded once from HF
transformers (tests/fixtures, made by scripts/make_hf_golden.py)."""

from __future__ import annotations

import numpy as np
import pytest

import specstream
from conftest import FIXTURES, rel_err, token_ids

TOL_F32 = 1e-4


@pytest.mark.parametrize("name", ["parallel", "sequential"])
def test_prefill_matches_reference(models, refs, name):
    m, r = models[name], refs[name]
    ids = token_ids(50, m.vocab_size, seed=1)
    assert rel_err(m.forward(ids), r.forward(ids)) < TOL_F32


@pytest.mark.parametrize("name", ["parallel", "sequential"])
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_decode_steps_match_reference(models, refs, name, chunk):
    """A 16-token prompt then 64 decode steps (chunk=1 is token-by-token
    decoding against the KV cache; larger chunks mix prefill and decode)."""
    m, r = models[name], refs[name]
    ids = token_ids(80, m.vocab_size, seed=2)
    assert rel_err(m.forward(ids, chunk=chunk), r.forward(ids)) < TOL_F32


@pytest.mark.parametrize("fixture", ["hf_tiny_parallel", "hf_tiny_sequential"])
def test_matches_hf_transformers_golden(fixture):
    golden = np.load(FIXTURES / fixture / "golden_logits.npz")
    m = specstream.load(FIXTURES / fixture)
    ids = golden["ids"]
    assert rel_err(m.forward(ids), golden["logits"]) < TOL_F32
    # HF's incremental decode (prefill, then past_key_values) = our token-by-token path
    assert rel_err(m.forward(ids, chunk=1), golden["logits_incremental"]) < TOL_F32


@pytest.mark.parametrize("dtype,tol", [("f16", 2e-2), ("bf16", 6e-2)])
def test_reduced_precision_weights_close_to_f32(model_dirs, dtype, tol):
    """Weights stored as f16/bf16 (converted at load) stay close to f32; the
    tolerance is the rounding of the weights, not of the arithmetic (f32)."""
    ids = token_ids(40, 1000, seed=3)
    ref = specstream.load(model_dirs["parallel"]).forward(ids)
    low = specstream.load(model_dirs["parallel"], dtype=dtype)
    assert low.dtype == dtype
    assert rel_err(low.forward(ids), ref) < tol


def test_reduced_precision_matches_reference_of_rounded_weights(tmp_path, refs):
    """A checkpoint stored in bf16 loaded as bf16 (zero copy) computes exactly
    the f32 function of the rounded weights."""
    from specstream.models import create_random
    from reference import RefModel

    d = create_random(dict(n_layer=2, d_model=64, n_head=4, d_ff=256, vocab_size=500), tmp_path / "b", seed=5,
                      dtype="bf16")
    ids = token_ids(30, 500, seed=4)
    m = specstream.load(d, dtype="bf16")
    assert rel_err(m.forward(ids), RefModel.from_dir(d).forward(ids)) < TOL_F32


def test_sharded_checkpoint_loads_identically(tmp_path):
    from specstream.models import create_random

    shape = dict(n_layer=2, d_model=64, n_head=4, d_ff=256, vocab_size=1000)
    single = create_random(shape, tmp_path / "single", seed=9)
    sharded = create_random(shape, tmp_path / "sharded", seed=9, max_shard_bytes=200_000)
    assert (sharded / "model.safetensors.index.json").exists()
    ids = token_ids(20, 1000, seed=5)
    np.testing.assert_array_equal(specstream.load(single).forward(ids), specstream.load(sharded).forward(ids))


def test_results_identical_across_thread_counts(models):
    ids = token_ids(33, 1000, seed=6)
    before = specstream.get_num_threads()
    try:
        specstream.set_num_threads(1)
        one = models["parallel"].forward(ids)
        specstream.set_num_threads(2)
        two = models["parallel"].forward(ids)
    finally:
        specstream.set_num_threads(before)
    # Rows are split across threads, never a reduction: bitwise equal.
    np.testing.assert_array_equal(one, two)


def test_vocab_padding_rows_are_logits_too(tmp_path):
    """Pythia pads 50277 tokenizer entries to 50304 rows: logits cover every row."""
    from specstream.models import create_random

    d = create_random(dict(n_layer=1, d_model=32, n_head=2, d_ff=64, vocab_size=50304), tmp_path / "v", seed=1)
    m = specstream.load(d)
    out = m.forward([0, 50276, 50303])
    assert out.shape == (3, 50304) and np.isfinite(out).all()


def test_cpu_kernel_variant_reported():
    assert specstream.cpu_kernels() in ("scalar", "avx2", "avx512", "amx")
