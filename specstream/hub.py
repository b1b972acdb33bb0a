"""Models by Hugging Face repo id, from the local Hugging Face cache.

``specstream.load("EleutherAI/pythia-160m", revision="step1000")`` loads the
snapshot that ``huggingface_hub`` keeps for that repo and revision. Pythia's
training checkpoints are branches named ``step1000`` ... ``step143000``; a
revision may also be a tag or a full commit hash.

The rule is offline: a repo id is looked up in the cache only, and nothing
touches the network unless ``download=True`` is passed. The cache is the one
``huggingface_hub`` uses (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
``~/.cache/huggingface/hub``), read from the environment at each call.
``huggingface_hub`` is imported only to resolve a repo id: loading a local
directory never needs it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

__all__ = ["resolve_model_dir", "is_repo_id", "hub_cache_dir", "MODEL_FILES"]

PathLike = Union[str, "os.PathLike[str]"]

#: The files of a repo a model needs (what ``download=True`` fetches; Pythia
#: repos also hold PyTorch .bin weights, several GB that are never read here).
MODEL_FILES = ("config.json", "tokenizer.json", "*.safetensors", "*.safetensors.index.json")


def _expand(path: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(path)))


def hub_cache_dir() -> Path:
    """The Hugging Face cache directory, by huggingface_hub's rules, read from
    the environment now (huggingface_hub itself reads it once, at import, so a
    variable set later would otherwise be ignored)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):  # the second is the legacy name
        if os.environ.get(var):
            return _expand(os.environ[var])
    if os.environ.get("HF_HOME"):
        return _expand(os.environ["HF_HOME"]) / "hub"
    if os.environ.get("XDG_CACHE_HOME"):
        return _expand(os.environ["XDG_CACHE_HOME"]) / "huggingface" / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def resolve_model_dir(id_or_path: PathLike, revision: Optional[str] = None, download: bool = False,
                      cache_dir: Optional[PathLike] = None) -> Path:
    """The model directory ``id_or_path`` names.

    An existing local directory is returned as it is (``revision`` must then
    be None). Any other string is a Hugging Face repo id (``"org/name"``),
    resolved in the cache (``cache_dir``, default :func:`hub_cache_dir`) at
    ``revision`` (a branch, tag or full commit hash; None: ``main``); the
    result is the snapshot directory. With ``download=True`` a revision
    missing from the cache is fetched from the Hub first (only the files a
    model needs, :data:`MODEL_FILES`); without it nothing touches the network.

    Raises FileNotFoundError naming the id, the revision and the cache
    searched when the revision is not cached, or saying that ``id_or_path``
    is neither a directory nor a repo id; ValueError for a revision given
    with a local directory.
    """
    if not isinstance(id_or_path, (str, os.PathLike)):
        raise TypeError(f"a model is a directory or a Hugging Face repo id (str), got {id_or_path!r}")
    if revision is not None and not isinstance(revision, str):
        raise TypeError(f"revision must be a str (branch, tag or commit hash) or None, got {revision!r}")
    if revision is not None and not revision.strip():
        raise ValueError("revision is empty: give a branch, tag or commit hash, or None for 'main'")
    if not isinstance(download, bool):
        raise TypeError(f"download must be True or False, got {download!r}")
    path = Path(id_or_path)
    if path.is_dir():
        if revision is not None:
            raise ValueError(f"{path} is a local directory: revision={revision!r} only applies to a Hugging Face "
                             "repo id")
        return path
    if path.exists():
        raise FileNotFoundError(f"{path}: no such model directory (a file, not a directory)")
    if not isinstance(id_or_path, str):
        raise FileNotFoundError(f"{path}: no such model directory")
    repo_id = id_or_path
    try:
        import huggingface_hub
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # a dependency, but only this path needs it
        raise FileNotFoundError(f"{repo_id!r}: no such model directory (to load it as a Hugging Face repo id, "
                                "install huggingface_hub)") from None
    if not is_repo_id(repo_id):
        raise FileNotFoundError(f"{repo_id!r}: no such model directory, and not a Hugging Face repo id "
                                "(those look like 'org/name')")
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    try:
        snapshot = huggingface_hub.snapshot_download(repo_id, revision=revision, cache_dir=str(cache),
                                                     local_files_only=not download,
                                                     allow_patterns=list(MODEL_FILES))
    except LocalEntryNotFoundError:
        if download:  # huggingface_hub's own message says why the Hub could not be asked
            raise
        raise FileNotFoundError(
            f"{repo_id!r}: no such model directory, and revision {revision or 'main'!r} of the Hugging Face repo "
            f"{repo_id!r} is not in the cache {cache} ({_cached_revisions(repo_id, cache)}). "
            "Nothing is downloaded unless asked: pass download=True (command line: --download), or fetch it "
            "with `huggingface-cli download`") from None
    return Path(snapshot)


def is_repo_id(text: str) -> bool:
    """Whether ``text`` has the form of a Hugging Face repo id (``"name"`` or
    ``"org/name"``), by huggingface_hub's rules; says nothing about the cache."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _cached_revisions(repo_id: str, cache: Path) -> str:
    """What the cache holds of ``repo_id``, for error messages."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache)
    except CacheNotFound:
        return "the cache directory does not exist"
    for repo in info.repos:
        if repo.repo_id == repo_id and repo.repo_type == "model":
            names = sorted(", ".join(sorted(r.refs)) + f" = {r.commit_hash[:12]}" if r.refs else r.commit_hash
                           for r in repo.revisions)
            return "cached revisions: " + "; ".join(names) if names else "no revision of it is cached"
    return "the repo is not cached at all"
