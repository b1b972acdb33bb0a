"""The experiment layer: grid expansion and validation, sweeps from Python and
the CLI, kill-and-resume, shard/merge, plots and recommendations.

Tiny random models and random token ids keep the whole file fast.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

import specstream  # noqa: E402
from specstream import CacheConfig, SpeculativeConfig  # noqa: E402
from specstream import experiments as ex  # noqa: E402
from specstream import plots  # noqa: E402
from specstream.models import create_random  # noqa: E402

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


@pytest.fixture(autouse=True)
def _pinned_code_version(monkeypatch: pytest.MonkeyPatch) -> None:
    # other commits landing while the suite runs must not change row keys
    monkeypatch.setenv("SPECSTREAM_CODE_VERSION", CODE_VERSION)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("exp")
    target = create_random(dict(n_layer=2, d_model=32, n_head=2, d_ff=64, vocab_size=VOCAB), root / "target", seed=3)
    draft = create_random(dict(n_layer=1, d_model=16, n_head=2, d_ff=32, vocab_size=VOCAB), root / "draft", seed=4)
    ids = np.random.default_rng(0).integers(0, VOCAB, size=200).astype(np.int32)
    np.save(root / "ids.npy", ids)
    return {"root": root, "target": str(target), "draft": str(draft), "data": str(root / "ids.npy")}


def _run_kwargs(env: dict, **kw) -> dict:
    d = dict(target=env["target"], draft=env["draft"], data=env["data"], tokens=64, repeats=1)
    d.update(kw)
    return d


def _toml(env: dict, path: Path, grid: dict = GRID, **run) -> Path:
    def val(v):
        if v is None:
            return '"none"'
        return json.dumps(v)

    lines = ["[run]"]
    for k, v in _run_kwargs(env, **run).items():
        lines.append(f"{k} = {val(v)}")
    lines.append("[grid]")
    for k, vs in grid.items():
        lines.append(f'"{k}" = [{", ".join(val(v) for v in vs)}]')
    path.write_text("\n".join(lines) + "\n")
    return path


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    e = dict(os.environ, SPECSTREAM_CODE_VERSION=CODE_VERSION, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "specstream", *args], capture_output=True, text=True, env=e,
                          cwd=kw.get("cwd"), timeout=kw.get("timeout", 120))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------ grid

def test_every_config_field_is_sweepable() -> None:
    import dataclasses

    fields = ex.grid_fields()
    for section, cls in (("cache", CacheConfig), ("speculative", SpeculativeConfig),
                         ("generation", ex.GenerationSettings)):
        for f in dataclasses.fields(cls):
            assert f"{section}.{f.name}" in fields


def test_grid_expansion_and_labels() -> None:
    g = ex.Grid({"cache.policy": ["streaming"], "cache.window": [16, 32], "speculative.k": [2, 4, 6],
                 "cache.max_drop": ["none", 8]})
    pts = g.points()
    assert len(pts) == 2 * 3 * 2
    assert g.varying == ["cache.window", "speculative.k", "cache.max_drop"]
    assert pts[0].cache == CacheConfig(policy="streaming", window=16, max_drop=None)
    assert pts[-1].speculative.k == 6 and pts[-1].cache.max_drop == 8
    assert pts[0].label == "window=16 k=2 max_drop=None"
    assert len({p.id for p in pts}) == len(pts)
    # ints are accepted for float fields and canonicalised; duplicates collapse
    g2 = ex.Grid([{"generation.temperature": [0, 0.0]}, {"generation.temperature": [0.0, 1]}])
    assert [p.generation.temperature for p in g2.points()] == [0.0, 1.0]
    # tuple fields take lists
    g3 = ex.Grid({"cache.structural_ids": [[1, 2], []]})
    assert [p.cache.structural_ids for p in g3.points()] == [(1, 2), ()]


@pytest.mark.parametrize("axes, field, words", [
    ({"cache.windw": [16]}, "cache.windw", "did you mean 'cache.window'"),
    ({"kache.window": [16]}, "kache.window", "unknown field"),
    ({"window": [16]}, "window", "unknown field"),
    ({"speculative.kk": [2]}, "speculative.kk", "unknown field of SpeculativeConfig"),
    ({"cache.window": ["128"]}, "cache.window", "expected int"),
    ({"cache.window": [16.0]}, "cache.window", "expected int"),
    ({"cache.max_drop": [1.5]}, "cache.max_drop", "expected int or None"),
    ({"cache.window": [None]}, "cache.window", "None is not allowed"),
    ({"speculative.adaptive": [1]}, "speculative.adaptive", "expected bool"),
    ({"cache.policy": [3]}, "cache.policy", "expected str"),
    ({"generation.temperature": ["hot"]}, "generation.temperature", "expected float"),
    ({"cache.window": []}, "cache.window", "empty axis"),
    ({"cache.window": 16}, "cache.window", "must be a list"),
    ({"cache.policy": ["streaming"], "cache.compress_every": [4], "cache.overlap": [4]}, "cache.overlap",
     "invalid combination"),
    ({"cache.policy": ["nope"]}, "cache.policy", "unknown policy"),
    ({"speculative.k": [0]}, "speculative.k", ">= 1"),
])
def test_bad_grids_name_the_field(axes: dict, field: str, words: str) -> None:
    with pytest.raises(ex.GridError) as info:
        ex.Grid(axes).points()
    assert info.value.field == field
    assert field in str(info.value) and words in str(info.value)


def test_skip_invalid_drops_rejected_combinations() -> None:
    g = ex.Grid({"cache.policy": ["streaming"], "cache.compress_every": [2, 8], "cache.overlap": [0, 4]})
    assert len(g.points(skip_invalid=True)) == 3
    with pytest.raises(ex.GridError, match="cache.overlap"):
        g.points()


def test_bad_sweeps_fail_before_any_run(env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a, **k):
        raise AssertionError("a measurement started")

    monkeypatch.setattr(ex.Runner, "_measure_ppl", boom)
    monkeypatch.setattr(ex.Runner, "_measure_gen", boom)
    monkeypatch.setattr(ex.Runner, "models", boom)
    bad = [
        ({"cache.window": [16], "cache.windowz": [1]}, {}, "cache.windowz"),
        ({"cache.window": [16, "x"]}, {}, "cache.window"),
        ({"cache.window": []}, {}, "cache.window"),
        ({"speculative.k": [2], "generation.prompt_tokens": [8]}, {"draft": None},
         "speculative.k"),  # nothing to speculate with
        ({"speculative.k": [2]}, {"measure": ["ppl"]}, "speculative.k"),  # would have no effect
        ({"generation.prompt_tokens": [64]}, {"tokens": 64}, "generation.prompt_tokens"),
        ({"cache.window": [16]}, {"tokens": 1000}, "run.tokens"),  # slice longer than the data
        ({"cache.window": [16]}, {"data": "no-such-text"}, "run.data"),
        ({"cache.window": [16]}, {"repeats": 0}, "run.repeats"),
        ({"cache.window": [16]}, {"target": str(tmp_path)}, "run.target"),
    ]
    for grid, run, field in bad:
        with pytest.raises(ex.GridError) as info:
            ex.run_sweep(grid, out=tmp_path / "out", progress=False, **_run_kwargs(env, **run))
        assert info.value.field == field, (grid, run, str(info.value))
    with pytest.raises(ex.GridError, match="run.tokenz"):
        ex.run_sweep({"cache.window": [16]}, out=tmp_path / "out", progress=False, tokenz=3,
                     **_run_kwargs(env))
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_cli_bad_grid_exits_naming_the_field(env: dict, tmp_path: Path) -> None:
    f = _toml(env, tmp_path / "bad.toml", grid={"cache.policy": ["streaming"], "cache.compress_evry": [1]})
    r = _cli("sweep", str(f), "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    assert "cache.compress_evry" in r.stderr and "cache.compress_every" in r.stderr
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------- sweeps

def test_sweep_from_python_resumes_without_recomputing(env: dict, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    df = ex.run_sweep(GRID, out=out, progress=False, **_run_kwargs(env))
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
    df2 = ex.run_sweep(GRID, out=out, progress=False, **_run_kwargs(env))
    assert (out / "results.jsonl").read_text() == lines_before  # nothing recomputed or appended
    pd.testing.assert_frame_equal(ex.comparable(df2), ex.comparable(df))
    # extending the grid only measures the new configurations
    bigger = dict(GRID, **{"speculative.k": [2, 3, 4]})
    df3 = ex.run_sweep(bigger, out=out, progress=False, **_run_kwargs(env))
    assert len(df3) == 49 and len(_lines(out / "results.jsonl")) == 49
    loaded = ex.load_results(out / "results.jsonl")
    assert len(loaded) == 49 and loaded["key"].is_unique


def test_sweep_from_cli_and_plot(env: dict, tmp_path: Path) -> None:
    f = _toml(env, tmp_path / "grid.toml", save_nll=False)  # NLL figures are tested in-process (time)
    out = tmp_path / "out"
    r = _cli("sweep", str(f), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    rows = _lines(out / "results.jsonl")
    assert len(rows) == 33 and len({row["key"] for row in rows}) == 33
    r = _cli("plot", str(out / "results.jsonl"), "--out", str(tmp_path / "figs"))
    assert r.returncode == 0, r.stderr
    for name in ("pareto.png", "pareto_generation.png", "pareto_memory.png", "acceptance_vs_k.png",
                 "recommendations.csv"):
        assert (tmp_path / "figs" / name).stat().st_size > 1000 or name.endswith(".csv"), name
    assert "short text" in r.stdout and "extreme memory" in r.stdout
    assert not (out / "nll").exists()
    r = _cli("sweep", str(f), "--out", str(out), "--dry-run")
    assert r.returncode == 0 and "32 configurations" in r.stdout


def test_kill_and_resume_gives_the_uninterrupted_table(env: dict, tmp_path: Path) -> None:
    grid = dict(GRID, **{"cache.window": [16, 24, 32]})  # 48 configurations
    f = _toml(env, tmp_path / "grid.toml", grid=grid, tokens=160, repeats=2)
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
    done = _lines(path)
    assert 4 <= len(done) < 49, "the sweep finished before it could be killed"
    with open(path, "ab") as fh:  # as if killed in the middle of a write
        fh.write(b'{"key": "partial row", "ppl": 12')
    r = _cli("sweep", str(f), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert f"{len(done)} from the store" in r.stdout
    resumed = _lines(path)
    assert len(resumed) == 49 and len({row["key"] for row in resumed}) == 49
    assert resumed[:len(done)] == done  # earlier rows untouched
    # an uninterrupted run of the same sweep (in this process)
    ex.run_sweep_obj(ex.Sweep.from_toml(f), tmp_path / "clean", progress=False)
    a = ex.comparable(ex.load_results(path))
    b = ex.comparable(ex.load_results(tmp_path / "clean"))
    pd.testing.assert_frame_equal(a, b.reindex(columns=a.columns))


def test_shards_merge_into_the_unsharded_table(env: dict, tmp_path: Path) -> None:
    kw = _run_kwargs(env)
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
    r = _cli("merge", str(sharded))
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


def test_slurm_executor(env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"run": _run_kwargs(env, draft=None), "grid": {"cache.policy": ["streaming"], "cache.window": [16, 24]}}
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "submitit", None)  # as if not installed
        with pytest.raises(RuntimeError, match="pip install submitit"):
            ex.submit_slurm(doc, tmp_path / "s", shards=2)
    if not _has_submitit():
        pytest.skip("submitit is not installed: only the missing-package error is tested")
    jobs = ex.submit_slurm(doc, tmp_path / "s", shards=2, cluster="debug", wait=True)
    assert len(jobs) == 2
    df = ex.load_results(tmp_path / "s" / "results.jsonl")
    assert len(df) == 3 and df["key"].is_unique


def _has_submitit() -> bool:
    try:
        import submitit  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------ store

def test_store_cuts_a_partial_line_and_ignores_duplicates(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    s = ex.ResultStore(p)
    s.append({"key": "a", "v": 1.0, "nan": float("nan")})
    with open(p, "ab") as fh:
        fh.write(b'{"key": "b", "v"')
    s2 = ex.ResultStore(p)
    assert len(s2) == 1 and s2.get("a")["nan"] is None
    s2.append({"key": "c", "v": 3})
    s2.append({"key": "a", "v": 99})  # a known key is not appended again
    assert [r["key"] for r in _lines(p)] == ["a", "c"]
    # two writers on one file (e.g. parallel ablation workers): the second sees the first's row
    w1, w2 = ex.ResultStore(p), ex.ResultStore(p)
    w1.append({"key": "d", "v": 4})
    assert w2.append({"key": "d", "v": 5})["v"] == 4
    assert [r["key"] for r in _lines(p)] == ["a", "c", "d"]


def test_code_version_has_the_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPECSTREAM_CODE_VERSION")
    v = ex.code_version()
    assert v.startswith(specstream.__version__)
    if (ROOT / ".git").exists() and (ROOT / "specstream").resolve() == Path(ex.__file__).resolve().parent:
        assert "+g" in v


# ------------------------------------------------------------------ plots

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
                 out=out, progress=False, **_run_kwargs(env, draft=None))
    df = ex.load_results(out)
    plots.plot_pareto(df, path=tmp_path / "figs" / "pareto.png")
    assert (tmp_path / "figs" / "pareto.png").stat().st_size > 5000
    assert "acceptance_rate" not in df.columns  # nothing speculative was measured
    plots.plot_nll(next((out / "nll").glob("*.json")), tmp_path / "figs" / "nll.png")
    assert (tmp_path / "figs" / "nll.png").stat().st_size > 5000
    written = plots.plot_all(df, tmp_path / "all", nll_dir=out / "nll", max_nll=1)
    assert {p.name for p in written} >= {"pareto.png", "pareto_memory.png", "nll_baseline.png"}


def test_ablation_marker_is_registered_and_not_collected_by_default() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:
        import tomli as tomllib
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert cfg["testpaths"] == ["tests"]
    assert any(m.startswith("ablation:") for m in cfg["markers"])
