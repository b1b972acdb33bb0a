"""Matrix-product kernels per weight format, SIMD level and batch size, on
1b-shaped matrices far larger than the last-level cache.

    python benchmarks/bench_kernels.py [--formats f32,f16,bf16,int8,int4]
        [--levels avx2,avx512,amx] [--ns 1,2,4,8,16,32,64] [--gb 2.0]
        [--prefill 128,512] [--repeats 3] [--out kernels_cpu.json]

For each format, random 8192x2048 and 2048x8192 matrices (the MLP matrices
of Pythia-1b) are packed once and copied until the copies hold --gb GB of
stored weights, so every pass reads them from memory. Per level the CPU has
(each forced with _core.matmul(level=...); a level without its own kernel
for a format is skipped, not repeated) and n tokens: time per product (best
of --repeats passes over every copy), achieved GB/s of weight bytes, the
ratio to n = 1, GFLOP/s. Next to them, measured in the same run: the read
bandwidth at each level (AVX2 4 accumulators: the earlier probe; AVX-512 4
accumulators) over 2 GiB, and the f32 FMA peak per level. --prefill adds
larger batches (blocked GEMM vs AMX) on a few copies. Before each
measurement it waits (--wait-idle) for the other processes of a shared
machine to leave the cores idle, and records the idle cores it saw. Prints a
table, saves results/OUT atomically with the machine info and the load
average before and after, and a plot of time(n)/time(1) and of the time per
product, per format and kernel.
"""

from __future__ import annotations

import argparse
import os
import time

# NumPy's BLAS threads spin after each NumPy call and took 11% of a core
# from the kernels measured here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from specstream import _core  # noqa: E402
from common import RESULTS, machine_info, save_json  # noqa: E402

SHAPES = [(8192, 2048), (2048, 8192)]


def packed_copies(fmt: str, gb: float, seed: int = 0, align: int = 0) -> list[tuple[np.ndarray, int, int]]:
    """(packed matrix, m, k) copies, alternating the two shapes, until they
    hold gb GB."""
    rng = np.random.default_rng(seed)
    base = []
    for m, k in SHAPES:
        w = (rng.standard_normal((m, k), dtype=np.float32) * 0.02)
        base.append((_core.pack(w, fmt), m, k))
    out, total = [], 0
    while total < gb * 1e9:
        w, m, k = base[len(out) % len(base)]
        out.append((aligned_copy(w, align), m, k))
        total += w.nbytes
    return out


def aligned_copy(a: np.ndarray, align: int) -> np.ndarray:
    """A copy of a (1-D uint8) whose data starts at a multiple of 64 bytes plus `align`."""
    raw = np.empty(a.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + align
    out = raw[start:start + a.nbytes]
    out[:] = a
    return out


def idle_cores(seconds: float = 1.0) -> float:
    """Cores idle over the next `seconds` (Linux /proc/stat), NaN elsewhere."""
    def sample() -> list[int]:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:9]]
    try:
        a = sample()
        time.sleep(seconds)
        b = sample()
    except OSError:
        return float("nan")
    total = sum(b) - sum(a)
    idle = (b[3] + b[4]) - (a[3] + a[4])
    return (os.cpu_count() or 1) * idle / total if total > 0 else float("nan")


def wait_for_idle(limit_s: float) -> float:
    """Waits (up to limit_s) until other processes leave the cores idle, so
    that a measurement is not shared with them; returns the idle cores seen."""
    deadline = time.monotonic() + limit_s
    while True:
        idle = idle_cores()
        if not idle < (os.cpu_count() or 1) - 0.1 or time.monotonic() > deadline:
            return idle


def time_pass(mats, x: np.ndarray, fmt: str, level: str, repeats: int) -> float:
    """Best time of one pass over every matrix (one product each)."""
    outs = {m: np.zeros((x.shape[0], m), np.float32) for _, m, _ in mats}
    xs = {k: np.ascontiguousarray(x[:, :k]) for _, _, k in mats}
    for w, m, k in mats[:4]:  # warm-up: thread pool, scratch buffers
        _core.matmul(xs[k], w, fmt, m, out=outs[m], level=level)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for w, m, k in mats:
            _core.matmul(xs[k], w, fmt, m, out=outs[m], level=level)
        best = min(best, time.perf_counter() - t0)
    return best


def plot(rows: list[dict], path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fmts = sorted({r["format"] for r in rows}, key=["f32", "f16", "bf16", "int8", "int4"].index)
    fig, axes = plt.subplots(2, len(fmts), figsize=(3.2 * len(fmts), 6.0), sharex=True, squeeze=False)
    for col, fmt in enumerate(fmts):
        for kernel in sorted({r["kernel"] for r in rows if r["format"] == fmt and r["n"] <= 96}):
            pts = sorted((r["n"], r["ratio_to_n1"], r["ms_per_product"]) for r in rows
                         if r["format"] == fmt and r["kernel"] == kernel and r["n"] <= 96)
            n, ratio, ms = zip(*pts)
            axes[0][col].plot(n, ratio, marker="o", label=kernel)
            axes[1][col].plot(n, ms, marker="o", label=kernel)
        axes[0][col].axhline(1.2, color="grey", lw=0.5, ls="--")
        axes[0][col].axhline(1.6, color="grey", lw=0.5, ls=":")
        axes[0][col].set_title(fmt)
        axes[0][col].legend(fontsize=7)
        axes[1][col].set_xlabel("tokens n")
        for row in (0, 1):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].set_yscale("log", base=2)
    axes[0][0].set_ylabel("time(n) / time(1)")
    axes[1][0].set_ylabel("ms per product")
    fig.suptitle("1b-shaped matrices, weights >> L3 (dashed: 1.2, dotted: 1.6)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--formats", default="f32,f16,bf16,int8,int4")
    ap.add_argument("--levels", default=None, help="default: every level this CPU has but scalar")
    ap.add_argument("--ns", default="1,2,4,8,16,32,64")
    ap.add_argument("--gb", type=float, default=2.0, help="GB of stored weights per format")
    ap.add_argument("--prefill", default="128,512", help="larger batches, on 1/8 of the copies ('' to skip)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="kernels_cpu.json")
    ap.add_argument("--wait-idle", type=float, default=120.0,
                    help="before each measurement, wait up to this many seconds for idle cores (shared machines)")
    args = ap.parse_args()

    have = _core.simd_levels()
    levels = [lv for lv in (args.levels.split(",") if args.levels else have[1:]) if lv in have]
    ns = [int(v) for v in args.ns.split(",")]
    prefill = [int(v) for v in args.prefill.split(",") if v]
    load_before = os.getloadavg()
    probes: dict = {"read_bandwidth_gbs": {}, "fma_peak_gflops": {}}
    for lv in levels:
        if lv != "amx":  # the probes have no AMX variant
            wait_for_idle(args.wait_idle)
            probes["read_bandwidth_gbs"][lv] = _core.read_bandwidth(1 << 31, 5, level=lv)
            probes["fma_peak_gflops"][lv] = _core.peak_gflops(1.0, 3, level=lv)
    print(f"read bandwidth (GB/s): {probes['read_bandwidth_gbs']}  FMA peak (GFLOP/s): {probes['fma_peak_gflops']}")
    rows = []
    for fmt in args.formats.split(","):
        mats = packed_copies(fmt, args.gb)
        stored = sum(w.nbytes for w, _, _ in mats)
        params = sum(m * k for _, m, k in mats)
        seen = set()
        for level in levels:
            kernel = _core.matmul_path(fmt, 1, level)
            if kernel in seen:
                continue  # this level has no kernel of its own for the format
            seen.add(kernel)
            x = np.random.default_rng(1).standard_normal((max(ns + prefill), 8192), dtype=np.float32)
            t1 = None
            for n in ns + prefill:
                few = n > 96
                subset = mats[: max(2, len(mats) // 8)] if few else mats
                idle = wait_for_idle(args.wait_idle)
                dt = time_pass(subset, x[:n], fmt, level, args.repeats)
                scale = len(mats) / len(subset)
                per_product = dt / len(subset)
                t1 = t1 or per_product
                row = {"format": fmt, "level": level, "kernel": _core.matmul_path(fmt, n, level), "n": n,
                       "ms_per_product": per_product * 1e3, "gbs": stored / (dt * scale) / 1e9,
                       "gflops": 2.0 * n * params / (dt * scale) / 1e9, "ratio_to_n1": per_product / t1,
                       "weight_bytes": stored, "matrices": len(subset), "idle_cores_before": idle}
                rows.append(row)
                print(f"{fmt:>5} {row['kernel']:>12} n={n:4d}  {row['ms_per_product']:8.3f} ms  "
                      f"{row['gbs']:6.1f} GB/s  {row['gflops']:7.1f} GFLOP/s  x{row['ratio_to_n1']:.2f}", flush=True)
        del mats
    load_after = os.getloadavg()
    doc = {"machine": machine_info(), "load_average_before": load_before, "load_average_after": load_after,
           "shapes": SHAPES, "gb_per_format": args.gb, "repeats": args.repeats, **probes, "rows": rows}
    path = save_json(args.out, doc)
    plot(rows, RESULTS / (os.path.splitext(args.out)[0] + ".png"))
    print(f"load average before {load_before}, after {load_after}; wrote {path}")


if __name__ == "__main__":
    main()
