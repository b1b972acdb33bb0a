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
