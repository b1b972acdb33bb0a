"""The experiment layer's own settings sections of a grid (beside
:class:`~specstream.CacheConfig` and :class:`~specstream.SpeculativeConfig`):
how each configuration's generation run is made, and which checkpoints of
the target and draft it runs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class GenerationSettings:
    """Settings of the generation run of a configuration (the ``generation.``
    section of a grid).

    The prompt is the first ``prompt_tokens`` ids of the data slice; then
    ``max_new_tokens`` are generated greedily (``temperature=0``) or sampled
    with ``seed``. ``speculate=False`` decodes with the target alone even
    when a draft is given.
    """

    max_new_tokens: int = 64
    prompt_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    speculate: bool = True

    def __post_init__(self) -> None:
        for name, lo in (("max_new_tokens", 2), ("prompt_tokens", 1), ("top_k", 0), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"GenerationSettings.{name} must be an integer, got {v!r}")
            if v < lo:
                raise ValueError(f"GenerationSettings.{name} must be >= {lo}, got {v}")
        for name in ("temperature", "top_p"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"GenerationSettings.{name} must be a finite number, got {v!r}")
        if self.temperature < 0:
            raise ValueError(f"GenerationSettings.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"GenerationSettings.top_p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.speculate, bool):
            raise TypeError(f"GenerationSettings.speculate must be a bool, got {self.speculate!r}")


@dataclass(frozen=True)
class ModelSettings:
    """Which checkpoints a configuration runs (the ``model.`` section of a
    grid).

    ``revision`` / ``draft_revision``: a branch, tag or full commit hash of
    the Hugging Face repo that ``run.target`` / ``run.draft`` name (Pythia's
    training checkpoints are the branches ``step1000`` ... ``step143000``),
    looked up in the local cache. None: the run's own (``run.revision`` /
    ``run.draft_revision``; by default the repo's ``main``). Sweeping
    ``model.revision`` compares checkpoints of one model in one sweep.
    """

    revision: Optional[str] = None
    draft_revision: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("revision", "draft_revision"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise ValueError(f"ModelSettings.{name} must be a branch, tag or commit hash (a non-empty "
                                 f"string) or None, got {v!r}")
