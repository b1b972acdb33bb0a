"""Streaming-cache ablations (the protocol's Phase B): lazy eviction with and
without a cap on keys dropped per step, overlap, and refresh tokens.

Each matrix is a grid; each configuration is one pytest case whose row lands
in the ablation store. Assertions check what must hold whatever the numbers.
"""

from __future__ import annotations

import math

import pytest

from specstream.experiments import Grid

pytestmark = pytest.mark.ablation

BASE = {"cache.policy": "streaming", "cache.n_sink": 4, "cache.window": 128}

LAZY = Grid({"cache.compress_every": [1, 16, 32, 64], "cache.max_drop": [None, 16]}, base=BASE).points()
OVERLAP = Grid({"cache.compress_every": [32], "cache.overlap": [0, 8, 16]}, base=BASE).points()
REFRESH = Grid([
    {"cache.compress_every": [64], "cache.refresh_budget": [0]},
    {"cache.compress_every": [64], "cache.refresh_budget": [8, 16],
     "cache.refresh": ["uniform", "structural", "entropy"]},
], base=BASE).points()


def _check(row: dict) -> None:
    assert math.isfinite(row["ppl"]) and row["ppl"] > 1
    assert math.isfinite(row["ppl_delta"])
    assert row["kv_bytes"] > 0 and row["tpot_ms"] > 0
    assert row["visible_min"] >= 1


@pytest.mark.parametrize("point", LAZY, ids=str)
def test_lazy_eviction(point, ablation) -> None:
    row = ablation.run(point)
    _check(row)
    budget = point.cache.budget
    if row["tokens"] > budget + point.cache.compress_every:
        # R = 1 keeps exactly the budget; lazy eviction lets the cache run ahead
        assert row["visible_max"] >= budget
        if point.cache.compress_every == 1 and point.cache.max_drop is None:
            assert row["visible_max"] == budget
        assert row["evictions"] >= 1


@pytest.mark.parametrize("point", OVERLAP, ids=str)
def test_overlap(point, ablation) -> None:
    row = ablation.run(point)
    _check(row)
    assert row["visible_min"] <= point.cache.budget + point.cache.overlap or row["tokens"] <= point.cache.budget


@pytest.mark.parametrize("point", REFRESH, ids=str)
def test_refresh_tokens(point, ablation) -> None:
    row = ablation.run(point)
    _check(row)
    assert row["visible_max"] <= point.cache.budget + point.cache.compress_every
