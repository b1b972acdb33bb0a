"""Experiments: ablation grids over every switch, a resumable runner and a
JSONL result store.

A *grid* maps dotted field paths to lists of values::

    {"cache.policy": ["streaming"],
     "cache.compress_every": [1, 16, 32, 64],
     "cache.max_drop": [None, 256],
     "speculative.k": [2, 4],
     "generation.temperature": [0.0]}

The sections are ``cache`` (:class:`~specstream.CacheConfig`), ``speculative``
(:class:`~specstream.SpeculativeConfig`), ``generation``
(:class:`GenerationSettings`) and ``model`` (:class:`ModelSettings`: the
revisions of the target and draft, e.g. Pythia's training checkpoints
``"model.revision": ["step1000", "step143000"]`` when ``run.target`` is a
Hugging Face repo id); the fields are read from the dataclasses, so every
switch added to them is sweepable at once. A grid is validated before
anything runs: an unknown field, a value of the wrong type, an empty axis or
a combination the config classes reject raises :class:`GridError` naming the
field.

For each configuration the runner measures what the protocol asks for
(TPOT, TTFT, total and prefill time, PPL, peak memory; median of
``repeats`` runs):

- ``"ppl"``: :func:`specstream.eval.perplexity` of the data slice streamed
  token by token through the cache: PPL, its relative change against the
  full-cache baseline of the same model and slice (``ppl_delta``; the
  baseline is measured once per target checkpoint and stored as its own
  row, ``kind="baseline"``),
  timings, KV bytes, peak RSS, evictions and the keys each token saw;
- ``"generate"``: generation after a prompt taken from the slice, with the
  draft when one is given: tokens/s, TPOT, TTFT, acceptance rate, mean
  accepted length and the speedup over target-only decoding timed in the
  same run.

Every finished row is appended to a JSONL file as one ``write`` of one line,
flushed and fsynced, under a file lock. Rows are keyed by a hash of the full
configuration, the model identity (config and weight bytes), the data slice
(its token ids), the measurement settings and the code version (package
version + git commit; ``SPECSTREAM_CODE_VERSION`` overrides it), so a killed
or extended sweep resumes where it stopped and never recomputes a row.
Results load as a pandas DataFrame with :func:`load_results`.

Python::

    from specstream import experiments as ex
    df = ex.run_sweep({"cache.policy": ["streaming"], "cache.window": [128, 256],
                       "speculative.k": [2, 4]},
                      target="default", draft="default", data="wikitext-2-test",
                      tokens=512, repeats=2, out="sweeps/demo")

Command line (the sweep file's ``[run]`` table holds the keyword arguments,
``[grid]`` the grid; TOML has no null, so write ``"none"`` for None)::

    python -m specstream sweep examples/sweep_default.toml --out sweeps/demo [--shard I/N]
    python -m specstream merge sweeps/demo
    python -m specstream plot sweeps/demo/results.jsonl --out figs/

Shards (``--shard I/N``, or ``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT``)
take every N-th configuration and write ``results.shard-I-of-N.jsonl``;
``merge`` unites them into ``results.jsonl`` without duplicates.
``--executor slurm`` submits the shards as a Slurm job array via submitit.
"""

from .cli import cmd_merge, cmd_plot, cmd_sweep, register_cli
from .grid import SECTIONS, Grid, GridError, Point, grid_fields
from .identity import code_version, model_identity
from .runner import Runner, parse_shard, run_sweep, run_sweep_obj
from .settings import GenerationSettings, ModelSettings
from .slurm import submit_slurm
from .spec import RunSpec, Sweep
from .store import RESULTS_FILE, SCHEMA, TIMING_COLUMNS, ResultStore, comparable, load_results, merge, shard_file

__all__ = [
    "GridError",
    "GenerationSettings",
    "ModelSettings",
    "SECTIONS",
    "grid_fields",
    "Grid",
    "Point",
    "RunSpec",
    "Sweep",
    "ResultStore",
    "Runner",
    "run_sweep",
    "run_sweep_obj",
    "load_results",
    "merge",
    "comparable",
    "code_version",
    "model_identity",
    "parse_shard",
    "shard_file",
    "submit_slurm",
    "register_cli",
    "cmd_sweep",
    "cmd_merge",
    "cmd_plot",
    "TIMING_COLUMNS",
    "RESULTS_FILE",
    "SCHEMA",
]
