"""specstream.plots: Pareto fronts, recommendations and figures from sweep
results."""

from __future__ import annotations

from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from specstream import experiments as ex  # noqa: E402
from specstream import plots  # noqa: E402

from exp_support import env, pinned_code_version, run_kwargs  # noqa: E402,F401


def test_pareto_front_and_recommendations() -> None:
    df = pd.DataFrame({
        "kind": ["baseline"] + ["config"] * 6,
        "tokens": [512] * 7,
        "cache.window": [0, 16, 32, 64, 128, 48, 256],
        "tpot_ms": [9.0, 1.0, 2.0, 3.0, 4.0, 3.5, 8.0],
        "ppl_delta": [0.0, 0.20, 0.08, 0.04, 0.01, 0.05, 0.001],
        "kv_bytes": [900, 10, 20, 40, 80, 30, 160],
    })
    rows = df[df["kind"] == "config"]
    assert list(plots.pareto_front(rows, "tpot_ms", "ppl_delta")) == [True, True, True, True, False, True]
    rec = plots.recommend(df, x="tpot_ms").set_index("regime")
    assert rec.loc["short text", "cache.window"] == 128  # fastest within 3%
    assert rec.loc["extreme memory", "cache.window"] == 32  # smallest KV within 10%
    assert rec.loc["long text", "ppl_delta"] <= 0.05
    assert rec["meets_tolerance"].all()
    # derived from the data: a faster config within tolerance changes the pick
    df.loc[len(df)] = {"kind": "config", "tokens": 512, "cache.window": 24, "tpot_ms": 1.5, "ppl_delta": 0.02,
                       "kv_bytes": 15}
    rec2 = plots.recommend(df, x="tpot_ms").set_index("regime")
    assert rec2.loc["short text", "cache.window"] == 24
    assert rec2.loc["extreme memory", "cache.window"] == 24
    # nothing within tolerance: best quality, flagged
    rec3 = plots.recommend(df, x="tpot_ms", short_tol=-1).set_index("regime")
    assert not rec3.loc["short text", "meets_tolerance"]


def test_pareto_plot_file_is_written(env: dict, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    ex.run_sweep({"cache.policy": ["streaming"], "cache.window": [16, 32], "cache.compress_every": [1, 8]},
                 out=out, progress=False, **run_kwargs(env, draft=None))
    df = ex.load_results(out)
    plots.plot_pareto(df, path=tmp_path / "figs" / "pareto.png")
    assert (tmp_path / "figs" / "pareto.png").stat().st_size > 5000
    assert "acceptance_rate" not in df.columns  # nothing speculative was measured
    plots.plot_nll(next((out / "nll").glob("*.json")), tmp_path / "figs" / "nll.png")
    assert (tmp_path / "figs" / "nll.png").stat().st_size > 5000
    written = plots.plot_all(df, tmp_path / "all", nll_dir=out / "nll", max_nll=1)
    assert {p.name for p in written} >= {"pareto.png", "pareto_memory.png", "nll_baseline.png"}
