"""specstream.experiments.cli: ``python -m specstream sweep / merge / plot``."""

from __future__ import annotations

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
