"""specstream.experiments.slurm: submitting a sweep as a Slurm job array."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("pandas")

from specstream import experiments as ex  # noqa: E402

from exp_support import env, pinned_code_version, run_kwargs  # noqa: E402,F401


def test_slurm_executor(env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"run": run_kwargs(env, draft=None), "grid": {"cache.policy": ["streaming"], "cache.window": [16, 24]}}
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
