"""Batch-1 decode speed of random Pythia-shape models against the machine's
measured read bandwidth (the roofline of decode).

    python benchmarks/bench_decode.py [--shapes 70m,160m,410m] [--dtypes f32]

For each model: tokens/s of greedy target-only decoding, time per token, and
achieved GB/s = (weight bytes + KV bytes read per token) / TPOT, next to the
read bandwidth measured in the same run. Prints a table and writes
results/decode_cpu.json.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

import specstream
from specstream import _core
from common import machine_info, random_model, save_json


def decode_run(model: specstream.Model, prompt: np.ndarray, tokens: int) -> float:
    """Seconds per generated token (after the first) of one greedy run."""
    res = model.generate(prompt, max_new_tokens=tokens + 1, cache=specstream.CacheConfig(policy="full"))
    return res.stats.tpot_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="70m,160m,410m")
    ap.add_argument("--dtypes", default="f32", help="comma-separated: f32, f16, bf16, int8, int4")
    ap.add_argument("--tokens", type=int, default=32, help="decode steps per run")
    ap.add_argument("--repeats", type=int, default=3, help="runs per model; the median is reported")
    ap.add_argument("--out", default="decode_cpu.json")
    args = ap.parse_args()

    bandwidth = max(_core.read_bandwidth(1 << 30, 5) for _ in range(2))
    rows = []
    prompt = np.arange(1, 17, dtype=np.int32)
    for dtype in args.dtypes.split(","):
        for shape in args.shapes.split(","):
            # int8/int4 are quantized at load from an f32 checkpoint; the others load their own dtype in place
            model = specstream.load(random_model(shape, "f32" if dtype in ("int8", "int4") else dtype), dtype=dtype)
            decode_run(model, prompt, 4)  # warm-up: page in the weights
            tpots = [decode_run(model, prompt, args.tokens) for _ in range(args.repeats)]
            tpot = statistics.median(tpots)
            c = model.config
            # KV read per token: keys and values of the ~prompt + tokens/2 cached positions
            kv_bytes = 2 * c.n_layer * c.d_model * 4 * (len(prompt) + args.tokens // 2)
            gbs = (model.weight_bytes + kv_bytes) / tpot / 1e9
            rows.append({
                "shape": shape, "dtype": dtype, "weight_bytes": model.weight_bytes,
                "tpot_ms": tpot * 1e3, "tokens_per_s": 1.0 / tpot, "achieved_gbs": gbs,
                "fraction_of_bandwidth": gbs / bandwidth, "tpot_ms_runs": [t * 1e3 for t in tpots],
            })
            print(f"{shape:>5} {dtype:>4}  {model.weight_bytes / 2**20:8.1f} MiB  TPOT {tpot * 1e3:7.2f} ms  "
                  f"{1 / tpot:7.1f} tok/s  {gbs:5.1f} GB/s = {100 * gbs / bandwidth:5.1f}% of {bandwidth:.1f} GB/s")
            del model
    path = save_json(args.out, {"benchmark": "decode_cpu", "machine": machine_info(),
                                "read_bandwidth_gbs": bandwidth, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
