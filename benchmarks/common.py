"""Shared pieces of the benchmark scripts: machine description, model cache,
atomic JSON results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import specstream
from specstream._atomic import write_text_atomic

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MODELS = Path(os.environ.get("SPECSTREAM_BENCH_MODELS", HERE / ".models"))


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, kernels and thread count of this run."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                                text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": mem,
        "kernels": specstream.cpu_kernels(),
        "threads": specstream.get_num_threads(),
        "python": platform.python_version(),
        "specstream_commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average": os.getloadavg(),
    }


def random_model(shape: str, dtype: str = "f32", seed: int = 0) -> Path:
    """A random Pythia-shape model directory, created once and reused."""
    from specstream.models import create_random

    path = MODELS / f"{shape}-{dtype}-s{seed}"
    if not (path / "config.json").exists():
        create_random(shape, path, seed=seed, dtype=dtype)
    return path


def save_json(name: str, doc: dict[str, Any]) -> Path:
    """Writes results/NAME atomically and returns its path."""
    path = RESULTS / name
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")
    return path
