"""Fixtures for the pytest-driven ablations (see README.md here).

Settings come from the environment so that the same matrices run small on a
laptop and large on a cluster node:

    SPECSTREAM_ABLATION_OUT      sweep directory of the result store
                                 (default: benchmarks/ablations/results)
    SPECSTREAM_ABLATION_TARGET   "default" (the bundled pair) or a model directory
    SPECSTREAM_ABLATION_DRAFT    "default", a model directory, or "none"
    SPECSTREAM_ABLATION_DATA     "wikitext-2-test", "pg2554", a .txt or a .npy of ids
    SPECSTREAM_ABLATION_TOKENS   tokens of the slice (default 512)
    SPECSTREAM_ABLATION_OFFSET   first token of the slice (default 0)
    SPECSTREAM_ABLATION_REPEATS  runs per configuration; timings are medians (default 2)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import pytest

from specstream import experiments as ex

HERE = Path(__file__).resolve().parent


def _env(name: str, default: str) -> str:
    return os.environ.get(f"SPECSTREAM_ABLATION_{name}", default)


class Ablation:
    """Runs single points of an ablation matrix into one result store.

    ``run(point, measure=("ppl",))`` returns the point's row (a dict with the
    same columns as a sweep's), measuring it only when the store does not
    have it yet; rows go to ``OUT/results.jsonl`` and load with
    ``specstream.experiments.load_results``.
    """

    def __init__(self) -> None:
        draft: Optional[str] = _env("DRAFT", "default")
        self.settings = dict(target=_env("TARGET", "default"), draft=None if draft == "none" else draft,
                             data=_env("DATA", "wikitext-2-test"), tokens=int(_env("TOKENS", "512")),
                             offset=int(_env("OFFSET", "0")), repeats=int(_env("REPEATS", "2")))
        self.out = Path(_env("OUT", str(HERE / "results")))
        self._runners: dict[tuple, ex.Runner] = {}

    def runner(self, measure: tuple) -> ex.Runner:
        if measure not in self._runners:
            spec = ex.RunSpec(measure=measure, name="ablation", **self.settings)
            self._runners[measure] = ex.Runner(spec, self.out, progress=False)
        return self._runners[measure]

    def run(self, point: ex.Point, measure: tuple = ("ppl",)) -> dict[str, Any]:
        return self.runner(tuple(measure)).run_point(point)


@pytest.fixture(scope="session")
def ablation() -> Ablation:
    if _env("TARGET", "default") == "default" or _env("DRAFT", "default") == "default":
        from specstream.defaults import default_model_dir

        try:
            default_model_dir("target")
            default_model_dir("draft")
        except FileNotFoundError as e:
            pytest.skip(f"the bundled default models are missing ({e}); set SPECSTREAM_ABLATION_TARGET/DRAFT")
    return Ablation()
