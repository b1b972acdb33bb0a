"""specstream: speculative decoding + StreamingLLM KV caches for GPT-NeoX models.

A C core runs every per-token loop; Python describes experiments::

    import specstream
    model = specstream.load("path/to/pythia-410m", dtype="bf16")
    out = model.generate(ids, max_new_tokens=64,
                         cache=specstream.CacheConfig(policy="streaming", n_sink=4, window=508))
"""

import os as _os

# OpenMP threads that spin at barriers steal the core from whoever else needs
# it; on a shared or oversubscribed machine that turns microsecond barriers
# into scheduler time slices (100x slower decoding was measured). Spin briefly,
# then sleep, unless the user chose a policy. Must precede loading the core.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "1000")

from . import _core  # noqa: E402
from .config import ModelConfig
from .generation import CacheConfig, GenerationResult, GenerationStats, SpeculativeConfig
from . import eval
from .defaults import default_text, load_default, load_default_medusa
from .model import Model, TokenStream, load
from .medusa import MedusaHeads, load_medusa
from .tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = [
    "load",
    "load_default",
    "load_default_medusa",
    "default_text",
    "Model",
    "Tokenizer",
    "ModelConfig",
    "CacheConfig",
    "SpeculativeConfig",
    "GenerationResult",
    "GenerationStats",
    "TokenStream",
    "MedusaHeads",
    "load_medusa",
    "cpu_kernels",
    "set_num_threads",
    "get_num_threads",
]


def cpu_kernels() -> str:
    """The SIMD kernel variant chosen for this CPU at run time."""
    return _core.cpu_kernels()


def set_num_threads(n: int) -> None:
    """Number of threads the C core uses (default: OpenMP's, i.e. all cores)."""
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """Number of threads the C core uses."""
    return _core.get_num_threads()
