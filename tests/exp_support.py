"""Shared pieces of the experiment-layer tests (tests/test_exp_*.py): tiny
random models and random token ids keep every sweep fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from specstream.models import create_random

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 384
CODE_VERSION = "test-experiments"

# 2 policies x 2 windows x 2 R x 2 max_drop x 2 k = 32 configurations over
# cache and speculative switches
GRID = {
    "cache.policy": ["streaming", "window"],
    "cache.window": [16, 24],
    "cache.compress_every": [1, 8],
    "cache.max_drop": [None, 4],
    "speculative.k": [2, 3],
    "generation.prompt_tokens": [12],
    "generation.max_new_tokens": [10],
}

TARGET_SHAPE = dict(n_layer=2, d_model=32, n_head=2, d_ff=64, vocab_size=VOCAB)
DRAFT_SHAPE = dict(n_layer=1, d_model=16, n_head=2, d_ff=32, vocab_size=VOCAB)


@pytest.fixture(autouse=True)
def pinned_code_version(monkeypatch: pytest.MonkeyPatch) -> None:
    # other commits landing while the suite runs must not change row keys
    monkeypatch.setenv("SPECSTREAM_CODE_VERSION", CODE_VERSION)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny target and draft and 200 random token ids (ids.npy)."""
    root = tmp_path_factory.mktemp("exp")
    target = create_random(TARGET_SHAPE, root / "target", seed=3)
    draft = create_random(DRAFT_SHAPE, root / "draft", seed=4)
    ids = np.random.default_rng(0).integers(0, VOCAB, size=200).astype(np.int32)
    np.save(root / "ids.npy", ids)
    return {"root": root, "target": str(target), "draft": str(draft), "data": str(root / "ids.npy")}


def run_kwargs(env: dict, **kw) -> dict:
    """RunSpec settings for the tiny pair: 64 tokens, one repeat."""
    d = dict(target=env["target"], draft=env["draft"], data=env["data"], tokens=64, repeats=1)
    d.update(kw)
    return d


def write_sweep_toml(env: dict, path: Path, grid: dict = GRID, **run) -> Path:
    """A sweep file with a [run] table (``run_kwargs``) and a [grid] table."""
    def val(v):
        if v is None:
            return '"none"'
        return json.dumps(v)

    lines = ["[run]"]
    for k, v in run_kwargs(env, **run).items():
        lines.append(f"{k} = {val(v)}")
    lines.append("[grid]")
    for k, vs in grid.items():
        lines.append(f'"{k}" = [{", ".join(val(v) for v in vs)}]')
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """``python -m specstream ARGS`` in a child process (one thread, pinned code version)."""
    e = dict(os.environ, SPECSTREAM_CODE_VERSION=CODE_VERSION, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "specstream", *args], capture_output=True, text=True, env=e,
                          cwd=kw.get("cwd"), timeout=kw.get("timeout", 120))


def jsonl_rows(path: Path) -> list[dict]:
    """Every line of a JSONL file, parsed."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
