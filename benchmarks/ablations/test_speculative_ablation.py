"""Speculative-decoding ablations: k, adaptive k, and prompt lookup, each
compared with target-only decoding of the same prompt.

Greedy speculative decoding must reproduce the target's tokens exactly; the
rows record acceptance, mean accepted length and speedup for the plots.
"""

from __future__ import annotations

import math

import pytest

from specstream.experiments import Grid

pytestmark = pytest.mark.ablation

GEN = {"generation.max_new_tokens": 64, "generation.prompt_tokens": 64}

MATRIX = Grid([
    {"speculative.k": [1, 2, 3, 4, 6, 8]},
    {"speculative.adaptive": [True], "speculative.k_max": [8]},
    {"speculative.method": ["lookup"], "speculative.k": [4]},
], base=GEN).points()

TARGET_ONLY = Grid({"generation.speculate": [False]}, base=GEN).points()[0]


@pytest.mark.parametrize("point", MATRIX, ids=str)
def test_speculative(point, ablation) -> None:
    row = ablation.run(point, measure=("generate",))
    assert row["speculating"]
    assert 0.0 <= row["acceptance_rate"] <= 1.0
    assert row["mean_accepted_length"] >= 1.0
    assert math.isfinite(row["speedup"]) and row["speedup"] > 0
    reference = ablation.run(TARGET_ONLY, measure=("generate",))
    assert row["tokens_sha"] == reference["tokens_sha"], "greedy speculative output differs from the target's"
