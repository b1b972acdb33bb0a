"""The ``sweep``, ``merge`` and ``plot`` commands of ``python -m specstream``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from .grid import grid_fields
from .identity import PathLike
from .runner import parse_shard, run_sweep_obj
from .slurm import submit_slurm
from .spec import Sweep, measures, read_toml
from .store import RESULTS_FILE, load_results, merge, shard_file

def register_cli(sub: Any) -> None:
    """Adds the ``sweep``, ``merge`` and ``plot`` subcommands to an argparse
    subparsers object (used by ``python -m specstream``)."""
    s = sub.add_parser("sweep", help="run an ablation grid from a TOML sweep file (resumable)",
                       description="Runs the grid of a sweep file ([run] + [grid] tables) and appends one JSONL "
                                   "row per configuration to OUT/results.jsonl (or the shard's file); rerunning "
                                   "resumes. Fields: " + ", ".join(grid_fields()))
    s.add_argument("grid", help="sweep file (TOML)")
    s.add_argument("--out", required=True, help="sweep directory")
    s.add_argument("--shard", default=None, help="I/N: run every N-th configuration from the I-th (0-based); "
                                                 "default from SLURM_ARRAY_TASK_ID/COUNT, else 0/1")
    s.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local: run here; slurm: submit a job array with submitit")
    s.add_argument("--shards", type=int, default=None, help="array tasks for --executor slurm "
                                                            "(default: [slurm] shards, else min(configs, 16))")
    s.add_argument("--wait", action="store_true", help="with --executor slurm: wait for the array, then merge")
    s.add_argument("--dry-run", action="store_true", help="validate and list the configurations, run nothing")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sweep)

    m = sub.add_parser("merge", help="unite a sweep directory's shard files into results.jsonl")
    m.add_argument("dir")
    m.add_argument("--out", default=None, help="merged file (default: DIR/results.jsonl)")
    m.set_defaults(func=cmd_merge)

    p = sub.add_parser("plot", help="Pareto fronts, acceptance vs k and recommended configurations")
    p.add_argument("results", help="results.jsonl or a sweep directory")
    p.add_argument("--out", required=True, help="figure directory (pareto*.png)")
    p.set_defaults(func=cmd_plot)


def cmd_sweep(args: Any) -> int:
    """``sweep``: validates a sweep file, then runs it here (one shard) or submits it to Slurm."""
    doc = read_toml(args.grid)
    sweep = Sweep.from_dict(doc, source=args.grid)
    points = sweep.validate()
    out = Path(args.out)
    if args.dry_run:
        print(f"{len(points)} configurations, measure {list(measures(sweep.run, sweep.grid))}")
        for p in points:
            print("  " + p.label)
        return 0
    if args.executor == "slurm":
        params = dict(sweep.slurm)
        file_shards = params.pop("shards", None)
        shards = args.shards or file_shards or min(len(points), 16)
        jobs = submit_slurm(doc, out, int(shards), params, wait=args.wait)
        print(f"submitted {len(jobs)} array tasks: {', '.join(str(j.job_id) for j in jobs[:4])}"
              + (" ..." if len(jobs) > 4 else ""))
        if not args.wait:
            print(f"when they finish: python -m specstream merge {out}")
        return 0
    shard = parse_shard(args.shard)
    counts = {"computed": 0, "reused": 0}

    def on_row(row: dict, computed: bool) -> None:
        counts["computed" if computed else "reused"] += 1

    rows = run_sweep_obj(sweep, out, shard=shard, progress=not args.no_progress, on_row=on_row)
    path = shard_file(out, shard)
    print(f"{len(rows)} rows ({counts['computed']} measured, {counts['reused']} from the store) in {path}")
    if shard[1] > 1:
        print(f"after every shard: python -m specstream merge {out}")
    return 0


def cmd_merge(args: Any) -> int:
    """``merge``: unites a sweep directory's shard files into one results file."""
    n = merge(args.dir, args.out)
    print(f"{n} unique rows -> {args.out or Path(args.dir) / RESULTS_FILE}")
    return 0


def cmd_plot(args: Any) -> int:
    """``plot``: every figure of a results file, and the recommended configurations."""
    from .. import plots

    df = load_results(args.results)
    written = plots.plot_all(df, args.out, nll_dir=_nll_dir(args.results))
    for p in written:
        print(p)
    rec = plots.recommend(df)
    if len(rec):
        cols = [c for c in ("regime", "label", "x_metric", "x", "ppl_delta", "kv_bytes", "meets_tolerance")
                if c in rec.columns]
        print(rec[cols].to_string(index=False))
    return 0


def _nll_dir(results: PathLike) -> Optional[Path]:
    """The per-token NLL files a sweep saved beside its results, if any."""
    p = Path(results)
    d = (p if p.is_dir() else p.parent) / "nll"
    return d if d.is_dir() else None
