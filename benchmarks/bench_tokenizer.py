"""Tokenizer throughput: specstream.Tokenizer against Hugging Face tokenizers.

    python benchmarks/bench_tokenizer.py [--text PATH] [--repeats 3]

Encodes War and Peace (shared/data/text/gutenberg/pg2600.txt) with the
GPT-NeoX-20B tokenizer, both single-threaded (RAYON_NUM_THREADS=1 and
TOKENIZERS_PARALLELISM=false are set before tokenizers is imported), in two
ways: the whole book as one string, and paragraph by paragraph through
encode_batch. Checks that both give the same ids, then prints MB/s (UTF-8
bytes of input per second, best of --repeats) and decode speed, and writes
results/tokenizer.json with the machine's description.
"""

from __future__ import annotations

import os

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
import tokenizers  # noqa: E402

from common import machine_info  # noqa: E402
from specstream._atomic import write_text_atomic  # noqa: E402
from specstream.tokenizer import Tokenizer  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = Path(os.environ.get("SPECSTREAM_DATA", REPO.parent / "shared" / "data"))


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Best wall-clock and best process CPU time of `repeats` runs: on a
    shared machine the CPU time is the steadier of the two."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--text", type=Path, default=DATA / "text" / "gutenberg" / "pg2600.txt")
    ap.add_argument("--tokenizer", type=Path, default=DATA / "tokenizer" / "gpt-neox-20b.tokenizer.json")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "tokenizer.json")
    args = ap.parse_args()

    t = time.perf_counter()
    ours = Tokenizer.from_file(args.tokenizer)
    load_ours = time.perf_counter() - t
    t = time.perf_counter()
    hf = tokenizers.Tokenizer.from_file(str(args.tokenizer))
    load_hf = time.perf_counter() - t

    text = args.text.read_text(encoding="utf-8")
    paragraphs = [p for p in text.split("\n\n") if p]
    mb = len(text.encode("utf-8")) / 1e6
    mb_par = sum(len(p.encode("utf-8")) for p in paragraphs) / 1e6

    ids = ours.encode(text)
    if ids.tolist() != hf.encode(text).ids:
        raise SystemExit("ids differ from Hugging Face's on the whole text")
    if [a.tolist() for a in ours.encode_batch(paragraphs)] != [e.ids for e in hf.encode_batch(paragraphs)]:
        raise SystemExit("ids differ from Hugging Face's on the paragraphs")
    id_list = ids.tolist()

    runs = {
        "encode_whole": (mb, lambda: ours.encode(text), lambda: hf.encode(text)),
        "encode_paragraphs": (mb_par, lambda: ours.encode_batch(paragraphs), lambda: hf.encode_batch(paragraphs)),
        "decode_whole": (mb, lambda: ours.decode(ids), lambda: hf.decode(id_list, skip_special_tokens=False)),
    }
    results: dict[str, Any] = {}
    machine = machine_info()
    machine.update(numpy=np.__version__, tokenizers=tokenizers.__version__)
    print(f"{args.text.name}: {mb:.2f} MB, {len(ids)} tokens, {len(paragraphs)} paragraphs; "
          f"{machine['cpu']} ({machine['cores']} cores), single thread")
    print(f"{'':20s} {'specstream':>12s} {'HF tokenizers':>14s} {'ratio':>7s}   (CPU time: ours, HF, ratio)")
    for name, (size, run_ours, run_hf) in runs.items():
        wall_ours, cpu_ours = best_time(run_ours, args.repeats)
        wall_hf, cpu_hf = best_time(run_hf, args.repeats)
        results[name] = {
            "specstream_mb_s": round(size / wall_ours, 2),
            "hf_mb_s": round(size / wall_hf, 2),
            "speedup": round(wall_hf / wall_ours, 1),
            "specstream_cpu_mb_s": round(size / cpu_ours, 2),
            "hf_cpu_mb_s": round(size / cpu_hf, 2),
            "cpu_speedup": round(cpu_hf / cpu_ours, 1),
        }
        print(f"{name:20s} {size / wall_ours:9.1f} MB/s {size / wall_hf:9.2f} MB/s {wall_hf / wall_ours:6.1f}x"
              f"   ({size / cpu_ours:.1f}, {size / cpu_hf:.2f} MB/s, {cpu_hf / cpu_ours:.1f}x)")
    print(f"{'load tokenizer.json':20s} {load_ours:10.3f} s {load_hf:12.3f} s")

    out = {
        "benchmark": "tokenizer",
        "text": str(args.text.relative_to(DATA)) if args.text.is_relative_to(DATA) else str(args.text),
        "text_mb": round(mb, 3),
        "tokens": len(ids),
        "tokenizer": args.tokenizer.name,
        "threads": 1,
        "repeats": args.repeats,
        "metric": "MB/s of UTF-8 input (decode: of output), best of repeats; *_cpu_*: by process CPU time",
        "results": results,
        "load_s": {"specstream": round(load_ours, 3), "hf": round(load_hf, 3)},
        "machine": machine,
    }
    write_text_atomic(args.out, json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
