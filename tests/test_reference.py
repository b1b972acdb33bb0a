"""Tests of the NumPy reference (tests/reference.py) itself.

The reference is checked against Hugging Face logits recorded by
scripts/make_hf_golden.py (no torch needed here), then its bounded-cache
modes are checked for agreement with the full forward where they must agree,
and its eviction schedule against hand-worked examples and invariants.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import Eviction, RefModel, stream_schedule  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODES = ["hf_tiny_parallel", "hf_tiny_sequential"]


@pytest.fixture(scope="module", params=MODES)
def fixture(request: pytest.FixtureRequest) -> tuple[RefModel, dict[str, np.ndarray]]:
    d = FIXTURES / request.param
    golden = dict(np.load(d / "golden_logits.npz"))
    return RefModel.from_dir(d), golden


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference relative to the largest magnitude of b."""
    return float(np.abs(a - b).max() / np.abs(b).max())


# --------------------------------------------------------------- against Hugging Face


def test_fixture_models_differ_in_residual_mode() -> None:
    par = RefModel.from_dir(FIXTURES / "hf_tiny_parallel")
    seq = RefModel.from_dir(FIXTURES / "hf_tiny_sequential")
    assert par.cfg.parallel_residual and not seq.cfg.parallel_residual
    assert par.cfg.rotary_dim == 4 and seq.cfg.rotary_dim == 8
    assert par.vocab_rows == seq.vocab_rows == 1000


def test_forward_matches_hf(fixture: tuple[RefModel, dict[str, np.ndarray]]) -> None:
    model, g = fixture
    logits = model.forward(g["ids"])
    assert logits.shape == g["logits"].shape == (40, 1000)
    assert rel_err(logits, g["logits"]) < 1e-4
    assert (logits.argmax(-1) == g["logits"].argmax(-1)).all()


def test_incremental_decode_matches_hf(fixture: tuple[RefModel, dict[str, np.ndarray]]) -> None:
    """HF's prefill + past_key_values steps equal our token-by-token decode."""
    model, g = fixture
    logits = model.stream_logits(g["ids"], n_sink=4, window=1000)
    assert rel_err(logits, g["logits_incremental"]) < 1e-4
    n = int(g["n_prefill"])
    assert rel_err(logits[n:], g["logits_incremental"][n:]) < 1e-4


def test_golden_logits_are_informative(fixture: tuple[RefModel, dict[str, np.ndarray]]) -> None:
    _, g = fixture
    assert 0.5 < g["logits"].std() < 2.0
    assert len(set(g["logits"].argmax(-1).tolist())) > 5  # predictions depend on the context


# --------------------------------------------------------------- cache modes vs forward


def test_stream_with_large_window_equals_forward(fixture: tuple[RefModel, dict[str, np.ndarray]]) -> None:
    model, g = fixture
    ids = g["ids"]
    full = model.forward(ids)
    for n_sink, window in [(0, 40), (4, 36), (4, 100), (50, 1)]:
        out, events = model.stream_logits(ids, n_sink, window, compress_every=3, return_events=True)
        assert events == []
        np.testing.assert_allclose(out, full, rtol=0, atol=1e-10)


def test_stream_before_first_eviction_equals_forward(fixture: tuple[RefModel, dict[str, np.ndarray]]) -> None:
    model, g = fixture
    ids = g["ids"][:24]
    full = model.forward(ids)
    out, events = model.stream_logits(ids, n_sink=2, window=8, return_events=True)
    first = events[0].step
    assert first == 10
    np.testing.assert_allclose(out[:first], full[:first], rtol=0, atol=1e-10)
    assert rel_err(out[first:], full[first:]) > 1e-3  # eviction changes what the model sees


def test_stream_positions_are_cache_slots(fixture: tuple[RefModel, dict[str, np.ndarray]]) -> None:
    """With window 1 and no sinks every step sees only itself at position 0."""
    model, g = fixture
    ids = g["ids"][:6]
    out = model.stream_logits(ids, n_sink=0, window=1)
    for t, tok in enumerate(ids):
        np.testing.assert_allclose(out[t], model.forward([tok])[0], rtol=0, atol=1e-10)


def test_recompute_with_large_window_equals_forward(fixture: tuple[RefModel, dict[str, np.ndarray]]) -> None:
    model, g = fixture
    ids = g["ids"][:16]
    full = model.forward(ids)
    np.testing.assert_allclose(model.recompute_logits(ids, window=16), full, rtol=0, atol=1e-10)
    np.testing.assert_allclose(model.recompute_logits(ids, window=99), full, rtol=0, atol=1e-10)


def test_recompute_small_window(fixture: tuple[RefModel, dict[str, np.ndarray]]) -> None:
    model, g = fixture
    ids = g["ids"][:12]
    out = model.recompute_logits(ids, window=4)
    np.testing.assert_allclose(out[:4], model.forward(ids[:4]), rtol=0, atol=1e-10)
    np.testing.assert_allclose(out[9], model.forward(ids[6:10])[-1], rtol=0, atol=1e-10)
    with pytest.raises(ValueError):
        model.recompute_logits(ids, window=0)


def test_bad_token_ids_raise() -> None:
    model = RefModel.from_dir(FIXTURES / "hf_tiny_parallel")
    with pytest.raises(ValueError, match="out of range"):
        model.forward([1, 1000])
    with pytest.raises(ValueError, match="out of range"):
        model.stream_logits([-1], 0, 4)


# --------------------------------------------------------------- eviction schedule


def ev(*triples: tuple[int, int, int]) -> list[Eviction]:
    return [Eviction(*t) for t in triples]


SCHEDULES = [
    # (n, n_sink, window, R, max_drop, overlap) -> events, worked by hand from the rules
    ((10, 2, 4, 1, 0, 0), ev((6, 1, 6), (7, 1, 6), (8, 1, 6), (9, 1, 6))),
    ((14, 2, 4, 3, 0, 0), ev((8, 3, 6), (11, 3, 6))),
    ((14, 2, 4, 3, 2, 0), ev((8, 2, 7), (9, 2, 6), (12, 2, 7), (13, 2, 6))),
    ((11, 2, 4, 3, 1, 0), ev((8, 1, 8), (9, 1, 8), (10, 1, 8))),  # drains no faster than it grows
    ((14, 2, 4, 3, 0, 1), ev((8, 2, 7), (10, 2, 7), (12, 2, 7))),
    ((6, 0, 3, 1, 0, 0), ev((3, 1, 3), (4, 1, 3), (5, 1, 3))),  # window policy: no sinks
    ((12, 0, 3, 4, 0, 0), ev((6, 4, 3), (10, 4, 3))),
    ((3, 4, 2, 1, 0, 0), []),  # the text never leaves the sinks
]


@pytest.mark.parametrize("args,expected", SCHEDULES, ids=[str(a) for a, _ in SCHEDULES])
def test_schedule_by_hand(args: tuple[int, ...], expected: list[Eviction]) -> None:
    n, n_sink, window, r, max_drop, overlap = args
    visible, events = stream_schedule(n, n_sink, window, r, max_drop, overlap)
    assert events == expected
    for e in events:
        assert len(visible[e.step]) == e.kept


def test_schedule_visible_sets() -> None:
    visible, _ = stream_schedule(10, 2, 4)
    assert visible[9].tolist() == [0, 1, 6, 7, 8, 9]
    assert visible[1].tolist() == [0, 1]
    visible, _ = stream_schedule(14, 2, 4, compress_every=3)
    assert visible[10].tolist() == [0, 1, 5, 6, 7, 8, 9, 10]
    assert visible[11].tolist() == [0, 1, 8, 9, 10, 11]


def test_schedule_rejects_bad_parameters() -> None:
    for bad in [(5, -1, 4, 1, 0, 0), (5, 0, 0, 1, 0, 0), (5, 0, 4, 0, 0, 0), (5, 0, 4, 1, -1, 0),
                (5, 0, 4, 1, 0, -1)]:
        with pytest.raises(ValueError):
            stream_schedule(*bad)


@settings(max_examples=200, deadline=None)
@given(
    n=st_.integers(0, 60),
    n_sink=st_.integers(0, 5),
    window=st_.integers(1, 10),
    r=st_.integers(1, 6),
    max_drop=st_.integers(0, 4),
    overlap=st_.integers(0, 4),
)
def test_schedule_invariants(n: int, n_sink: int, window: int, r: int, max_drop: int, overlap: int) -> None:
    visible, events = stream_schedule(n, n_sink, window, r, max_drop, overlap)
    budget = n_sink + window
    by_step = {e.step: e for e in events}
    assert len(by_step) == len(events)  # at most one event per step
    first = n_sink
    for t, vis in enumerate(visible):
        vis = vis.tolist()
        sinks = list(range(min(t + 1, n_sink)))
        assert vis[: len(sinks)] == sinks  # sinks never leave
        run = vis[len(sinks):]
        assert run == list(range(run[0], t + 1)) if run else t < n_sink  # contiguous, newest last
        if run:
            assert run[0] >= first  # evicted tokens never come back
            first = run[0]
        if t in by_step:
            e = by_step[t]
            assert e.dropped >= 1 and e.kept == len(vis)
            assert max_drop == 0 or e.dropped <= max_drop
        if max_drop == 0:
            assert len(vis) <= max(budget + r - 1, budget + overlap)
            if t in by_step:
                assert len(vis) == budget + overlap
    assert sum(e.dropped for e in events) == max(first - n_sink, 0) or n <= n_sink
