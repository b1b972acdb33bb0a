#!/usr/bin/env python3
"""Leak check of the C core and its CPython binding by repetition.

Two phases on tiny random models, each repeated many times after a warm-up:

  hot paths   forward (4 cache policies), perplexity, generate (target-only,
              draft, adaptive, lookup, sampled), a stream dropped half-way,
              and errors raised from the binding, ss_forward,
              ss_generator_step and ss_eval_nll, on long-lived models;
  load/free   models loaded (borrowed and converted weights) and freed, a
              stream outliving its model, a load failing inside
              ss_model_create;
  threads     a new thread per cycle running a prefill batch and a
              generation (per-thread scratch must die with its thread).

All must keep the resident set size flat (C allocations: models, states,
generators, buffers) and the number of GC-tracked objects constant; the hot
paths also the number of Python memory blocks (reference leaks in the
binding). Exit status 0 and a last line "leakcheck: OK ..." on success.

    python scripts/leakcheck.py [--cycles 200] [--warmup 30] [--max-rss-kb 1024]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import specstream
from specstream import CacheConfig, SpeculativeConfig
from specstream.models import create_random

TARGET = dict(n_layer=2, d_model=32, n_head=4, d_ff=96, vocab_size=97)
DRAFT = dict(n_layer=1, d_model=16, n_head=2, d_ff=48, vocab_size=97)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def rss_bytes() -> int:
    """Resident set size now (not the peak), after returning free heap pages."""
    gc.collect()
    try:
        _libc.malloc_trim(0)
    except AttributeError:  # not glibc
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_models(root: Path) -> dict[str, Path]:
    dirs = {
        "target": create_random(TARGET, root / "target", seed=1),
        "target_bf16": create_random(TARGET, root / "target_bf16", seed=1, dtype="bf16"),
        "draft": create_random(DRAFT, root / "draft", seed=2),
    }
    # A checkpoint whose config disagrees with its weights: ss_model_create
    # fails after converting some tensors (its error path frees them).
    bad = create_random(TARGET, root / "bad", seed=1)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (bad / "config.json").write_text(json.dumps(cfg))
    dirs["bad"] = bad
    return dirs


def expect(exc: type, fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except exc:
        return
    raise AssertionError(f"{fn.__qualname__} did not raise {exc.__name__}")


def lifecycle(dirs: dict[str, Path], i: int) -> None:
    """Models, states and generators created and freed (and failing to be)."""
    t = specstream.load(dirs["target"])                       # borrowed f32 weights
    tb = specstream.load(dirs["target_bf16"], dtype="f32")    # converted copies
    d = specstream.load(dirs["draft"], dtype="bf16")
    x = np.random.default_rng(i).integers(0, 97, 16).astype(np.int32)
    tb.forward(x[:6])
    t.generate(x, max_new_tokens=6, draft=d, speculative=SpeculativeConfig(k=3))
    s = t.stream(x, max_new_tokens=20, draft=d)
    for _, _tok in zip(range(3), s):  # dropped half-way
        pass
    del s
    s = t.stream(x, max_new_tokens=20)
    del t, tb, d  # the stream keeps its model alive
    assert len(list(s)) == 20
    del s
    expect(ValueError, specstream.load, dirs["bad"])  # ss_model_create's error path


def hot(models: dict[str, specstream.Model], i: int) -> None:
    """Every per-token entry point of the binding on long-lived models."""
    t, d = models["target"], models["draft"]
    x = np.random.default_rng(i).integers(0, 97, 24).astype(np.int32)
    for c in CACHES:
        t.forward(x, cache=c, chunk=5)
        specstream.eval.perplexity(t, x, cache=c)
    t.generate(x, max_new_tokens=8)
    t.generate(x, max_new_tokens=8, draft=d, speculative=SpeculativeConfig(k=3), temperature=0.8, seed=i)
    t.generate(x, max_new_tokens=8, draft=d, speculative=SpeculativeConfig(adaptive=True, k_max=4))
    t.generate(x, max_new_tokens=8, speculative=SpeculativeConfig(method="lookup"), top_k=5, top_p=0.9,
               temperature=1.0, seed=i)
    s = t.stream(x, max_new_tokens=20, draft=d)
    for _, _tok in zip(range(3), s):
        pass
    s.stats
    del s
    # error paths in the binding, ss_forward, ss_generator_step, ss_eval_nll
    expect(IndexError, t._core.forward, np.array([1, 500], np.int32), CacheConfig()._core_values(), 2)
    expect(ValueError, t.generate, x, max_new_tokens=40, cache=CacheConfig(capacity=30))
    expect(ValueError, t.forward, x, cache=CacheConfig(capacity=10))
    expect(ValueError, t._core.eval_nll, x[:1], CacheConfig()._core_values(), 1, True)


def threaded(models: dict[str, specstream.Model], i: int) -> None:
    """A short-lived thread running a prefill-sized batch (the blocked GEMM
    path, >= 12 tokens) and a generation: per-thread scratch of the core
    must not outlive the thread."""
    t, d = models["target"], models["draft"]
    x = np.random.default_rng(i).integers(0, 97, 32).astype(np.int32)

    def work() -> None:
        t.forward(x, chunk=32)
        t.generate(x, max_new_tokens=4, draft=d)

    th = threading.Thread(target=work)
    th.start()
    th.join()


CACHES = [CacheConfig(), CacheConfig(policy="streaming", n_sink=2, window=8, compress_every=3),
          CacheConfig(policy="window", window=6), CacheConfig(policy="recompute", window=5)]


def measure(name: str, step, n_warmup: int, n_cycles: int) -> dict:
    for i in range(n_warmup):
        step(i)
    rss0, blocks0, objs0 = rss_bytes(), sys.getallocatedblocks(), len(gc.get_objects())
    quarters = []
    for i in range(n_cycles):
        step(n_warmup + i)
        if (i + 1) % max(1, n_cycles // 4) == 0:
            quarters.append((rss_bytes() - rss0) // 1024)
    rss1, blocks1, objs1 = rss_bytes(), sys.getallocatedblocks(), len(gc.get_objects())
    r = {"name": name, "rss0": rss0, "rss_kb": (rss1 - rss0) / 1024, "quarters": quarters,
         "blocks": blocks1 - blocks0, "objects": objs1 - objs0}
    print(f"leakcheck: {name}: {n_cycles} cycles after {n_warmup} warm-up: RSS {rss0 / 2**20:.1f} MiB "
          f"{r['rss_kb']:+.0f} KiB (by quarter {quarters} KiB), Python blocks {r['blocks']:+d}, "
          f"GC objects {r['objects']:+d}")
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--max-rss-kb", type=int, default=1024, help="allowed RSS growth over all cycles")
    ap.add_argument("--max-blocks", type=int, default=40,
                    help="allowed growth of Python memory blocks over the hot-path cycles (reference leaks); "
                         "loading is judged by RSS only, as CPython's own caches grow there for a while")
    args = ap.parse_args()
    t0 = time.perf_counter()
    problems = []
    with tempfile.TemporaryDirectory(prefix="ss_leakcheck_") as tmp:
        dirs = make_models(Path(tmp))
        models = {"target": specstream.load(dirs["target"]), "draft": specstream.load(dirs["draft"])}
        results = [measure("hot paths", lambda i: hot(models, i), args.warmup, args.cycles),
                   measure("load/free", lambda i: lifecycle(dirs, i), args.warmup, args.cycles),
                   measure("threads", lambda i: threaded(models, i), args.warmup, args.cycles)]
    for r in results:
        if r["rss_kb"] > args.max_rss_kb:
            problems.append(f"{r['name']}: RSS grew {r['rss_kb']:.0f} KiB > {args.max_rss_kb} KiB")
        if r["objects"] > 10:
            problems.append(f"{r['name']}: {r['objects']} more GC-tracked objects")
    if results[0]["blocks"] > args.max_blocks:
        problems.append(f"hot paths: Python blocks grew {results[0]['blocks']} > {args.max_blocks}")
    took = time.perf_counter() - t0
    if problems:
        print(f"leakcheck: FAILED ({took:.1f} s): " + "; ".join(problems))
        return 1
    worst = max(r["rss_kb"] for r in results)
    print(f"leakcheck: OK ({took:.1f} s): RSS growth <= {worst:+.0f} KiB over {args.cycles} cycles "
          f"(limit {args.max_rss_kb} KiB), no reference growth")
    return 0


if __name__ == "__main__":
    sys.exit(main())
