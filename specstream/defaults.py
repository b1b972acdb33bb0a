"""The bundled default models and evaluation texts.

The package ships a small GPT-NeoX pair trained for this project (see
``scripts/train_default_models.py`` and the MODEL_CARD.md in each directory):

- ``default_models/target``: 6 layers, d_model 256, ~8.9M parameters;
- ``default_models/draft``: 2 layers, d_model 128, ~2.5M parameters, distilled
  from the target;

both with the same 8192-entry byte-level BPE tokenizer (GPT-NeoX family), and
the two held-out texts they were evaluated on (never trained on):

- ``"pg2554"``: Crime and Punishment (Project Gutenberg eBook #2554, public domain);
- ``"wikitext-2-test"``: the WikiText-2 raw test split (CC BY-SA 3.0, Merity et al., 2016).

::

    target, draft, tok = specstream.load_default()
    ids = tok.encode(specstream.defaults.default_text("pg2554")[:2000])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from .model import Model, load

__all__ = ["load_default", "default_text", "default_text_path", "default_model_dir", "BUNDLED_TEXTS",
           "DEFAULT_MODELS"]

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
