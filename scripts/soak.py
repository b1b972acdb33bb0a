"""Soak: one very long streaming generation with a bounded cache and
speculative decoding, checking that memory stays flat and per-token time does
not drift.

    nice -n 10 python scripts/soak.py [--tokens 1000000] [--window-tokens 50000]
                                      [--model tiny|default] [--spec draft|lookup]

One ``Model.stream`` of ``--tokens`` new tokens (the public streaming API,
token by token) through a StreamingLLM cache (4 sinks + a 256-token window,
for the target and the draft). Every ``--window-tokens`` tokens it records
the process RSS (/proc/self/statm), the TPOT of the window (wall time / tokens),
the CPU time per token (process time / tokens: on a shared machine wall time
also measures the neighbours, CPU time much less so) and the window's draft
acceptance. At the end it prints a table and writes
benchmarks/results/soak.json with start/end RSS, the largest RSS growth after
the first window, TPOT and CPU time per token of the first and last windows
and their fitted drift per million tokens.

Models: ``--model tiny`` (default) writes a small random GPT-NeoX target
(2 layers, d_model 64, vocabulary 1000) and a smaller random draft (1 layer,
d_model 32) to a temporary directory: about 10 minutes for 10^6 tokens on one
core of the 2-core development machine. ``--model default`` uses the bundled
trained pair (``specstream.load_default()``), which is roughly 20x slower per
token -- use it with fewer tokens.

Speculation: ``--spec draft`` (default) samples at temperature 1 with the
draft model, so both verifier branches (accept, and reject + roll back +
residual resample) run hundreds of thousands of times alongside the evictions;
``--spec lookup`` drafts by prompt lookup and decodes greedily.

What "flat" means here: the generator keeps the whole token history (4 bytes a
token, in an array that doubles when full: 4-8 MB at 10^6 tokens), which is
the output, not a leak; everything else -- KV caches, scratch, Python objects --
must stay constant. The script reports the growth next to that allowance and
exits 1 if RSS grew by more than the allowance plus 16 MiB after the first
window (a leak of even 20 bytes per token would exceed that).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import specstream  # noqa: E402
from specstream import CacheConfig, SpeculativeConfig  # noqa: E402
from common import machine_info, save_json  # noqa: E402

TARGET_SHAPE = dict(n_layer=2, d_model=64, n_head=4, d_ff=256, vocab_size=1000, rotary_pct=0.25)
DRAFT_SHAPE = dict(n_layer=1, d_model=32, n_head=2, d_ff=128, vocab_size=1000, rotary_pct=0.25)
SLACK_BYTES = 16 << 20


def rss_bytes() -> int:
    """Current resident set size (not the peak) of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def load_models(kind: str, tmp: Path) -> tuple[specstream.Model, specstream.Model, str]:
    if kind == "default":
        target, draft, _tok = specstream.load_default()
        return target, draft, "bundled default pair (specstream.load_default())"
    from specstream.models import create_random

    target = specstream.load(create_random(dict(TARGET_SHAPE), tmp / "target", seed=1))
    draft = specstream.load(create_random(dict(DRAFT_SHAPE), tmp / "draft", seed=2))
    return target, draft, f"random target {TARGET_SHAPE}, random draft {DRAFT_SHAPE}"


def fit_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys against xs."""
    if len(xs) < 2:
        return 0.0
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    return float(np.polyfit(x, y, 1)[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--window-tokens", type=int, default=50_000, help="tokens per measurement window")
    ap.add_argument("--model", choices=("tiny", "default"), default="tiny")
    ap.add_argument("--spec", choices=("draft", "lookup"), default="draft")
    ap.add_argument("--k", type=int, default=4, help="tokens drafted per step")
    ap.add_argument("--cache-window", type=int, default=256)
    ap.add_argument("--sinks", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1,
                    help="C core threads (1: these models are too small to gain from more)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", default="soak.json", help="file name under benchmarks/results ('' = do not write)")
    args = ap.parse_args()
    if args.tokens < 2 * args.window_tokens:
        ap.error("--tokens must cover at least two windows")

    specstream.set_num_threads(args.threads)
    rss_before_load = rss_bytes()
    with tempfile.TemporaryDirectory(prefix="specstream-soak-") as tmp:
        target, draft, models_desc = load_models(args.model, Path(tmp))
        cache = CacheConfig(policy="streaming", n_sink=args.sinks, window=args.cache_window)
        prompt = np.random.default_rng(args.seed).integers(0, target.vocab_size, 64).astype(np.int32)
        if args.spec == "draft":
            kwargs = dict(draft=draft, speculative=SpeculativeConfig(k=args.k), temperature=1.0, seed=args.seed)
        else:
            kwargs = dict(speculative=SpeculativeConfig(method="lookup", k=args.k), temperature=0.0)
        stream = target.stream(prompt, max_new_tokens=args.tokens, cache=cache, **kwargs)
        rss_start = rss_bytes()
        print(f"soak: {args.tokens} tokens, {models_desc}", flush=True)
        print(f"soak: cache streaming n_sink={args.sinks} window={args.cache_window}, spec={args.spec} k={args.k}, "
              f"threads={args.threads}, cache bytes {stream.cache_bytes}", flush=True)
        print(f"{'tokens':>9} {'TPOT us':>9} {'CPU us':>9} {'RSS MiB':>9} {'dRSS KiB':>9} {'accept':>7} {'tok/fwd':>7} "
              f"{'elapsed s':>9}", flush=True)

        windows: list[dict] = []
        count = 0
        checksum = 0
        prev_drafted = prev_accepted = prev_forwards = 0
        t_start = t_win = time.perf_counter()
        cpu_win = time.process_time()
        for tok in stream:
            count += 1
            checksum = (checksum * 1000003 + tok) & 0xFFFFFFFFFFFF
            if count % args.window_tokens == 0:
                now = time.perf_counter()
                cpu_now = time.process_time()
                st = stream.stats
                drafted, accepted = st.drafted - prev_drafted, st.accepted - prev_accepted
                forwards = st.target_forwards - prev_forwards
                prev_drafted, prev_accepted, prev_forwards = st.drafted, st.accepted, st.target_forwards
                rss = rss_bytes()
                w = {
                    "tokens": count,
                    "tpot_us": (now - t_win) / args.window_tokens * 1e6,
                    "cpu_us_per_token": (cpu_now - cpu_win) / args.window_tokens * 1e6,
                    "rss_bytes": rss,
                    "acceptance": accepted / drafted if drafted else None,
                    "tokens_per_target_forward": args.window_tokens / forwards if forwards else None,
                    "elapsed_s": now - t_start,
                    "load_average_1m": os.getloadavg()[0],
                }
                windows.append(w)
                d_rss = (rss - windows[0]["rss_bytes"]) / 1024
                acc = "-" if w["acceptance"] is None else f"{w['acceptance']:.3f}"
                tpf = "-" if w["tokens_per_target_forward"] is None else f"{w['tokens_per_target_forward']:.2f}"
                print(f"{count:>9} {w['tpot_us']:>9.1f} {w['cpu_us_per_token']:>9.1f} {rss / 2**20:>9.1f} {d_rss:>9.0f} {acc:>7} {tpf:>7} "
                      f"{w['elapsed_s']:>9.0f}", flush=True)
                t_win, cpu_win = now, cpu_now
        total_s = time.perf_counter() - t_start
        final = stream.stats
        cache_bytes = stream.cache_bytes
        del stream
        rss_after_free = rss_bytes()

    if count != args.tokens:
        print(f"soak: FAILED: the stream ended after {count} of {args.tokens} tokens", file=sys.stderr)
        return 1
    rss_end = windows[-1]["rss_bytes"]
    base = windows[0]["rss_bytes"]
    growth = max(w["rss_bytes"] for w in windows) - base
    # The token history the generator keeps: int32 per token, capacity doubling.
    history_cap = 1 << math.ceil(math.log2(args.tokens + 64 + 64))
    history_allowance = 4 * history_cap
    tpots = [w["tpot_us"] for w in windows]
    slope_per_m = fit_slope([w["tokens"] / 1e6 for w in windows], tpots)
    median_tpot = float(np.median(tpots))
    cpus = [w["cpu_us_per_token"] for w in windows]
    cpu_slope_per_m = fit_slope([w["tokens"] / 1e6 for w in windows], cpus)
    median_cpu = float(np.median(cpus))
    ok = growth <= history_allowance + SLACK_BYTES

    print()
    print(f"soak: {count} tokens in {total_s:.0f} s; mean TPOT {total_s / count * 1e6:.1f} us; "
          f"acceptance {final.acceptance_rate:.3f}; {final.tokens_per_target_forward:.2f} tokens per target forward")
    print(f"soak: RSS {rss_start / 2**20:.1f} MiB at the start, {base / 2**20:.1f} MiB after the first window, "
          f"{rss_end / 2**20:.1f} MiB at the end (max growth after the first window {growth / 2**20:.2f} MiB; "
          f"token-history allowance {history_allowance / 2**20:.1f} MiB)")
    print(f"soak: TPOT first window {tpots[0]:.1f} us, last {tpots[-1]:.1f} us, median {median_tpot:.1f} us, "
          f"fitted drift {slope_per_m:+.1f} us per million tokens ({slope_per_m / median_tpot * 100:+.1f}% of the "
          f"median)")
    print(f"soak: CPU time per token first window {cpus[0]:.1f} us, last {cpus[-1]:.1f} us, median {median_cpu:.1f} "
          f"us, fitted drift {cpu_slope_per_m:+.1f} us per million tokens ({cpu_slope_per_m / median_cpu * 100:+.1f}% "
          f"of the median)")
    print(f"soak: {'OK' if ok else 'FAILED: memory grew beyond the token history'}")

    doc = {
        "description": "one Model.stream of N tokens, streaming cache, speculative decoding; RSS and TPOT per window",
        "machine": machine_info(),
        "models": models_desc,
        "config": {
            "tokens": args.tokens,
            "window_tokens": args.window_tokens,
            "cache": {"policy": "streaming", "n_sink": args.sinks, "window": args.cache_window},
            "speculative": args.spec,
            "k": args.k,
            "temperature": kwargs["temperature"],
            "threads": args.threads,
            "seed": args.seed,
        },
        "tokens_generated": count,
        "token_checksum": checksum,
        "total_s": total_s,
        "mean_tpot_us": total_s / count * 1e6,
        "acceptance_rate": final.acceptance_rate,
        "tokens_per_target_forward": final.tokens_per_target_forward,
        "kv_cache_bytes": cache_bytes,
        "rss_before_load_bytes": rss_before_load,
        "rss_start_bytes": rss_start,
        "rss_after_first_window_bytes": base,
        "rss_end_bytes": rss_end,
        "rss_after_free_bytes": rss_after_free,
        "max_rss_growth_after_first_window_bytes": growth,
        "token_history_allowance_bytes": history_allowance,
        "tpot_first_window_us": tpots[0],
        "tpot_last_window_us": tpots[-1],
        "tpot_median_us": median_tpot,
        "tpot_drift_us_per_million_tokens": slope_per_m,
        "cpu_us_per_token_first_window": cpus[0],
        "cpu_us_per_token_last_window": cpus[-1],
        "cpu_us_per_token_median": median_cpu,
        "cpu_us_per_token_drift_per_million_tokens": cpu_slope_per_m,
        "ok": ok,
        "windows": windows,
    }
    if args.out:
        print(f"soak: wrote {save_json(args.out, doc)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
