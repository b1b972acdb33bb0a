"""specstream.experiments.spec: run specs and sweep files, validated before
any measurement starts."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pandas")

from specstream import experiments as ex  # noqa: E402
from specstream.experiments.spec import measures  # noqa: E402

from exp_support import GRID, env, pinned_code_version, run_kwargs, write_sweep_toml  # noqa: E402,F401


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
            ex.run_sweep(grid, out=tmp_path / "out", progress=False, **run_kwargs(env, **run))
        assert info.value.field == field, (grid, run, str(info.value))
    with pytest.raises(ex.GridError, match="run.tokenz"):
        ex.run_sweep({"cache.window": [16]}, out=tmp_path / "out", progress=False, tokenz=3,
                     **run_kwargs(env))
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_run_settings_are_checked_one_by_one(env: dict) -> None:
    bad = [
        ({"tokenz": 3}, "run.tokenz", "did you mean 'tokens'"),
        ({"measure": ["ppl", "speed"]}, "run.measure", "non-empty list"),
        ({"measure": []}, "run.measure", "non-empty list"),
        ({"dtype": "f64"}, "run.dtype", "dtype must be one of"),
        ({"threads": 0}, "run.threads", "positive integer"),
        ({"tokens": 1}, "run.tokens", ">= 2"),
        ({"offset": 1.5}, "run.offset", "must be an integer"),
        ({"baseline": "yes"}, "run.baseline", "true or false"),
        ({"draft": 3}, "run.draft", "expected 'default'"),
    ]
    for settings, field, words in bad:
        with pytest.raises(ex.GridError) as info:
            ex.RunSpec.from_dict(run_kwargs(env, **settings))
        assert info.value.field == field and words in str(info.value), settings
    spec = ex.RunSpec.from_dict(run_kwargs(env, draft="none", measure="ppl"))
    assert spec.draft is None and spec.measure == ("ppl",)


def test_sweep_files_name_what_is_wrong(env: dict, tmp_path: Path) -> None:
    with pytest.raises(ex.GridError) as info:
        ex.Sweep.from_dict({"run": run_kwargs(env), "grid": {"cache.window": [16]}, "gird": {}})
    assert info.value.field == "gird" and "unknown table" in str(info.value)
    with pytest.raises(ex.GridError, match="no \\[grid\\] table"):
        ex.Sweep.from_dict({"run": run_kwargs(env)})
    broken = tmp_path / "broken.toml"
    broken.write_text('[run]\ntarget = "x\n')
    with pytest.raises(ex.GridError) as info:
        ex.Sweep.from_toml(broken)
    assert info.value.field == str(broken) and "not valid TOML" in str(info.value)
    with pytest.raises(FileNotFoundError):
        ex.Sweep.from_toml(tmp_path / "missing.toml")


def test_sweep_file_gives_the_grid_and_run_spec(env: dict, tmp_path: Path) -> None:
    path = write_sweep_toml(env, tmp_path / "sweep.toml", grid=GRID, tokens=80)
    sweep = ex.Sweep.from_toml(path)
    assert sweep.run == ex.RunSpec.from_dict(run_kwargs(env, tokens=80))
    assert [p.flat() for p in sweep.validate()] == [p.flat() for p in ex.Grid(GRID).points()]
    assert sweep.source == str(path)


def test_what_a_sweep_measures_by_default(env: dict) -> None:
    cache_only = ex.Grid({"cache.window": [16]})
    assert measures(ex.RunSpec(**run_kwargs(env, draft=None)), cache_only) == ("ppl",)
    assert measures(ex.RunSpec(**run_kwargs(env)), cache_only) == ("ppl", "generate")  # a draft to measure
    lookup = ex.Grid({"speculative.method": ["lookup"]})
    assert measures(ex.RunSpec(**run_kwargs(env, draft=None)), lookup) == ("ppl", "generate")
    assert measures(ex.RunSpec(**run_kwargs(env, measure=["generate"])), cache_only) == ("generate",)
