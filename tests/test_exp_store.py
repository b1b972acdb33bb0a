"""specstream.experiments.store: the append-only JSONL store, merging shard
files and loading results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specstream import experiments as ex

from exp_support import jsonl_rows


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
    assert [r["key"] for r in jsonl_rows(p)] == ["a", "c"]
    # two writers on one file (e.g. parallel ablation workers): the second sees the first's row
    w1, w2 = ex.ResultStore(p), ex.ResultStore(p)
    w1.append({"key": "d", "v": 4})
    assert w2.append({"key": "d", "v": 5})["v"] == 4
    assert [r["key"] for r in jsonl_rows(p)] == ["a", "c", "d"]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_merge_unites_shard_files_once_per_key(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "results.jsonl", [{"key": "a", "v": 1}])
    _write_jsonl(tmp_path / "results.shard-0-of-2.jsonl", [{"key": "a", "v": 2}, {"key": "b", "v": 3}])
    _write_jsonl(tmp_path / "results.shard-1-of-2.jsonl", [{"key": "c", "v": 4}, {"key": "b", "v": 5}])
    assert ex.merge(tmp_path) == 3
    merged = jsonl_rows(tmp_path / "results.jsonl")
    # results.jsonl first, then the shards in name order: the first row of a key wins
    assert [(r["key"], r["v"]) for r in merged] == [("a", 1), ("b", 3), ("c", 4)]
    assert ex.merge(tmp_path) == 3 and jsonl_rows(tmp_path / "results.jsonl") == merged  # idempotent
    assert ex.merge(tmp_path, tmp_path / "elsewhere" / "all.jsonl") == 3
    assert jsonl_rows(tmp_path / "elsewhere" / "all.jsonl") == merged
    # written through a temporary file and a rename: nothing else is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "results.jsonl", "results.shard-0-of-2.jsonl",
                                                          "results.shard-1-of-2.jsonl"]


def test_merge_and_load_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such sweep directory"):
        ex.merge(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"no results\*\.jsonl files"):
        ex.merge(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such results file or sweep directory"):
        ex.load_results(tmp_path / "nope.jsonl")


def test_shard_file_names_match_what_merge_reads(tmp_path: Path) -> None:
    assert ex.shard_file(tmp_path, (0, 1)) == tmp_path / "results.jsonl"
    assert ex.shard_file(tmp_path, (2, 3)) == tmp_path / "results.shard-2-of-3.jsonl"
    for shard in ((0, 3), (1, 3), (2, 3)):
        ex.ResultStore(ex.shard_file(tmp_path, shard)).append({"key": f"k{shard[0]}"})
    assert ex.merge(tmp_path) == 3


def test_loaded_results_are_comparable_without_timings(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    store = ex.ResultStore(tmp_path / "results.jsonl")
    store.append({"key": "b", "ppl": 2.0, "tpot_ms": 1.0, "cache.structural_ids": [1, 2], "acceptance_rate": None})
    store.append({"key": "a", "ppl": float("inf"), "tpot_ms": 3.0, "cache.structural_ids": [], "acceptance_rate": 0.5})
    df = ex.load_results(tmp_path)  # a directory reads its results files
    assert list(df["key"]) == ["b", "a"]
    assert df["cache.structural_ids"].tolist() == [(1, 2), ()]  # lists come back as tuples
    assert df["acceptance_rate"].isna().tolist() == [True, False]
    assert df["ppl"].isna().tolist() == [False, True]  # JSON has no infinity: stored as null
    cmp = ex.comparable(df)
    assert list(cmp["key"]) == ["a", "b"]
    assert "tpot_ms" not in cmp.columns and set(ex.TIMING_COLUMNS).isdisjoint(cmp.columns)
    pd.testing.assert_frame_equal(cmp, ex.comparable(ex.load_results(tmp_path / "results.jsonl")))
