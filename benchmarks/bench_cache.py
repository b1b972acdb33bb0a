"""Per-token latency of cache policies on long streams, and the cost of eviction.

    python benchmarks/bench_cache.py [--shape 160m] [--caches 256,512,1024,2048]

1. Latency vs stream length: TPOT of `full`, `recompute` and `streaming` at
   each cache size, measured in windows along a stream several times longer
   than the cache (random Pythia-shape model, f32). `recompute` re-encodes
   the whole window for every token, so it is measured over a few tokens only.
2. Streaming vs recompute speedup at the largest cache (the StreamingLLM paper
   reports up to 22.2x on a GPU).
3. Eviction overhead of the ring buffer: TPOT at compress_every R = 1 vs R = 64
   (target: < 1% apart), same run, interleaved repeats.
Prints tables and writes results/cache_cpu.json and cache_latency.png.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

import specstream
from specstream import CacheConfig
from common import RESULTS, machine_info, random_model, save_json


def windowed_tpot(model: specstream.Model, cache: CacheConfig, length: int, window_tokens: int) -> list[dict]:
    """TPOT measured per window of tokens along one generation of `length` tokens."""
    stream = model.stream(np.arange(1, 9, dtype=np.int32), max_new_tokens=length, cache=cache)
    import time

    out, count, t0 = [], 0, None
    for _ in stream:
        count += 1
        if count == 1:
            t0 = time.perf_counter()
            continue
        if count % window_tokens == 0:
            t1 = time.perf_counter()
            out.append({"position": count, "tpot_ms": (t1 - t0) / window_tokens * 1e3})
            t0 = t1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="160m")
    ap.add_argument("--caches", default="256,512,1024,2048")
    ap.add_argument("--stream", type=int, default=4, help="stream length in multiples of the largest cache")
    ap.add_argument("--recompute-tokens", type=int, default=3)
    ap.add_argument("--overhead-tokens", type=int, default=None,
                    help="stream length of the R=1 vs R=64 comparison (default: 3x the largest cache)")
    ap.add_argument("--out", default="cache_cpu.json")
    args = ap.parse_args()
    model = specstream.load(random_model(args.shape, "f32"), dtype="f32")
    caches = [int(c) for c in args.caches.split(",")]
    length = args.stream * max(caches)
    sections: dict = {"latency": [], "recompute": [], "eviction_overhead": []}

    for size in caches:
        for policy, cfg in (("full", CacheConfig(policy="full")),
                            ("streaming", CacheConfig(policy="streaming", n_sink=4, window=size - 4))):
            n = length if policy == "streaming" else min(length, 2 * size)
            series = windowed_tpot(model, cfg, n, max(64, n // 16))
            sections["latency"].append({"policy": policy, "cache": size, "series": series})
            print(f"{policy:>9} cache {size:5d}: TPOT {series[0]['tpot_ms']:.2f} ms at {series[0]['position']} "
                  f"-> {series[-1]['tpot_ms']:.2f} ms at {series[-1]['position']}")
        # recompute: a prompt filling the window, then a few tokens (each re-encodes `size` tokens)
        ids = np.random.default_rng(1).integers(0, 50000, size=size).astype(np.int32)
        rec = model.generate(ids, args.recompute_tokens + 1, cache=CacheConfig(policy="recompute", window=size))
        stream_run = model.generate(ids, 64, cache=CacheConfig(policy="streaming", n_sink=4, window=size - 4))
        row = {"cache": size, "recompute_tpot_ms": rec.stats.tpot_s * 1e3,
               "streaming_tpot_ms": stream_run.stats.tpot_s * 1e3,
               "speedup": rec.stats.tpot_s / stream_run.stats.tpot_s}
        sections["recompute"].append(row)
        print(f"recompute cache {size:5d}: {row['recompute_tpot_ms']:.1f} ms/token vs streaming "
              f"{row['streaming_tpot_ms']:.2f} ms/token -> streaming {row['speedup']:.1f}x faster")

    size = max(caches)
    ids = np.random.default_rng(2).integers(0, 50000, size=args.overhead_tokens or 3 * size).astype(np.int32)
    results = {1: [], 64: []}
    for _ in range(3):  # interleaved so drift hits both alike
        for r in (1, 64):
            cfg = CacheConfig(policy="streaming", n_sink=4, window=size - 4, compress_every=r)
            results[r].append(specstream.eval.perplexity(model, ids, cache=cfg, chunk=1,
                                                         record_evictions=False).tpot_s)
    t1, t64 = statistics.median(results[1]), statistics.median(results[64])
    sections["eviction_overhead"] = {"cache": size, "tokens": len(ids), "tpot_ms_R1": t1 * 1e3,
                                     "tpot_ms_R64": t64 * 1e3, "overhead_pct": 100 * (t1 - t64) / t64,
                                     "runs_ms": {str(k): [x * 1e3 for x in v] for k, v in results.items()}}
    print(f"eviction overhead at cache {size}: R=1 {t1 * 1e3:.3f} ms vs R=64 {t64 * 1e3:.3f} ms "
          f"({100 * (t1 - t64) / t64:+.2f}%)")
    print(f"wrote {save_json(args.out, {'benchmark': 'cache_cpu', 'shape': args.shape, 'machine': machine_info(), **sections})}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5))
        for entry in sections["latency"]:
            xs = [p["position"] for p in entry["series"]]
            ys = [p["tpot_ms"] for p in entry["series"]]
            ax.plot(xs, ys, "-" if entry["policy"] == "streaming" else ":",
                    label=f"{entry['policy']} {entry['cache']}")
        ax.set_xlabel("stream position (tokens)")
        ax.set_ylabel("TPOT (ms)")
        ax.set_title(f"per-token latency, random {args.shape} f32, {machine_info()['cores']} cores")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(RESULTS / "cache_latency.png", dpi=110)
    except ImportError:
        pass


if __name__ == "__main__":
    main()
