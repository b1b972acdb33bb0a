"""Medusa heads (Cai et al. 2024): extra decoding heads on a target model's
last hidden state that propose the tokens two, three, ... places ahead.

A heads file is a safetensors file with, for head ``i = 0, 1, ...``:

- ``medusa.{i}.w`` [d_model, d_model] and ``medusa.{i}.b`` [d_model]: the
  residual block ``x + SiLU(w x + b)`` on the target's final hidden state
  (after its final LayerNorm);
- ``medusa.{i}.lm_head`` [vocab_rows, d_model] (optional): the head's own
  unembedding; without it the head shares the target's ``embed_out``, so all
  heads cost one read of it per step.

Use them with ``generate(..., draft=heads, speculative=SpeculativeConfig(
method="medusa", k=n_heads, branch=..., max_nodes=...))``. Verification is
the lossless rule (the Medusa paper's "typical acceptance" is not), so the
output is the target's own. ``scripts/train_medusa.py`` trains heads for a
frozen target; the bundled target ships with heads
(``specstream.load_default_medusa()``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np

from . import _core
from . import safetensors as _st
from .model import Model

__all__ = ["MedusaHeads", "load_medusa", "save_medusa"]

PathLike = Union[str, "os.PathLike[str]"]


class MedusaHeads:
    """Medusa heads bound to one target model (``load_medusa``)."""

    def __init__(self, core: "_core.MedusaHeads", target: Model, path: Path | None) -> None:
        self._core = core
        self.target = target
        self.path = path

    @property
    def n_heads(self) -> int:
        """Number of heads: the deepest tree they can propose."""
        return int(self._core.n_heads)

    @property
    def weight_bytes(self) -> int:
        """Bytes of head weights read per step (their residual blocks)."""
        d = self.target.config.d_model
        return self.n_heads * (d * d + d) * 4

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        """Logits [n_heads, vocab] of every head for one final hidden state."""
        return self._core.logits(np.ascontiguousarray(hidden, np.float32))

    def __repr__(self) -> str:
        return f"MedusaHeads({str(self.path) if self.path else '<memory>'!r}, heads={self.n_heads})"


def load_medusa(path: PathLike, target: Model) -> MedusaHeads:
    """Loads Medusa heads for ``target`` from a safetensors file (layout in
    this module's docstring). Shapes that disagree with the target's hidden
    size or vocabulary raise a ValueError naming the head and tensor."""
    if not isinstance(target, Model):
        raise TypeError(f"target must be a specstream Model, got {type(target).__name__}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such Medusa heads file")
    tensors = {name: np.ascontiguousarray(a) for name, a in _st.load(p).items()}
    return MedusaHeads(_core.MedusaHeads(target._core, tensors), target, p)


def save_medusa(path: PathLike, heads: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Writes heads (``medusa.{i}.w``/``b``/optional ``lm_head`` arrays) as a
    float32 safetensors file, atomically."""
    _st.save({k: np.ascontiguousarray(v, np.float32) for k, v in heads.items()}, path, metadata=metadata)
