"""specstream.experiments.cli: ``python -m specstream sweep / merge / plot``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from exp_support import cli, env, jsonl_rows, pinned_code_version, write_sweep_toml  # noqa: E402,F401


def test_cli_bad_grid_exits_naming_the_field(env: dict, tmp_path: Path) -> None:
    f = write_sweep_toml(env, tmp_path / "bad.toml", grid={"cache.policy": ["streaming"], "cache.compress_evry": [1]})
    r = cli("sweep", str(f), "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    assert "cache.compress_evry" in r.stderr and "cache.compress_every" in r.stderr
    assert not (tmp_path / "out").exists()


def test_sweep_from_cli_and_plot(env: dict, tmp_path: Path) -> None:
    f = write_sweep_toml(env, tmp_path / "grid.toml", save_nll=False)  # NLL figures are tested in-process (time)
    out = tmp_path / "out"
    r = cli("sweep", str(f), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    rows = jsonl_rows(out / "results.jsonl")
    assert len(rows) == 33 and len({row["key"] for row in rows}) == 33
    r = cli("plot", str(out / "results.jsonl"), "--out", str(tmp_path / "figs"))
    assert r.returncode == 0, r.stderr
    for name in ("pareto.png", "pareto_generation.png", "pareto_memory.png", "acceptance_vs_k.png",
                 "recommendations.csv"):
        assert (tmp_path / "figs" / name).stat().st_size > 1000 or name.endswith(".csv"), name
    assert "short text" in r.stdout and "extreme memory" in r.stdout
    assert not (out / "nll").exists()
    r = cli("sweep", str(f), "--out", str(out), "--dry-run")
    assert r.returncode == 0 and "32 configurations" in r.stdout


SMALL_GRID = {"cache.policy": ["window"], "cache.window": [16, 24, 32]}


def test_cli_shards_then_merge(env: dict, tmp_path: Path) -> None:
    f = write_sweep_toml(env, tmp_path / "grid.toml", grid=SMALL_GRID, draft=None, save_nll=False)
    out = tmp_path / "out"
    for i in range(2):
        r = cli("sweep", str(f), "--out", str(out), "--shard", f"{i}/2", "--no-progress")
        assert r.returncode == 0, r.stderr
        assert f"results.shard-{i}-of-2.jsonl" in r.stdout and f"python -m specstream merge {out}" in r.stdout
    # every-other configuration per shard, plus the baseline in each
    assert [len(jsonl_rows(out / f"results.shard-{i}-of-2.jsonl")) for i in range(2)] == [3, 2]
    r = cli("merge", str(out))
    assert r.returncode == 0 and "4 unique rows" in r.stdout
    assert {row["cache.window"] for row in jsonl_rows(out / "results.jsonl") if row["kind"] == "config"} == {16, 24, 32}
    r = cli("sweep", str(f), "--out", str(out), "--shard", "2/2")
    assert r.returncode == 2 and "--shard" in r.stderr


def test_cli_slurm_without_submitit_says_what_to_install(env: dict, tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "submitit.py").write_text("raise ImportError('not installed here')\n")
    f = write_sweep_toml(env, tmp_path / "grid.toml", grid=SMALL_GRID, draft=None)
    r = cli("sweep", str(f), "--out", str(tmp_path / "out"), "--executor", "slurm",
            env={"PYTHONPATH": os.pathsep.join([str(blocked), os.environ.get("PYTHONPATH", "")])})
    assert r.returncode == 2 and "pip install submitit" in r.stderr
    assert not (tmp_path / "out").exists()
