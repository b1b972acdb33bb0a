"""Slurm: a sweep submitted as a job array with submitit, one shard per
array task, all writing into one sweep directory (merged afterwards)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from .grid import GridError
from .identity import PathLike
from .runner import run_sweep_obj
from .spec import Sweep
from .store import merge


def _run_shard_job(doc: dict, out: str, i: int, n: int) -> int:
    """Body of one Slurm array task (must be importable: submitit pickles it)."""
    sweep = Sweep.from_dict(doc)
    rows = run_sweep_obj(sweep, out, shard=(i, n), progress=False)
    return len(rows)


def submit_slurm(doc: Mapping[str, Any], out: PathLike, shards: int, params: Optional[Mapping[str, Any]] = None,
                 cluster: Optional[str] = None, wait: bool = False) -> list:
    """Submits a sweep (its dict form, as read from TOML) as a Slurm job
    array of ``shards`` tasks with submitit; each task runs its shard into
    ``out``. ``params`` go to ``executor.update_parameters`` (e.g.
    ``timeout_min``, ``slurm_partition``, ``gpus_per_node``,
    ``slurm_array_parallelism``). ``cluster``: submitit's cluster (None:
    auto; "debug" runs in this process). With ``wait``, waits and merges.
    """
    try:
        import submitit  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError("--executor slurm needs the 'submitit' package (pip install submitit); "
                           "or run each shard yourself with --shard I/N / a Slurm array") from None
    Sweep.from_dict(doc).validate()  # fail here, not on the cluster
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise GridError("--shards", f"must be a positive integer, got {shards!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ex = submitit.AutoExecutor(folder=str(out / "slurm" / "%j"), cluster=cluster)
    p = {"timeout_min": 60, "name": "specstream-sweep"}
    p.update(params or {})
    ex.update_parameters(**p)
    docs = [dict(doc)] * shards
    jobs = ex.map_array(_run_shard_job, docs, [str(out)] * shards, list(range(shards)), [shards] * shards)
    if wait:
        for j in jobs:
            j.result()
        merge(out)
    return jobs
