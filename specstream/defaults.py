"""The bundled default models and evaluation texts.

The package ships a small GPT-NeoX pair trained for this project (see
``scripts/train_default_models.py`` and the MODEL_CARD.md in each directory):

- ``default_models/target``: 6 layers, d_model 256, ~8.9M parameters;
- ``default_models/draft``: 2 layers, d_model 128, ~2.5M parameters, distilled
  from the target;
- ``default_models/medusa/heads.safetensors``: three Medusa heads for the
  target, trained with it frozen (``scripts/train_medusa.py``);

both with the same 8192-entry byte-level BPE tokenizer (GPT-NeoX family), and
the two held-out texts they were evaluated on (never trained on):

- ``"pg2554"``: Crime and Punishment (Project Gutenberg eBook #2554, public domain);
- ``"wikitext-2-test"``: the WikiText-2 raw test split (CC BY-SA 3.0, Merity et al., 2016).

::

    target, draft, tok = specstream.load_default()
    ids = tok.encode(specstream.defaults.default_text("pg2554")[:2000])
    heads = specstream.defaults.load_default_medusa(target)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from .model import Model, load

if TYPE_CHECKING:
    from .medusa import MedusaHeads

__all__ = ["load_default", "load_default_medusa", "default_text", "default_text_path", "default_model_dir",
           "default_medusa_path", "BUNDLED_TEXTS", "DEFAULT_MODELS"]

_PKG = Path(__file__).resolve().parent
_MODELS_DIR = _PKG / "default_models"
_DATA_DIR = _PKG / "data"

#: Names accepted by :func:`default_text` -> file name under ``specstream/data``.
BUNDLED_TEXTS: dict[str, str] = {
    "pg2554": "pg2554.txt",
    "wikitext-2-test": "wikitext-2-test.txt",
}

#: Names accepted by :func:`default_model_dir`.
DEFAULT_MODELS = ("target", "draft")

_ALIASES = {
    "crime-and-punishment": "pg2554",
    "pg2554.txt": "pg2554",
    "wikitext-2": "wikitext-2-test",
    "wikitext2-test": "wikitext-2-test",
    "wikitext-2-test.txt": "wikitext-2-test",
}


def default_model_dir(name: str = "target") -> Path:
    """Directory of a bundled model: ``"target"`` or ``"draft"``."""
    if name not in DEFAULT_MODELS:
        raise ValueError(f"unknown default model {name!r}: expected one of {list(DEFAULT_MODELS)}")
    path = _MODELS_DIR / name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: the bundled {name} model is missing (is the package data installed? "
            "re-create it with scripts/train_default_models.py)")
    return path


def _text_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"text name must be a str, got {type(name).__name__}")
    key = _ALIASES.get(name, name)
    if key not in BUNDLED_TEXTS:
        raise ValueError(f"unknown bundled text {name!r}: expected one of {sorted(BUNDLED_TEXTS)}")
    return key


def default_text_path(name: str) -> Path:
    """Path of a bundled evaluation text (``"pg2554"`` or ``"wikitext-2-test"``)."""
    path = _DATA_DIR / BUNDLED_TEXTS[_text_name(name)]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: bundled text missing (is the package data installed?)")
    return path


def default_text(name: str) -> str:
    """Contents of a bundled evaluation text (``"pg2554"`` or ``"wikitext-2-test"``).

    Both are held out from the training of the default models. Licences:
    ``specstream/data/NOTICE``.
    """
    return default_text_path(name).read_text(encoding="utf-8")


class _HFTokenizer:
    """Fallback used only while ``specstream.Tokenizer`` is unavailable:
    wraps Hugging Face ``tokenizers`` with the same encode/decode surface."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as _Tok  # optional dependency

        self._tok = _Tok.from_file(str(path))
        self.path = path

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def get_vocab(self) -> dict[str, int]:
        return self._tok.get_vocab()

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text).ids, dtype=np.int32)

    def decode(self, ids: Any) -> str:
        return self._tok.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"<tokenizer (HF fallback) {self.path}>"


def _load_tokenizer(path: Path) -> Any:
    try:
        from .tokenizer import Tokenizer  # type: ignore[attr-defined]
    except ImportError:
        Tokenizer = None
    if Tokenizer is not None:
        return Tokenizer.from_file(str(path))
    try:
        return _HFTokenizer(path)
    except ImportError as e:
        raise ImportError("no tokenizer available: specstream.tokenizer is missing and the fallback "
                          "needs the 'tokenizers' package") from e


def load_default(dtype: str = "f32", tokenizer: bool = True) -> tuple[Model, Model, Optional[Any]]:
    """Loads the bundled pair: returns ``(target, draft, tokenizer)``.

    ``dtype`` is passed to :func:`specstream.load` for both models (weights are
    stored as f16; "f32" computes in f32 from them exactly). The tokenizer is
    shared by both models and attached as ``model.tokenizer`` when
    :func:`specstream.load` did not attach one.
    """
    target = load(default_model_dir("target"), dtype=dtype)
    draft = load(default_model_dir("draft"), dtype=dtype)
    tok = None
    if tokenizer:
        tok = getattr(target, "tokenizer", None) or _load_tokenizer(default_model_dir("target") / "tokenizer.json")
        for m in (target, draft):
            if getattr(m, "tokenizer", None) is None:
                m.tokenizer = tok
    return target, draft, tok


def default_medusa_path() -> Path:
    """Path of the Medusa heads shipped for the bundled target."""
    path = _MODELS_DIR / "medusa" / "heads.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the bundled Medusa heads are missing (is the package data installed? "
            "re-create them with scripts/train_medusa.py)")
    return path


def load_default_medusa(target: Optional[Model] = None) -> "MedusaHeads":
    """Loads the Medusa heads shipped for the bundled target (three heads;
    head i proposes the token i + 2 places after the last verified one).

    ``target`` is the bundled target as loaded by :func:`load_default` (any
    dtype); when None it is loaded (f32). The heads are bound to that target
    object: pass it as ``draft`` to that model's ``generate`` with
    ``SpeculativeConfig(method="medusa", k=heads.n_heads, ...)``::

        target, _, tok = specstream.load_default()
        heads = specstream.defaults.load_default_medusa(target)
        out = target.generate(ids, 64, draft=heads,
                              speculative=SpeculativeConfig(method="medusa", k=3, branch=1, max_nodes=3))

    On this tiny target Medusa does not pay for itself on a CPU (see
    benchmarks/results/train_medusa.json): the heads are for tests and
    experiments on the method.
    """
    from .medusa import load_medusa

    path = default_medusa_path()
    if target is None:
        target = load(default_model_dir("target"))
    elif not isinstance(target, Model):
        raise TypeError(f"target must be a specstream Model (the bundled target), got {type(target).__name__}")
    elif target.path is not None and Path(target.path).resolve() != default_model_dir("target").resolve():
        _check_same_weights(path, Path(target.path))
    return load_medusa(path, target)


def _check_same_weights(heads_path: Path, target_dir: Path) -> None:
    """The heads record the digest of the target weights they were trained
    on; a model loaded from elsewhere must have the same weights file."""
    import hashlib

    from . import safetensors as _st

    want = _st.read_header(heads_path).metadata.get("target_model_sha256")
    weights = target_dir / "model.safetensors"
    if want and weights.is_file() and hashlib.sha256(weights.read_bytes()).hexdigest() != want:
        raise ValueError(f"{target_dir} is not the bundled target (its model.safetensors differs from the one "
                         f"the default Medusa heads were trained for)")
