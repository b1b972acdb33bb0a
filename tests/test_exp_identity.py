"""specstream.experiments.identity: configuration hashes, model identities
and the code version that go into every row key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import specstream
from specstream import CacheConfig
from specstream import experiments as ex
from specstream.experiments import identity as ex_identity
from specstream.models import create_random

from exp_support import ROOT


def test_code_version_has_the_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPECSTREAM_CODE_VERSION", raising=False)
    v = ex.code_version()
    assert v.startswith(specstream.__version__)
    if (ROOT / ".git").exists() and (ROOT / "specstream").resolve() == Path(specstream.__file__).resolve().parent:
        assert "+g" in v


def test_config_hash_is_the_sha256_of_canonical_json() -> None:
    expected = hashlib.sha256(b'{"a":1,"b":[1.5,2],"c":{"d":true}}').hexdigest()
    # key order, tuples vs lists and numpy scalars do not change the hash
    assert ex_identity.config_hash({"c": {"d": np.bool_(True)}, "b": (np.float32(1.5), 2), "a": np.int64(1)}) \
        == expected
    assert ex_identity.config_hash({"a": 1, "b": [1.5, 2], "c": {"d": True}}) == expected
    assert ex_identity.config_hash({"a": 2, "b": [1.5, 2], "c": {"d": True}}) != expected
    # a dataclass hashes as the dict of its fields
    assert ex_identity.config_hash(CacheConfig(window=64)) == \
        ex_identity.config_hash(dataclasses.asdict(CacheConfig(window=64)))


SHAPE = dict(n_layer=1, d_model=16, n_head=2, d_ff=32, vocab_size=64)


def test_model_identity_follows_config_and_weight_bytes(tmp_path: Path) -> None:
    a = create_random(SHAPE, tmp_path / "a", seed=1)
    same = create_random(SHAPE, tmp_path / "same", seed=1)
    other_weights = create_random(SHAPE, tmp_path / "other", seed=2)
    assert ex.model_identity(a) == ex.model_identity(same)  # the path does not matter, the bytes do
    assert ex.model_identity(a) != ex.model_identity(other_weights)
    cfg = json.loads((same / "config.json").read_text())
    cfg["layer_norm_eps"] = 1e-3
    (same / "config.json").write_text(json.dumps(cfg))
    assert ex.model_identity(a) != ex.model_identity(same)  # a config-only change


def test_model_identity_reads_through_symlinks(tmp_path: Path) -> None:
    # a Hugging Face cache snapshot: file names link into a blob store
    real = create_random(SHAPE, tmp_path / "real", seed=1)
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshot"
    blobs.mkdir()
    snapshot.mkdir()
    for i, f in enumerate(sorted(real.iterdir())):
        blob = blobs / f"blob{i}"
        blob.write_bytes(f.read_bytes())
        (snapshot / f.name).symlink_to(blob)
    assert ex.model_identity(snapshot) == ex.model_identity(real)


def test_model_identity_needs_a_config(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ex.model_identity(tmp_path)
