"""Batch-1 decode on the GPU: random Pythia-shape models in f16 against the
memory-bandwidth roofline and PyTorch eager, plus speculative decoding.

    python benchmarks/bench_cuda.py [--shapes 70m,410m,1b,2.8b] [--tokens 64] [--prompt 128]

For each shape (weights f16, KV cache f32, full cache):
  * TPOT of greedy decoding (median of --repeats runs of --tokens steps after
    a 16-token prompt) and the achieved bandwidth
    (weight bytes + KV bytes read per token) / TPOT, next to the device's
    measured copy bandwidth (cudaMemcpy device to device, bytes read + written
    per second, best of 10 over 1 GiB) and TPOT / roofline TPOT;
  * the same with the one-token step replayed as a CUDA graph
    (SPECSTREAM_CUDA_GRAPHS=1), reported next to it;
  * TTFT: one generate() call over a --prompt-token prompt, to the first token;
  * PyTorch eager side by side: transformers GPTNeoXForCausalLM (f16, same
    weights, same GPU, KV cache, greedy argmax on the GPU), run in a separate
    process so that its CUDA libraries never meet ours; skipped if torch or
    transformers cannot be imported (--no-torch skips it too).
Then speculative decoding, 70m draft -> 2.8b target (both on the GPU) at a
forced acceptance of 0.75 with k = 5, against the same target's TPOT, with
and without CUDA graphs.
A sanity check compares the 70m model's GPU logits with the CPU backend.

Writes results/cuda_<gpu-name>.json (the GPU named in the file and its name).
About 4-6 minutes on an H100, most of it writing the random checkpoints
(created in parallel processes, reused from benchmarks/.models on reruns).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import specstream
from specstream import CacheConfig, SpeculativeConfig, _core
from common import machine_info, random_model, save_json

HERE = Path(__file__).resolve().parent


def kv_bytes_per_token(cfg, context: float) -> float:
    """f32 keys and values of `context` cached positions, every layer."""
    return 2.0 * cfg.n_layer * cfg.d_model * 4 * context


def make_model(shape: str) -> str:
    return str(random_model(shape, "f16"))


@contextmanager
def cuda_graphs(on: bool):
    """States created inside replay the one-token step as a CUDA graph."""
    old = os.environ.get("SPECSTREAM_CUDA_GRAPHS")
    os.environ["SPECSTREAM_CUDA_GRAPHS"] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["SPECSTREAM_CUDA_GRAPHS"]
        else:
            os.environ["SPECSTREAM_CUDA_GRAPHS"] = old


def decode_tpot(model, prompt, tokens: int, repeats: int, graphs: bool) -> list:
    with cuda_graphs(graphs):
        model.generate(prompt, max_new_tokens=4)  # warm-up (and graph capture)
        return [model.generate(prompt, max_new_tokens=tokens + 1).stats.tpot_s for _ in range(repeats)]


# ------------------------------------------------------------ PyTorch eager

TORCH_WORKER = r"""
import json, sys, time
import torch
from transformers import GPTNeoXForCausalLM
args = json.loads(sys.argv[1])
rows = {}
for shape, path in args["models"].items():
    try:
        try:
            model = GPTNeoXForCausalLM.from_pretrained(path, dtype=torch.float16)
        except TypeError:
            model = GPTNeoXForCausalLM.from_pretrained(path, torch_dtype=torch.float16)
        model = model.cuda().eval()
        short = torch.arange(1, 17, device="cuda").unsqueeze(0)
        long = (torch.arange(args["prompt"], device="cuda") % 50000 + 1).unsqueeze(0)

        def decode(tokens):
            out = model(short, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(tokens):
                out = model(nxt, past_key_values=past, use_cache=True)
                past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            return (time.perf_counter() - t0) / tokens

        def ttft():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model(long, use_cache=True)
            int(out.logits[0, -1].argmax())
            return time.perf_counter() - t0

        with torch.inference_mode():
            decode(4)
            ttft()
            tpots = [decode(args["tokens"]) for _ in range(args["repeats"])]
            ttfts = [ttft() for _ in range(args["repeats"])]
        rows[shape] = {"tpot_s": sorted(tpots)[len(tpots) // 2], "ttft_s": sorted(ttfts)[len(ttfts) // 2],
                       "attn_implementation": getattr(model.config, "_attn_implementation", None),
                       "torch": torch.__version__}
        del model
        torch.cuda.empty_cache()
    except Exception as e:  # report, keep going
        rows[shape] = {"error": f"{type(e).__name__}: {e}"}
print("JSON" + json.dumps(rows))
"""


def torch_eager(models: dict, prompt: int, tokens: int, repeats: int) -> dict:
    try:
        import importlib.util

        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
            return {"skipped": "torch or transformers is not importable"}
    except Exception as e:  # pragma: no cover
        return {"skipped": str(e)}
    arg = json.dumps({"models": models, "prompt": prompt, "tokens": tokens, "repeats": repeats})
    try:
        res = subprocess.run([sys.executable, "-c", TORCH_WORKER, arg], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return {"skipped": "the PyTorch worker ran over 300 s"}
    for line in res.stdout.splitlines():
        if line.startswith("JSON"):
            return json.loads(line[4:])
    return {"skipped": f"the PyTorch worker failed (rc={res.returncode}): {res.stderr[-800:]}"}


# ------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="70m,410m,1b,2.8b")
    ap.add_argument("--tokens", type=int, default=64, help="decode steps per TPOT run")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens of the TTFT runs")
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement; the median is reported")
    ap.add_argument("--spec-draft", default="70m")
    ap.add_argument("--spec-target", default="2.8b")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch eager comparison")
    ap.add_argument("--out", default=None, help="file name under results/ (default cuda_<gpu>.json)")
    args = ap.parse_args()

    if _core.cuda_available() < 1:
        info = _core.build_info()
        sys.exit("bench_cuda: no CUDA GPU available" + ("" if info.get("cuda") else " (this build has no CUDA backend)"))
    t_start = time.perf_counter()
    gpu_name = _core.cuda_device_name(0)
    copy_gbs = max(_core.cuda_copy_bandwidth(1 << 30, 10) for _ in range(2))
    print(f"GPU: {gpu_name}; device-to-device copy {copy_gbs:.0f} GB/s (read + write)", flush=True)

    shapes = args.shapes.split(",")
    needed = list(dict.fromkeys(shapes + [args.spec_draft, args.spec_target]))
    t0 = time.perf_counter()
    # spawn: the children only write files and never inherit this process's CUDA state
    with ProcessPoolExecutor(max_workers=len(needed), mp_context=multiprocessing.get_context("spawn")) as pool:
        dirs = dict(zip(needed, pool.map(make_model, needed)))
    t_create = time.perf_counter() - t0
    print(f"random checkpoints ready in {t_create:.0f} s", flush=True)

    short = np.arange(1, 17, dtype=np.int32)
    long = (np.arange(args.prompt, dtype=np.int32) % 50000) + 1
    rows = []
    tpot_of = {}
    for shape in shapes:
        try:
            t_load = time.perf_counter()
            model = specstream.load(dirs[shape], dtype="f16", device="cuda")
            t_load = time.perf_counter() - t_load
            runs = decode_tpot(model, short, args.tokens, args.repeats, graphs=False)
            graph_runs = decode_tpot(model, short, args.tokens, args.repeats, graphs=True)
            tpot, tpot_graph = statistics.median(runs), statistics.median(graph_runs)
            with cuda_graphs(False):
                ttft = statistics.median(model.generate(long, max_new_tokens=1).stats.ttft_s for _ in range(args.repeats))
            cfg = model.config
            bytes_per_token = model.weight_bytes + kv_bytes_per_token(cfg, len(short) + args.tokens / 2)
            gbs = bytes_per_token / tpot / 1e9
            roofline_s = bytes_per_token / (copy_gbs * 1e9)
            tpot_of[shape] = (tpot, tpot_graph)
            rows.append({
                "shape": shape, "dtype": "f16", "weight_bytes": model.weight_bytes, "bytes_per_token": bytes_per_token,
                "tpot_ms": tpot * 1e3, "tokens_per_s": 1 / tpot, "achieved_gbs": gbs,
                "fraction_of_copy_bandwidth": gbs / copy_gbs, "tpot_over_roofline": tpot / roofline_s,
                "tpot_graph_ms": tpot_graph * 1e3, "achieved_gbs_graph": bytes_per_token / tpot_graph / 1e9,
                "tpot_graph_over_roofline": tpot_graph / roofline_s,
                "ttft_ms": ttft * 1e3, "ttft_prompt_tokens": len(long), "load_s": t_load,
                "tpot_ms_runs": [t * 1e3 for t in runs], "tpot_graph_ms_runs": [t * 1e3 for t in graph_runs],
            })
            print(f"{shape:>5} f16 {model.weight_bytes / 2**30:6.2f} GiB  TPOT {tpot * 1e3:7.3f} ms  "
                  f"{gbs:6.0f} GB/s = {100 * gbs / copy_gbs:5.1f}% of copy  ({tpot / roofline_s:4.2f}x roofline)  "
                  f"graph TPOT {tpot_graph * 1e3:7.3f} ms ({tpot_graph / roofline_s:4.2f}x)  "
                  f"TTFT({len(long)}) {ttft * 1e3:7.2f} ms", flush=True)
            del model
        except Exception as e:  # an unverified backend: record and go on
            rows.append({"shape": shape, "error": f"{type(e).__name__}: {e}"})
            print(f"{shape:>5}: FAILED {type(e).__name__}: {e}", flush=True)

    # speculative: draft -> target at forced acceptance 0.75, k = 5
    speculative, sanity = {}, None
    try:
        target = specstream.load(dirs[args.spec_target], dtype="f16", device="cuda")
        draft = specstream.load(dirs[args.spec_draft], dtype="f16", device="cuda")
        if args.spec_target not in tpot_of:
            tpot_of[args.spec_target] = tuple(statistics.median(decode_tpot(target, short, args.tokens, args.repeats, g))
                                              for g in (False, True))
        spec = SpeculativeConfig(k=5, forced_acceptance=0.75)
        a, k = 0.75, 5
        speculative = {"draft": args.spec_draft, "target": args.spec_target, "k": k, "forced_acceptance": a}
        for graphs in (False, True):
            with cuda_graphs(graphs):
                target.generate(short, max_new_tokens=8, draft=draft, speculative=spec, seed=0)  # warm-up
                sruns = [target.generate(short, max_new_tokens=args.tokens * 2 + 1, draft=draft, speculative=spec, seed=r)
                         for r in range(args.repeats)]
            stpot = statistics.median(r.stats.tpot_s for r in sruns)
            s = sruns[0].stats
            c = (s.draft_s / s.drafted) / (s.verify_s / s.target_forwards) if s.drafted else float("nan")
            expected = (1 - a ** (k + 1)) / ((1 - a) * (1 + k * c))
            base = tpot_of[args.spec_target][1 if graphs else 0]
            key = "graphs" if graphs else "eager"
            speculative[key] = {
                "measured_acceptance": s.acceptance_rate, "target_tpot_ms": base * 1e3, "spec_tpot_ms": stpot * 1e3,
                "speedup": base / stpot, "c": c, "expected_speedup": expected,
                "draft_ms_per_token": s.draft_s / s.drafted * 1e3 if s.drafted else None,
                "verify_ms_per_forward": s.verify_s / s.target_forwards * 1e3 if s.target_forwards else None,
                "spec_tpot_ms_runs": [r.stats.tpot_s * 1e3 for r in sruns],
            }
            print(f"speculative {args.spec_draft} -> {args.spec_target} a=0.75 k=5 ({key}): TPOT {stpot * 1e3:.3f} ms, "
                  f"speedup {base / stpot:.2f}x over {base * 1e3:.3f} ms (expected {expected:.2f}x at c={c:.3f}, "
                  f"acceptance {s.acceptance_rate:.2f})", flush=True)
        del target

        # sanity: GPU logits against the CPU backend on the smallest model
        ids = (np.arange(24, dtype=np.int32) * 37) % 50000
        small = shapes[0]
        gpu_logits = specstream.load(dirs[small], dtype="f16", device="cuda").forward(ids, chunk=1)
        cpu_logits = specstream.load(dirs[small], dtype="f16").forward(ids, chunk=1)
        sanity = float(np.abs(gpu_logits - cpu_logits).max() / np.abs(cpu_logits).max())
        print(f"sanity: {small} f16 GPU vs CPU logits rel err {sanity:.2e}", flush=True)
    except Exception as e:
        speculative["error"] = f"{type(e).__name__}: {e}"
        print(f"speculative/sanity: FAILED {type(e).__name__}: {e}", flush=True)

    torch_rows = {"skipped": "--no-torch"} if args.no_torch else torch_eager(
        {sh: dirs[sh] for sh in shapes}, args.prompt, args.tokens, args.repeats)
    for row in rows:
        t = torch_rows.get(row["shape"]) if isinstance(torch_rows, dict) else None
        if isinstance(t, dict) and "tpot_s" in t and "tpot_ms" in row:
            row["torch_tpot_ms"] = t["tpot_s"] * 1e3
            row["torch_ttft_ms"] = t["ttft_s"] * 1e3
            row["speedup_vs_torch"] = t["tpot_s"] / (row["tpot_ms"] / 1e3)
            row["speedup_vs_torch_graph"] = t["tpot_s"] / (row["tpot_graph_ms"] / 1e3)
            print(f"{row['shape']:>5} PyTorch eager TPOT {row['torch_tpot_ms']:7.3f} ms  TTFT {row['torch_ttft_ms']:7.2f} ms"
                  f"  -> specstream {row['speedup_vs_torch']:.2f}x", flush=True)
    if "skipped" in torch_rows:
        print(f"PyTorch comparison skipped: {torch_rows['skipped']}")

    slug = re.sub(r"[^a-z0-9]+", "_", gpu_name.lower()).strip("_") or "gpu"
    doc = {
        "benchmark": "cuda_decode", "gpu": gpu_name, "build": _core.build_info(), "machine": machine_info(),
        "copy_bandwidth_gbs": copy_gbs,
        "copy_bandwidth_note": "cudaMemcpy device to device, (bytes read + bytes written) / s, best of 10 x 1 GiB",
        "tokens": args.tokens, "repeats": args.repeats, "kv_cache_dtype": "f32",
        "rows": rows, "speculative": speculative, "torch_eager": torch_rows,
        "sanity_rel_err_gpu_vs_cpu": sanity, "create_models_s": t_create,
        "total_s": time.perf_counter() - t_start,
    }
    print(f"wrote {save_json(args.out or f'cuda_{slug}.json', doc)}")


if __name__ == "__main__":
    main()
