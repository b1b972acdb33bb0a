"""Cache policies on long texts: perplexity, TPOT and cache bytes per policy x
budget x position mode, and the Pareto front.

    python benchmarks/bench_cache_policies.py quality [--tokens 20000]
    python benchmarks/bench_cache_policies.py speed [--shape 410m]
    python benchmarks/bench_cache_policies.py plot

quality: the bundled target (trained on 512-token sequences) reads the first
  --tokens tokens of two held-out texts -- Crime and Punishment (pg2554, the
  PG-19 stand-in) and WikiText-2 test -- through every policy at two budgets
  (keys per head: n_sink + window + heavy), with positions "text" and
  "cache". Score policies keep a quarter of the budget as heavy keys. Rows
  "h2o/snapkv share=model" are the pre-redesign algorithm (one set for the
  whole model, cache positions), for readers of earlier results. Per-row
  results are kept in results/cache_policies.json as they come (an
  interrupted run resumes).
speed: TPOT of decoding on a random Pythia shape (bf16 weights) with a full
  window, every policy at one budget, interleaved repeats, side by side with
  streaming; achieved weight bandwidth next to time per token.
plot: PPL vs cache bytes and PPL vs TPOT (results/cache_policies.png).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import specstream
from specstream import CacheConfig
from specstream.defaults import default_text, load_default
from specstream.eval import perplexity
from common import RESULTS, machine_info, random_model, save_json

OUT = "cache_policies.json"
TEXTS = ("pg2554", "wikitext-2-test")
SCORE_POLICIES = ("h2o", "snapkv", "keynorm", "scissorhands", "adakv", "pyramidkv", "headaware")
N_SINK = 4


def configs(budget: int) -> list[tuple[str, CacheConfig]]:
    """(label, config) of every policy at a budget of keys per head."""
    heavy = budget // 4
    window = budget - N_SINK - heavy
    out = [("streaming", CacheConfig(policy="streaming", n_sink=N_SINK, window=budget - N_SINK)),
           ("window", CacheConfig(policy="window", window=budget))]
    for policy in SCORE_POLICIES:
        for positions in ("text", "cache"):
            out.append((f"{policy}/{positions}", CacheConfig(policy=policy, n_sink=N_SINK, window=window, heavy=heavy,
                                                            positions=positions)))
    for policy in ("h2o", "snapkv"):  # the pre-redesign variant, decided at commit: token by token
        out.append((f"{policy}/share=model", CacheConfig(policy=policy, n_sink=N_SINK, window=window, heavy=heavy,
                                                         share="model", positions="cache")))
    return out


def load_rows(path: Path) -> list[dict]:
    return json.loads(path.read_text())["rows"] if path.exists() else []


def quality(args: argparse.Namespace) -> None:
    target, _, tok = load_default()
    path = RESULTS / OUT
    rows = load_rows(path)
    done = {(r["text"], r["budget"], r["label"]) for r in rows}
    texts = {name: np.asarray(tok.encode(default_text(name)), dtype=np.int32)[: args.tokens] for name in TEXTS}
    jobs = [(name, budget, label, cfg) for name in TEXTS for budget in args.budgets for label, cfg in configs(budget)
            if (name, budget, label) not in done]
    for name, budget, label, cfg in tqdm(jobs, desc="policies"):
        chunk = 1 if cfg.share == "model" else args.chunk  # model share decides at commit
        t0 = time.perf_counter()
        res = perplexity(target, texts[name], cache=cfg, chunk=chunk, record_evictions=False)
        rows.append({"text": name, "tokens": int(len(texts[name])), "budget": budget, "label": label,
                     "policy": cfg.policy, "positions": cfg.positions, "share": cfg.share, "ppl": res.ppl,
                     "cache_bytes": res.cache_bytes, "visible_mean": float(np.mean(res.visible)),
                     "chunk": chunk, "seconds": time.perf_counter() - t0, "cache": cfg.__dict__ | {"structural_ids": []}})
        save_json(OUT, {"machine": machine_info(), "model": "bundled target (6 layers, d 256, trained on 512-token "
                        "sequences, f32)", "rows": rows})
    table(rows)


def table(rows: list[dict]) -> None:
    for name in TEXTS:
        for budget in sorted({r["budget"] for r in rows}):
            sel = [r for r in rows if r["text"] == name and r["budget"] == budget]
            if not sel:
                continue
            print(f"\n{name}, {sel[0]['tokens']} tokens, budget {budget} keys/head")
            for r in sorted(sel, key=lambda r: r["ppl"]):
                print(f"  {r['label']:<22} PPL {r['ppl']:9.2f}  cache {r['cache_bytes'] / 1e6:7.2f} MB")


def speed(args: argparse.Namespace) -> None:
    model = specstream.load(random_model(args.shape, "bf16"), dtype="bf16")
    budget = args.speed_budget
    cfgs = [(label, cfg) for label, cfg in configs(budget) if "share=model" not in label and label != "window"]
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, model.vocab_size, size=budget + 64).astype(np.int32)  # past the first evictions
    tpot: dict[str, list[float]] = {label: [] for label, _ in cfgs}
    cache_bytes = {}
    for _ in tqdm(range(args.repeats), desc="repeats"):
        for label, cfg in cfgs:  # interleaved: every repeat measures every policy
            res = model.generate(prompt, args.new_tokens, cache=cfg)
            tpot[label].append(res.stats.tpot_s)
            cache_bytes[label] = res.stats.cache_bytes
    base = statistics.median(tpot["streaming"])
    rows = []
    for label, _ in cfgs:
        t = statistics.median(tpot[label])
        rows.append({"label": label, "tpot_ms": t * 1e3, "vs_streaming": t / base, "cache_bytes": cache_bytes[label],
                     "weight_gb_per_s": model.weight_bytes / t / 1e9, "samples_ms": [x * 1e3 for x in tpot[label]]})
        print(f"  {label:<22} TPOT {t * 1e3:7.2f} ms  x{t / base:5.3f} of streaming  "
              f"{model.weight_bytes / t / 1e9:5.1f} GB/s of weights")
    doc = json.loads((RESULTS / OUT).read_text()) if (RESULTS / OUT).exists() else {"rows": []}
    doc["speed"] = {"machine": machine_info(), "shape": args.shape, "dtype": "bf16", "budget": budget,
                    "prompt_tokens": int(len(prompt)), "new_tokens": args.new_tokens, "repeats": args.repeats,
                    "rows": rows}
    save_json(OUT, doc)


def plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = json.loads((RESULTS / OUT).read_text())
    rows = doc["rows"]
    fig, axes = plt.subplots(1, len(TEXTS), figsize=(14, 5.5))
    policies = ["streaming", "window", *SCORE_POLICIES]
    colour = {p: plt.get_cmap("tab10")(i) for i, p in enumerate(policies)}
    for ax, name in zip(axes, TEXTS):
        sel = [r for r in rows if r["text"] == name]
        for label in sorted({r["label"] for r in sel}):
            pts = sorted((r["cache_bytes"] / 1e6, r["ppl"]) for r in sel if r["label"] == label)
            style = "--" if label.endswith("/text") else ":" if "share=model" in label else "-"
            ax.plot(*zip(*pts), style, marker="o", ms=4, color=colour[label.split("/")[0]], label=label)
        pts = sorted((r["cache_bytes"] / 1e6, r["ppl"]) for r in sel)
        front, best = [], float("inf")
        for x, y in pts:
            if y < best:
                front.append((x, y))
                best = y
        ax.plot(*zip(*front), color="black", lw=6, alpha=0.2, zorder=0, label="Pareto front")
        ax.set_xlabel("KV cache (MB)")
        ax.set_ylabel("perplexity (log scale)")
        ax.set_yscale("log")
        ax.set_title(f"{name}, {sel[0]['tokens']} tokens, bundled target")
    axes[-1].legend(fontsize=7, ncol=2, loc="upper left")
    fig.suptitle("solid: cache positions, dashed: text positions, dotted: share=model (the pre-redesign algorithm)",
                 fontsize=10)
    fig.tight_layout()
    out = RESULTS / "cache_policies.png"
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["quality", "speed", "plot"])
    ap.add_argument("--tokens", type=int, default=20000)
    ap.add_argument("--budgets", type=lambda s: [int(x) for x in s.split(",")], default=[128, 256])
    ap.add_argument("--chunk", type=int, default=32, help="tokens per forward (head/layer share: exact at any chunk)")
    ap.add_argument("--shape", default="410m")
    ap.add_argument("--speed-budget", type=int, default=1024)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    {"quality": quality, "speed": speed, "plot": plot}[args.what](args)


if __name__ == "__main__":
    main()
