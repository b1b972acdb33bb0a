"""What makes two measurements the same: canonical hashes of configurations,
the identity of a model directory (config and weight bytes) and the version
of the code that measured.

Every row key of the result store is a hash built from these, so a row is
recomputed exactly when something that can change its numbers changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

#: The ``specstream`` package directory (where ``git`` looks for a checkout).
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def canonical(obj: Any) -> Any:
    """JSON-ready canonical form (dataclasses -> dicts, tuples -> lists,
    numpy scalars -> Python, paths -> strings)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (key order does not matter)."""
    return hashlib.sha256(json.dumps(canonical(obj), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# (resolved directory, (name, size, mtime) of its files) -> identity: hashing
# gigabytes of weights once per process is enough while the files are unchanged
_IDENTITY_CACHE: dict[tuple, str] = {}


def _file_digest(path: Path, full_limit: int = 256 << 20, part: int = 8 << 20) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(f"{path.name}:{size}:".encode())
    with open(path, "rb") as f:
        if size <= full_limit:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:  # very large files: both ends plus the size
            h.update(f.read(part))
            f.seek(size - part)
            h.update(f.read(part))
    return h.hexdigest()


def model_identity(path: PathLike) -> str:
    """sha256 over a model directory's config.json, weight files and
    tokenizer.json (weights over 256 MiB: size plus both ends). Files are
    read through symlinks, so a Hugging Face cache snapshot (whose files
    link into its blob store) has the identity of its contents."""
    d = Path(path)
    files = sorted(p for p in d.iterdir() if p.is_file() and (
        p.name in ("config.json", "tokenizer.json") or p.suffix == ".safetensors"
        or p.name.endswith(".safetensors.index.json")))
    if not any(p.name == "config.json" for p in files):
        raise FileNotFoundError(f"{d}: no config.json (not a model directory)")
    sig = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (str(d.resolve()), sig)
    if key not in _IDENTITY_CACHE:
        h = hashlib.sha256()
        for p in files:
            h.update(_file_digest(p).encode())
        _IDENTITY_CACHE[key] = h.hexdigest()
    return _IDENTITY_CACHE[key]


_GIT_INFO: Optional[tuple] = None


def code_version() -> str:
    """Package version plus the git commit when the package runs from a git
    checkout (``0.1.0+g1a2b3c4d5e6f``); ``SPECSTREAM_CODE_VERSION`` overrides."""
    env = os.environ.get("SPECSTREAM_CODE_VERSION")
    if env:
        return env
    return git_info()[0]


def git_info() -> tuple:
    """(code version, whether the checkout has uncommitted changes, or None
    when unknown); asked of git once per process."""
    global _GIT_INFO
    if _GIT_INFO is None:
        from .. import __version__

        version, dirty = __version__, None
        try:
            top = subprocess.run(["git", "-C", str(_PACKAGE_DIR), "rev-parse", "--show-toplevel"],
                                 capture_output=True, text=True, timeout=10)
            # only our own checkout, not a repository that happens to contain site-packages
            if top.returncode == 0 and (Path(top.stdout.strip()) / "specstream").resolve() == _PACKAGE_DIR:
                head = subprocess.run(["git", "-C", str(_PACKAGE_DIR), "rev-parse", "HEAD"], capture_output=True,
                                      text=True, timeout=10)
                if head.returncode == 0:
                    version = f"{version}+g{head.stdout.strip()[:12]}"
                    st = subprocess.run(["git", "-C", str(_PACKAGE_DIR), "status", "--porcelain",
                                         "--untracked-files=no"], capture_output=True, text=True, timeout=30)
                    dirty = bool(st.stdout.strip()) if st.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            pass
        _GIT_INFO = (version, dirty)
    return _GIT_INFO
