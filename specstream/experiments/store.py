"""The result store: an append-only JSONL file of result rows, one JSON
object per line, unique by ``row["key"]``.

Every row is appended as one ``write`` of one line, flushed and fsynced,
under a file lock, so a killed writer loses at most the row it was writing
(the fragment is cut off by the next writer) and parallel writers never
duplicate a key. A sweep directory holds ``results.jsonl`` and, when run in
shards, one ``results.shard-I-of-N.jsonl`` per shard; :func:`merge` unites
them and :func:`load_results` reads any of them as a DataFrame.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from .identity import PathLike, canonical

RESULTS_FILE = "results.jsonl"
_SHARD_GLOB = "results*.jsonl"
#: Version of the row layout (part of every row key).
SCHEMA = 1

#: Columns that vary between runs of the same configuration (timings,
#: memory high-water marks, bookkeeping); :func:`comparable` drops them.
TIMING_COLUMNS = (
    "tpot_ms", "ttft_ms", "prefill_ms", "total_ms", "tpot_vs_full", "peak_rss_bytes",
    "gen_tokens_per_s", "gen_tpot_ms", "gen_ttft_ms", "gen_prefill_ms", "gen_total_ms", "gen_peak_rss_bytes",
    "speedup", "target_only_tokens_per_s", "draft_ms", "verify_ms",
    "wall_s", "started_at", "host", "git_dirty", "ppl_reused", "gen_reused", "threads", "cpu_kernels",
    "peak_rss_per_run", "gen_peak_rss_per_run", "python",
)


def _json_safe(v: Any) -> Any:
    """The canonical form with NaN and infinities as null (JSON has neither)."""
    v = canonical(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    return v


@contextlib.contextmanager
def _locked(fd: int) -> Any:
    """Holds an exclusive lock on ``fd`` (writers on other processes wait)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _read_rows(path: Path) -> list[dict]:
    """Rows of a JSONL file; an incomplete last line (a killed writer) and
    lines that do not parse are skipped with a warning."""
    if not path.is_file():
        return []
    rows = []
    data = path.read_bytes()
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                print(f"warning: {path}: ignoring an incomplete last line (interrupted write)", file=sys.stderr)
            else:
                print(f"warning: {path}:{i + 1}: ignoring a line that is not JSON", file=sys.stderr)
            continue
        if isinstance(row, dict) and "key" in row:
            rows.append(row)
    return rows


class ResultStore:
    """An append-only JSONL file of result rows, one JSON object per line,
    unique by ``row["key"]`` (the first row with a key wins when reading)."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._rows: dict[str, dict] = {}
        self._size = -1
        self._reload()

    def _reload(self) -> None:
        self._size = self.path.stat().st_size if self.path.is_file() else 0
        for row in _read_rows(self.path):
            self._rows.setdefault(row["key"], row)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: str) -> Optional[dict]:
        return self._rows.get(key)

    def rows(self) -> list[dict]:
        return list(self._rows.values())

    def append(self, row: Mapping[str, Any]) -> dict:
        """Appends one row durably: one write of one line, flush, fsync;
        returns the row as it will read back (NaN -> None, tuples -> lists).

        A previous writer killed mid-line leaves no newline at the end of
        the file: that fragment is cut off first, so every line stays whole.
        """
        if "key" not in row:
            raise ValueError("a result row needs a 'key'")
        if row["key"] in self._rows:
            return self._rows[row["key"]]
        line = (json.dumps(_json_safe(dict(row)), sort_keys=True, allow_nan=False) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            with _locked(fd):
                size = os.fstat(fd).st_size
                if size != self._size:  # another process appended: it may have written this key
                    self._reload()
                    if row["key"] in self._rows:
                        return self._rows[row["key"]]
                if size:
                    os.lseek(fd, size - 1, os.SEEK_SET)
                    if os.read(fd, 1) != b"\n":
                        # cut the fragment after the last complete line
                        with open(self.path, "rb") as f:
                            tail = f.read()
                        cut = tail.rfind(b"\n") + 1
                        os.ftruncate(fd, cut)
                view = memoryview(line)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
                self._size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        stored = json.loads(line)
        self._rows[row["key"]] = stored
        return stored


def store_files(directory: Path) -> list[Path]:
    """A sweep directory's result files: results.jsonl first, then shard
    files in name order."""
    files = sorted(directory.glob(_SHARD_GLOB))
    main = directory / RESULTS_FILE
    return ([main] if main in files else []) + [f for f in files if f != main]


def unique_rows(files: Iterable[Path]) -> list[dict]:
    """The rows of ``files``, one per key (the first file holding a key wins)."""
    seen: dict[str, dict] = {}
    for f in files:
        for row in _read_rows(f):
            seen.setdefault(row["key"], row)
    return list(seen.values())


def comparable(df: "Any") -> "Any":
    """``df`` without the timing and bookkeeping columns, sorted by key:
    what must be identical between two runs of the same sweep."""
    cols = [c for c in df.columns if c not in TIMING_COLUMNS]
    return df[cols].sort_values("key").reset_index(drop=True)


def load_results(path: PathLike) -> "Any":
    """Result rows as a pandas DataFrame (one row per key).

    ``path``: a JSONL file or a sweep directory (its results.jsonl and
    shard files, united). List values (e.g. ``cache.structural_ids``)
    become tuples; null metrics become NaN.
    """
    p = Path(path)
    if p.is_dir():
        rows = unique_rows(store_files(p))
    elif p.is_file():
        rows = unique_rows([p])
    else:
        raise FileNotFoundError(f"{p}: no such results file or sweep directory")
    return as_frame(rows)


def as_frame(rows: Sequence[Mapping[str, Any]]) -> "Any":
    """Rows as a DataFrame; list values become tuples (hashable, comparable)."""
    import pandas as pd

    df = pd.DataFrame(list(rows))
    for c in df.columns:
        if df[c].dtype == object and df[c].map(lambda v: isinstance(v, list)).any():
            df[c] = df[c].map(lambda v: tuple(v) if isinstance(v, list) else v)
    return df


def merge(directory: PathLike, out: Optional[PathLike] = None) -> int:
    """Unites ``directory``'s results.jsonl and shard files into ``out``
    (default: ``directory/results.jsonl``), one row per key, written
    atomically (temporary file + rename). Returns the number of rows."""
    from .._atomic import atomic_open

    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no such sweep directory")
    files = store_files(d)
    if not files:
        raise FileNotFoundError(f"{d}: no results*.jsonl files to merge")
    rows = unique_rows(files)
    target = Path(out) if out is not None else d / RESULTS_FILE
    with atomic_open(target, "w") as f:
        for row in rows:
            f.write(json.dumps(_json_safe(row), sort_keys=True, allow_nan=False) + "\n")
    return len(rows)


def shard_file(directory: PathLike, shard: tuple[int, int]) -> Path:
    """The file shard ``(I, N)`` of a sweep writes (``results.jsonl`` when N = 1)."""
    i, n = shard
    return Path(directory) / (RESULTS_FILE if n == 1 else f"results.shard-{i}-of-{n}.jsonl")
