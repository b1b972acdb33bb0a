"""specstream.experiments.settings: the generation and model sections of a
grid check their own values, naming the field."""

from __future__ import annotations

import pytest

from specstream import experiments as ex


@pytest.mark.parametrize("kwargs, error, words", [
    ({"max_new_tokens": 1}, ValueError, "max_new_tokens must be >= 2"),
    ({"prompt_tokens": 0}, ValueError, "prompt_tokens must be >= 1"),
    ({"seed": -1}, ValueError, "seed must be >= 0"),
    ({"top_k": 2.0}, TypeError, "top_k must be an integer"),
    ({"max_new_tokens": True}, TypeError, "max_new_tokens must be an integer"),
    ({"temperature": -0.5}, ValueError, "temperature must be >= 0"),
    ({"temperature": float("nan")}, TypeError, "temperature must be a finite number"),
    ({"top_p": 0.0}, ValueError, "top_p must be in (0, 1]"),
    ({"top_p": 1.5}, ValueError, "top_p must be in (0, 1]"),
    ({"speculate": 1}, TypeError, "speculate must be a bool"),
])
def test_generation_settings_reject_bad_values(kwargs: dict, error: type, words: str) -> None:
    with pytest.raises(error) as info:
        ex.GenerationSettings(**kwargs)
    assert f"GenerationSettings.{words}" in str(info.value)


def test_generation_settings_defaults_and_edges_are_valid() -> None:
    g = ex.GenerationSettings()
    assert (g.max_new_tokens, g.prompt_tokens, g.temperature, g.top_p, g.speculate) == (64, 64, 0.0, 1.0, True)
    ex.GenerationSettings(max_new_tokens=2, prompt_tokens=1, temperature=0, top_p=1, top_k=0, seed=0)


@pytest.mark.parametrize("kwargs", [{"revision": ""}, {"revision": "  "}, {"draft_revision": 1000},
                                    {"revision": b"main"}])
def test_model_settings_reject_what_is_not_a_revision(kwargs: dict) -> None:
    field = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"ModelSettings.{field} must be a branch, tag or commit hash"):
        ex.ModelSettings(**kwargs)


def test_model_settings_take_branches_tags_and_commits() -> None:
    commit = "a" * 40
    m = ex.ModelSettings(revision="step1000", draft_revision=commit)
    assert (m.revision, m.draft_revision) == ("step1000", commit)
    assert ex.ModelSettings() == ex.ModelSettings(revision=None, draft_revision=None)
