"""Models by Hugging Face repo id and revision, from a local cache, offline.

The cache is built here with the real layout (models--Org--name/blobs,
snapshots/<commit>/ files as symlinks into blobs, refs/<branch> holding the
commit), with two revisions of different weights; huggingface_hub resolves
it, and any attempt to open a network connection fails the test.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("huggingface_hub")

import specstream  # noqa: E402
from specstream import CacheConfig  # noqa: E402
from specstream.hub import resolve_model_dir  # noqa: E402
from specstream.models import create_random  # noqa: E402

REPO = "EleutherAI/pythia-tiny"
SHAPE = dict(n_layer=2, d_model=32, n_head=2, d_ff=64, vocab_size=384)
PROMPT = [5, 17, 2, 99, 31, 7]


def commit_of(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def add_to_cache(cache: Path, repo_id: str, revision: str, model_dir: Path) -> str:
    """Lays ``model_dir``'s files into ``cache`` as huggingface_hub does: one
    blob per content, a snapshot of symlinks for the commit, and a ref file
    naming the commit. Returns the commit hash."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = commit_of(f"{repo_id}@{revision}")
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in sorted(model_dir.iterdir()):
        data = f.read_bytes()
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (snapshot / f.name).symlink_to(Path("..", "..", "blobs", blob))
    (repo / "refs" / revision).write_text(commit)
    return commit


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A cache with REPO at main and step1000 (different weights), and the
    original directories the revisions were made from."""
    root = tmp_path_factory.mktemp("hub")
    originals = {rev: create_random(SHAPE, root / "originals" / rev, seed=seed)
                 for rev, seed in (("main", 11), ("step1000", 12))}
    cache = root / "cache"
    commits = {rev: add_to_cache(cache, REPO, rev, d) for rev, d in originals.items()}
    return {"cache": cache, "originals": originals, "commits": commits}


@pytest.fixture(autouse=True)
def offline(hub: dict, monkeypatch: pytest.MonkeyPatch) -> list:
    """HF_HUB_CACHE points at the fake cache; opening a connection or
    resolving a host name fails the test."""
    monkeypatch.setenv("HF_HUB_CACHE", str(hub["cache"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield attempts
    assert not attempts, "network access attempted"


def cli(*args: str) -> subprocess.CompletedProcess:
    # the child inherits HF_HUB_CACHE and HF_HUB_OFFLINE=1 (huggingface_hub refuses any request)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "specstream", *args], capture_output=True, text=True, env=env,
                          timeout=120)


# -------------------------------------------------------------------- load

def test_load_by_id_is_the_cached_snapshot(hub: dict) -> None:
    by_id = specstream.load(REPO)
    snapshot = hub["cache"] / "models--EleutherAI--pythia-tiny" / "snapshots" / hub["commits"]["main"]
    assert by_id.path == snapshot
    from_dir = specstream.load(snapshot)
    original = specstream.load(hub["originals"]["main"])
    logits = by_id.forward(PROMPT)
    assert np.array_equal(logits, from_dir.forward(PROMPT))
    assert np.array_equal(logits, original.forward(PROMPT))


def test_revision_by_branch_or_commit_picks_its_weights(hub: dict) -> None:
    step = specstream.load(hub["originals"]["step1000"]).forward(PROMPT)
    main = specstream.load(hub["originals"]["main"]).forward(PROMPT)
    assert not np.array_equal(step, main)
    by_branch = specstream.load(REPO, revision="step1000")
    assert by_branch.path.name == hub["commits"]["step1000"]
    assert np.array_equal(by_branch.forward(PROMPT), step)
    by_commit = specstream.load(REPO, revision=hub["commits"]["step1000"])
    assert np.array_equal(by_commit.forward(PROMPT), step)
    assert np.array_equal(specstream.load(REPO, revision="main").forward(PROMPT), main)
    # the other parameters keep their places and meaning
    assert specstream.load(REPO, "bf16", "cpu", revision="step1000").dtype == "bf16"


def test_hf_home_is_honoured_when_hf_hub_cache_is_unset(hub: dict, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "hf-home"
    add_to_cache(home / "hub", REPO, "main", hub["originals"]["step1000"])
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(home))
    assert resolve_model_dir(REPO) == home / "hub" / "models--EleutherAI--pythia-tiny" / "snapshots" \
        / commit_of(f"{REPO}@main")


def test_a_missing_id_names_the_id_revision_and_cache(hub: dict) -> None:
    with pytest.raises(FileNotFoundError) as info:
        specstream.load("EleutherAI/pythia-nope")
    msg = str(info.value)
    assert "'EleutherAI/pythia-nope'" in msg and "'main'" in msg and str(hub["cache"]) in msg
    assert "not cached at all" in msg and "download=True" in msg


def test_a_missing_revision_lists_the_cached_ones(hub: dict) -> None:
    with pytest.raises(FileNotFoundError) as info:
        specstream.load(REPO, revision="step2000")
    msg = str(info.value)
    assert f"'{REPO}'" in msg and "'step2000'" in msg and str(hub["cache"]) in msg
    assert f"main = {hub['commits']['main'][:12]}" in msg and f"step1000 = {hub['commits']['step1000'][:12]}" in msg
    with pytest.raises(FileNotFoundError, match="'0{40}'"):
        specstream.load(REPO, revision="0" * 40)  # an unknown commit


@pytest.mark.parametrize("text", ["/no/such/dir", "not/a/repo/id", "two--dashes", "./relative-missing"])
def test_neither_a_directory_nor_a_repo_id(text: str) -> None:
    with pytest.raises(FileNotFoundError) as info:
        specstream.load(text)
    assert f"'{text}': no such model directory, and not a Hugging Face repo id" in str(info.value)


def test_bad_revision_arguments(hub: dict) -> None:
    with pytest.raises(ValueError, match="is a local directory: revision='step1000'"):
        specstream.load(hub["originals"]["main"], revision="step1000")
    with pytest.raises(TypeError, match="revision must be a str"):
        specstream.load(REPO, revision=1000)
    with pytest.raises(ValueError, match="revision is empty"):
        specstream.load(REPO, revision=" ")
    with pytest.raises(TypeError, match="download must be True or False"):
        specstream.load(REPO, download="yes")


def test_only_download_asks_the_hub(hub: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    calls = []
    fetched = hub["originals"]["step1000"]

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        if kwargs["local_files_only"]:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        return str(fetched)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(FileNotFoundError, match="'step3000'"):
        resolve_model_dir(REPO, revision="step3000")
    assert calls[-1][1]["local_files_only"] is True
    assert resolve_model_dir(REPO, revision="step3000", download=True) == fetched
    repo_id, kwargs = calls[-1]
    assert repo_id == REPO and kwargs["revision"] == "step3000" and kwargs["local_files_only"] is False
    assert kwargs["cache_dir"] == str(hub["cache"])
    assert "config.json" in kwargs["allow_patterns"] and "*.safetensors" in kwargs["allow_patterns"]


def test_local_directories_never_import_huggingface_hub(hub: dict) -> None:
    code = ("import sys, specstream; specstream.load(sys.argv[1]); "
            "assert 'huggingface_hub' not in sys.modules, 'huggingface_hub was imported'")
    r = subprocess.run([sys.executable, "-c", code, str(hub["originals"]["main"])], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------- CLI

def greedy(model_dir: Path, n: int) -> list[int]:
    return specstream.load(model_dir).generate(PROMPT, max_new_tokens=n).tokens.tolist()


def test_cli_generate_by_id_and_revision(hub: dict) -> None:
    ids = ",".join(map(str, PROMPT))
    r = cli("generate", "--model", REPO, "--revision", "step1000", "--prompt-ids", ids, "--max-new-tokens", "8",
            "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["tokens"] == greedy(hub["originals"]["step1000"], 8)
    assert out["model"] == f"{REPO} (revision step1000)"
    # speculative with the other revision as the draft: greedy output is the target's own
    r = cli("generate", "--model", REPO, "--draft", REPO, "--draft-revision", "step1000", "--prompt-ids", ids,
            "--max-new-tokens", "8", "--k", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["tokens"] == greedy(hub["originals"]["main"], 8)
    assert out["stats"]["drafted"] > 0


def test_cli_eval_ppl_by_id_and_revision(hub: dict, tmp_path: Path) -> None:
    ids = np.random.default_rng(0).integers(0, SHAPE["vocab_size"], size=40)
    np.save(tmp_path / "ids.npy", ids)
    for rev in ("main", "step1000"):
        r = cli("eval-ppl", "--model", REPO, "--revision", rev, "--ids", str(tmp_path / "ids.npy"), "--tokens", "40",
                "--repeats", "1")
        assert r.returncode == 0, r.stderr
        expected = specstream.eval.perplexity(specstream.load(hub["originals"][rev]), ids, cache=CacheConfig())
        assert json.loads(r.stdout)["ppl"] == pytest.approx(expected.ppl, rel=1e-5)


def test_cli_errors_name_the_revision(hub: dict) -> None:
    r = cli("generate", "--model", REPO, "--revision", "step9999", "--prompt-ids", "1,2", "--max-new-tokens", "2")
    assert r.returncode == 2 and "'step9999'" in r.stderr and "not in the cache" in r.stderr
    r = cli("generate", "--model", REPO, "--draft-revision", "step1000", "--prompt-ids", "1,2")
    assert r.returncode == 2 and "--draft-revision needs --draft" in r.stderr
    r = cli("eval-ppl", "--revision", "step1000")
    assert r.returncode == 2 and "--revision needs --model" in r.stderr


# ------------------------------------------------------------------ sweeps

@pytest.fixture()
def sweep_run(hub: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """RunSpec settings on REPO with 48 random token ids."""
    from exp_support import CODE_VERSION

    monkeypatch.setenv("SPECSTREAM_CODE_VERSION", CODE_VERSION)
    ids = np.random.default_rng(1).integers(0, SHAPE["vocab_size"], size=48)
    np.save(tmp_path / "ids.npy", ids)
    return dict(target=REPO, data=str(tmp_path / "ids.npy"), tokens=48, repeats=1, save_nll=False)


def perplexity_of(model_dir: Path, ids_file: str, window: int | None = None) -> float:
    cache = CacheConfig(policy="window", window=window) if window else CacheConfig()
    return specstream.eval.perplexity(specstream.load(model_dir), np.load(ids_file), cache=cache).ppl


def test_a_sweep_over_revisions_keeps_them_apart(hub: dict, tmp_path: Path, sweep_run: dict) -> None:
    from specstream import experiments as ex

    df = ex.run_sweep({"model.revision": ["main", "step1000"], "cache.policy": ["window"], "cache.window": [16, 24]},
                      out=tmp_path / "sweep", progress=False, **sweep_run)
    assert df["key"].is_unique and len(df) == 2 * 2 + 2  # one full-cache baseline per revision
    for rev in ("main", "step1000"):
        rows = df[df["target_revision"] == rev]
        assert set(rows["model.revision"]) == {rev}
        assert set(rows["target_id"]) == {ex.model_identity(hub["originals"][rev])}
        base = rows[rows["kind"] == "baseline"]
        assert len(base) == 1
        assert base["ppl"].iloc[0] == pytest.approx(perplexity_of(hub["originals"][rev], sweep_run["data"]), rel=1e-5)
        for _, row in rows[rows["kind"] == "config"].iterrows():
            expected = perplexity_of(hub["originals"][rev], sweep_run["data"], window=row["cache.window"])
            assert row["ppl"] == pytest.approx(expected, rel=1e-5)
            assert row["ppl_delta"] == pytest.approx(row["ppl"] / base["ppl"].iloc[0] - 1)
    ids_main, ids_step = (set(df[df["target_revision"] == r]["target_id"]) for r in ("main", "step1000"))
    assert ids_main.isdisjoint(ids_step)
    # the same weights under another name (the commit hash) are the same identity but another row
    df2 = ex.run_sweep({"model.revision": [hub["commits"]["step1000"]], "cache.policy": ["window"],
                        "cache.window": [16]}, out=tmp_path / "sweep", progress=False, **sweep_run)
    assert set(df2["target_id"]) == ids_step and bool(df2["ppl_reused"].all())
    assert not set(df2["key"]) & set(df["key"])


def test_run_revision_and_draft_revisions(hub: dict, tmp_path: Path, sweep_run: dict) -> None:
    from specstream import experiments as ex

    fixed = ex.run_sweep({"cache.window": [16], "cache.policy": ["window"]}, out=tmp_path / "fixed", progress=False,
                         **dict(sweep_run, revision="step1000"))
    assert set(fixed["target_id"]) == {ex.model_identity(hub["originals"]["step1000"])}
    assert set(fixed["target_revision"]) == {"step1000"}
    # the draft's checkpoints as an axis: a draft identical to the target accepts every greedy token
    df = ex.run_sweep({"model.draft_revision": ["main", "step1000"], "speculative.k": [3],
                       "generation.prompt_tokens": [8], "generation.max_new_tokens": [12]},
                      out=tmp_path / "drafts", progress=False, measure=["generate"], **dict(sweep_run, draft=REPO))
    by_rev = df.set_index("model.draft_revision")
    assert by_rev.loc["main", "draft_id"] == by_rev.loc["main", "target_id"]
    assert by_rev.loc["step1000", "draft_id"] == ex.model_identity(hub["originals"]["step1000"])
    assert by_rev.loc["main", "acceptance_rate"] == 1.0
    assert by_rev.loc["step1000", "acceptance_rate"] < 1.0
    assert by_rev["tokens_sha"].nunique() == 1  # greedy speculative output is the target's either way


def test_sweeps_check_revisions_before_running(hub: dict, tmp_path: Path, sweep_run: dict) -> None:
    from specstream import experiments as ex

    bad = [
        ({"model.revision": ["main", "step2000"]}, {}, "model.revision", "'step2000'"),
        ({"model.revision": ["step1000"]}, {"revision": "main"}, "model.revision", "give the revision in one place"),
        ({"cache.window": [16]}, {"revision": "step2000"}, "run.revision", "not in the cache"),
        ({"cache.window": [16]}, {"target": "EleutherAI/pythia-nope"}, "run.target", "not cached at all"),
        ({"cache.window": [16]}, {"target": "not/an/id"}, "run.target", "not a Hugging Face repo id"),
        ({"model.revision": ["main"]}, {"target": str(hub["originals"]["main"])}, "model.revision",
         "is a local directory"),
        ({"model.draft_revision": ["main"]}, {}, "model.draft_revision", "no run.draft"),
        ({"cache.window": [16]}, {"draft_revision": "main"}, "run.draft_revision", "no run.draft"),
        ({"cache.window": [16]}, {"target": "default", "revision": "main"}, "run.revision", "no revisions"),
    ]
    for grid, run, field, words in bad:
        with pytest.raises(ex.GridError) as info:
            ex.run_sweep(grid, out=tmp_path / "out", progress=False, **dict(sweep_run, **run))
        assert info.value.field == field and words in str(info.value), (grid, run, str(info.value))
    assert not (tmp_path / "out").exists()


def test_sweep_file_with_ids_and_revisions(hub: dict, tmp_path: Path, sweep_run: dict) -> None:
    from specstream import experiments as ex

    (tmp_path / "sweep.toml").write_text(f"""
[run]
target = "{REPO}"
draft = "{REPO}"
draft_revision = "step1000"
data = "{sweep_run['data']}"
tokens = 48
repeats = 1
save_nll = false

[grid]
"model.revision" = ["main", "step1000"]
"speculative.k" = [2]
"generation.prompt_tokens" = [8]
"generation.max_new_tokens" = [8]
""")
    r = cli("sweep", str(tmp_path / "sweep.toml"), "--out", str(tmp_path / "out"), "--no-progress")
    assert r.returncode == 0, r.stderr
    df = ex.load_results(tmp_path / "out")
    configs = df[df["kind"] == "config"].set_index("model.revision")
    assert len(df) == 4 and df["key"].is_unique
    assert set(df["draft_revision"].dropna()) == {"step1000"}
    for rev in ("main", "step1000"):
        assert configs.loc[rev, "target_id"] == ex.model_identity(hub["originals"][rev])
        assert configs.loc[rev, "draft_id"] == ex.model_identity(hub["originals"]["step1000"])
    assert configs.loc["step1000", "acceptance_rate"] == 1.0  # the draft is the target
    r = cli("sweep", str(tmp_path / "sweep.toml"), "--out", str(tmp_path / "out"), "--dry-run")
    assert r.returncode == 0 and "revision=main" in r.stdout and "revision=step1000" in r.stdout
