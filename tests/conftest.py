"""Shared fixtures: small random GPT-NeoX models written as real HF directories
(so every test goes through the same loading path users do), and the
independent NumPy reference."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

import specstream
from specstream.models import create_random

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from reference import RefModel  # noqa: E402

FIXTURES = TESTS / "fixtures"

# Small shapes covering both residual modes, partial and full-ish rotary,
# exact and tanh GELU, and a head_dim that is not a multiple of the SIMD width.
SHAPES = {
    "parallel": dict(n_layer=2, d_model=64, n_head=4, d_ff=256, vocab_size=1000, rotary_pct=0.25),
    "sequential": dict(n_layer=3, d_model=48, n_head=4, d_ff=160, vocab_size=777, rotary_pct=0.5,
                       use_parallel_residual=False, hidden_act="gelu_new"),
    "draft": dict(n_layer=1, d_model=32, n_head=2, d_ff=128, vocab_size=1000, rotary_pct=0.25),
}


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: create_random(dict(shape), root / name, seed=i + 1) for i, (name, shape) in enumerate(SHAPES.items())}


@pytest.fixture(scope="session")
def models(model_dirs: dict[str, Path]) -> dict[str, specstream.Model]:
    return {name: specstream.load(path) for name, path in model_dirs.items()}


@pytest.fixture(scope="session")
def refs(model_dirs: dict[str, Path]) -> dict[str, RefModel]:
    return {name: RefModel.from_dir(path) for name, path in model_dirs.items()}


def rss_bytes() -> int:
    """This process's resident memory now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference relative to the largest magnitude of b."""
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def token_ids(n: int, vocab: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=n).astype(np.int32)
