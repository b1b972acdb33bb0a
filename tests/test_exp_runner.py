"""specstream.experiments.runner: sweeps from Python, resuming without
recomputing (also after a kill), shards and their merge."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from specstream import experiments as ex  # noqa: E402

from exp_support import (CODE_VERSION, GRID, cli, env, jsonl_rows, pinned_code_version,  # noqa: E402,F401
                         run_kwargs, write_sweep_toml)


def test_sweep_from_python_resumes_without_recomputing(env: dict, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    df = ex.run_sweep(GRID, out=out, progress=False, **run_kwargs(env))
    configs = df[df["kind"] == "config"]
    assert len(configs) == 32 and (df["kind"] == "baseline").sum() == 1
    assert df["key"].is_unique
    base = df[df["kind"] == "baseline"].iloc[0]
    assert base["cache.policy"] == "full" and base["ppl_delta"] == 0.0
    # protocol metrics present for every configuration
    for col in ("ppl", "ppl_delta", "tpot_ms", "ttft_ms", "prefill_ms", "total_ms", "kv_bytes", "peak_rss_bytes",
                "evictions", "visible_min", "visible_mean", "visible_max", "gen_tokens_per_s", "gen_tpot_ms",
                "gen_ttft_ms", "acceptance_rate", "mean_accepted_length", "speedup"):
        assert configs[col].notna().all(), col
    assert np.allclose(configs["ppl_delta"], configs["ppl"] / base["ppl"] - 1)
    assert (configs["visible_max"] <= configs["cache.window"] + 4 + configs["cache.compress_every"]).all()
    # greedy speculative decoding: every k gives the same tokens for the same cache
    for _, grp in configs.groupby(["cache.policy", "cache.window", "cache.compress_every", "cache.max_drop"],
                                  dropna=False):
        assert grp["tokens_sha"].nunique() == 1
    # the perplexity pass is shared by configurations that differ only in k
    assert configs["ppl_reused"].sum() == 16
    lines_before = (out / "results.jsonl").read_text()
    df2 = ex.run_sweep(GRID, out=out, progress=False, **run_kwargs(env))
    assert (out / "results.jsonl").read_text() == lines_before  # nothing recomputed or appended
    pd.testing.assert_frame_equal(ex.comparable(df2), ex.comparable(df))
    # extending the grid only measures the new configurations
    bigger = dict(GRID, **{"speculative.k": [2, 3, 4]})
    df3 = ex.run_sweep(bigger, out=out, progress=False, **run_kwargs(env))
    assert len(df3) == 49 and len(jsonl_rows(out / "results.jsonl")) == 49
    loaded = ex.load_results(out / "results.jsonl")
    assert len(loaded) == 49 and loaded["key"].is_unique


def test_kill_and_resume_gives_the_uninterrupted_table(env: dict, tmp_path: Path) -> None:
    grid = dict(GRID, **{"cache.window": [16, 24, 32]})  # 48 configurations
    f = write_sweep_toml(env, tmp_path / "grid.toml", grid=grid, tokens=160, repeats=2)
    out = tmp_path / "killed"
    path = out / "results.jsonl"
    e = dict(os.environ, SPECSTREAM_CODE_VERSION=CODE_VERSION, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "specstream", "sweep", str(f), "--out", str(out),
                             "--no-progress"], env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    n = 0
    while time.monotonic() < deadline and proc.poll() is None:
        n = len(path.read_bytes().splitlines()) if path.exists() else 0
        if n >= 4:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    done = jsonl_rows(path)
    assert 4 <= len(done) < 49, "the sweep finished before it could be killed"
    with open(path, "ab") as fh:  # as if killed in the middle of a write
        fh.write(b'{"key": "partial row", "ppl": 12')
    r = cli("sweep", str(f), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert f"{len(done)} from the store" in r.stdout
    resumed = jsonl_rows(path)
    assert len(resumed) == 49 and len({row["key"] for row in resumed}) == 49
    assert resumed[:len(done)] == done  # earlier rows untouched
    # an uninterrupted run of the same sweep (in this process)
    ex.run_sweep_obj(ex.Sweep.from_toml(f), tmp_path / "clean", progress=False)
    a = ex.comparable(ex.load_results(path))
    b = ex.comparable(ex.load_results(tmp_path / "clean"))
    pd.testing.assert_frame_equal(a, b.reindex(columns=a.columns))


def test_shards_merge_into_the_unsharded_table(env: dict, tmp_path: Path) -> None:
    kw = run_kwargs(env)
    whole = ex.run_sweep(GRID, out=tmp_path / "whole", progress=False, **kw)
    sharded = tmp_path / "sharded"
    parts = [ex.run_sweep(GRID, out=sharded, shard=f"{i}/3", progress=False, **kw) for i in range(3)]
    files = sorted(p.name for p in sharded.glob("results*.jsonl"))
    assert files == [f"results.shard-{i}-of-3.jsonl" for i in range(3)]
    assert sum(len(p) for p in parts) == len(whole) + 2  # every shard carries the baseline row
    assert ex.merge(sharded) == len(whole)
    assert ex.merge(sharded) == len(whole)  # idempotent
    merged = ex.load_results(sharded / "results.jsonl")
    assert merged["key"].is_unique
    a, b = ex.comparable(merged), ex.comparable(ex.load_results(tmp_path / "whole"))
    pd.testing.assert_frame_equal(a, b.reindex(columns=a.columns))
    # a shard run after the merge finds its rows and recomputes nothing
    before = (sharded / "results.shard-1-of-3.jsonl").read_text()
    ex.run_sweep(GRID, out=sharded, shard="1/3", progress=False, **kw)
    assert (sharded / "results.shard-1-of-3.jsonl").read_text() == before
    # the CLI merge
    r = cli("merge", str(sharded))
    assert r.returncode == 0 and f"{len(whole)} unique rows" in r.stdout


def test_shard_from_slurm_environment() -> None:
    assert ex.parse_shard(None, {}) == (0, 1)
    assert ex.parse_shard(None, {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == (3, 4)
    assert ex.parse_shard(None, {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4",
                                 "SLURM_ARRAY_TASK_MIN": "2"}) == (3, 4)
    assert ex.parse_shard("1/2") == (1, 2)
    for bad in ("2/2", "x", "1/0", "-1/3"):
        with pytest.raises(ex.GridError, match="--shard"):
            ex.parse_shard(bad)


def test_preloaded_models_cannot_take_revisions(env: dict, tmp_path: Path) -> None:
    import specstream

    target = specstream.load(env["target"])
    spec = ex.RunSpec(**run_kwargs(env, draft=None))
    with pytest.raises(ex.GridError) as info:
        ex.Runner(spec, tmp_path, grid=ex.Grid({"model.revision": ["step1000"]}), models=(target, None))
    assert info.value.field == "model.revision" and "preloaded" in str(info.value)
    # without a model section the preloaded pair is what runs
    runner = ex.Runner(spec, tmp_path, grid=ex.Grid({"cache.window": [16]}), models=(target, None))
    assert runner.models() == (target, None)
