"""specstream.experiments.grid: fields discovered from the config classes,
typed values, expansion into points, labels, and errors naming the field."""

from __future__ import annotations

import pytest

from specstream import CacheConfig, SpeculativeConfig
from specstream import experiments as ex


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


def test_model_revisions_are_a_grid_axis() -> None:
    g = ex.Grid({"model.revision": ["main", "step1000"], "cache.window": [16, 32]})
    pts = g.points()
    assert [(p.model.revision, p.cache.window) for p in pts] == [("main", 16), ("main", 32), ("step1000", 16),
                                                                  ("step1000", 32)]
    assert pts[2].label == "revision=step1000 window=16"
    assert pts[2].flat()["model.revision"] == "step1000" and pts[2].flat()["model.draft_revision"] is None
    # without the axis every point runs the run's own revision
    assert ex.Grid({"cache.window": [16]}).points()[0].model == ex.ModelSettings()


@pytest.mark.parametrize("axes, words", [
    ({"model.revision": [1000]}, "expected str"),
    ({"model.revision": [""]}, "non-empty string"),
    ({"model.draft_revision": [None, " "]}, "non-empty string"),
])
def test_bad_revisions_name_the_field(axes: dict, words: str) -> None:
    with pytest.raises(ex.GridError) as info:
        ex.Grid(axes).points()
    assert info.value.field == next(iter(axes)) and words in str(info.value)
