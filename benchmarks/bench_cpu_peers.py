"""specstream on the CPU side by side with PyTorch eager and llama.cpp, in one run.

    python benchmarks/bench_cpu_peers.py [--shapes 70m,160m,410m] [--dtypes f32,bf16,int8]
        [--engines specstream,llama.cpp,pytorch] [--threads 2] [--tokens 32] [--prefill 512]

Measures, in this order and in one process tree:
  1. the machine's rooflines: read bandwidth (_core.read_bandwidth, all
     threads) and f32 FMA throughput (_core.peak_gflops);
  2. the prefill GEMMs alone: each layer matrix of each shape at n = --prefill
     tokens through _core.matmul (f32, bf16, int8 weights) and through NumPy's
     BLAS (f32), as GFLOP/s and fraction of the FMA peak;
  3. per (shape, precision, engine), a fresh subprocess (so that peak RSS is
     its own): batch-1 greedy decode tok/s after a 16-token prompt, achieved
     GB/s = bytes read per token / time per token, prefill tok/s of --prefill
     tokens (logits of the last one only, as a generator needs), peak RSS and
     the RSS before loading;
  4. the quality cost of int8: perplexity of int8 vs f32 weights on the
     random 160m model and on the bundled default model when present.

Engines and precisions: specstream f32/bf16/int8 (int8 = per-row scales,
quantized at load); llama.cpp (llama-cpp-python, model converted by
benchmarks/peers/to_gguf.py) f32/bf16/q8_0; PyTorch eager (HF transformers
GPTNeoXForCausalLM under /usr/bin/python3, benchmarks/peers/torch_decode.py)
f32/bf16/int8 (dynamic quantization). A peer that cannot be installed or run
is recorded with its error, never dropped.

Writes results/cpu_peers.json (after every row, so a partial run keeps what
it measured) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

RESULTS_DIR = HERE / "results"
TORCH_PYTHON = os.environ.get("SPECSTREAM_TORCH_PYTHON", "/usr/bin/python3")
PROMPT = 16
LLAMA_DTYPE = {"f32": "f32", "bf16": "bf16", "int8": "q8_0"}


def rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss() -> int:
    """VmHWM: this process's high-water RSS (ru_maxrss would also count the
    parent's RSS inherited across fork + exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def matrix_shapes(c) -> list[tuple[str, int, int]]:
    """(name, m, k) of each layer matrix."""
    d, ff = c.d_model, c.d_ff
    return [("qkv", 3 * d, d), ("out", d, d), ("fc1", ff, d), ("fc2", d, ff)]


def gemm_flops_per_token(c) -> int:
    return 2 * c.n_layer * sum(m * k for _, m, k in matrix_shapes(c))


def kv_read_bytes(c, context: float, elem: int) -> float:
    return 2 * c.n_layer * c.d_model * elem * context


# ------------------------------------------------------------------ workers
# Each runs in its own process and prints one JSON object on its last line.

def worker_specstream(args) -> dict[str, Any]:
    import numpy as np
    import specstream

    specstream.set_num_threads(args.threads)
    base = rss_now()
    t0 = time.perf_counter()
    model = specstream.load(args.model, dtype=args.dtype)
    load_s = time.perf_counter() - t0
    c = model.config
    rng = np.random.default_rng(0)
    full = specstream.CacheConfig(policy="full")

    def decode_once() -> float:
        prompt = rng.integers(0, c.vocab_size, PROMPT).astype(np.int32)
        return model.generate(prompt, max_new_tokens=args.tokens + 1, cache=full).stats.tpot_s

    def prefill_once() -> float:
        prompt = rng.integers(0, c.vocab_size, args.prefill).astype(np.int32)
        return model.generate(prompt, max_new_tokens=1, cache=full).stats.prefill_s

    decode_once()  # warm-up: pages the weights in
    tpots = [decode_once() for _ in range(args.repeats)]
    prefill_once()
    prefills = [prefill_once() for _ in range(max(1, args.repeats - 1))]
    tpot, pre = statistics.median(tpots), statistics.median(prefills)
    context = PROMPT + args.tokens / 2
    bytes_per_token = model.weight_bytes + kv_read_bytes(c, context, 4)
    return {
        "engine": "specstream", "version": _git_commit(), "dtype": args.dtype, "threads": args.threads,
        "kernels": specstream.cpu_kernels(),
        "decode_tok_s": 1 / tpot, "tpot_ms": tpot * 1e3, "tpot_ms_runs": [t * 1e3 for t in tpots],
        "bytes_per_token": bytes_per_token, "achieved_gbs": bytes_per_token / tpot / 1e9,
        "prefill_tok_s": args.prefill / pre, "prefill_s": pre,
        "prefill_gemm_gflops": gemm_flops_per_token(c) * args.prefill / pre / 1e9,
        "load_s": load_s, "weight_bytes": model.weight_bytes,
        "kv_cache_bytes": 2 * c.n_layer * c.d_model * 4 * (args.prefill + 1),  # f32, the prefill run's cache
        "peak_rss_bytes": peak_rss(), "base_rss_bytes": base,
    }


def worker_llama(args) -> dict[str, Any]:
    import numpy as np
    import gguf
    import llama_cpp

    from specstream.config import ModelConfig

    c = ModelConfig.from_dir(args.model)
    base = rss_now()
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(args.gguf), n_ctx=args.prefill + 64, n_batch=args.prefill,
                          n_ubatch=args.prefill, n_threads=args.threads, n_threads_batch=args.threads,
                          logits_all=False, verbose=False, use_mmap=True)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    reader = gguf.GGUFReader(str(args.gguf))
    tensor_bytes = {t.name: int(t.n_bytes) for t in reader.tensors}
    weight_bytes = sum(b for n, b in tensor_bytes.items() if n != "token_embd.weight") + \
        tensor_bytes["token_embd.weight"] // c.vocab_size
    del reader

    def decode_once() -> float:
        llm.reset()
        prompt = rng.integers(0, c.vocab_size, PROMPT).tolist()
        llm.eval(prompt)
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t = time.perf_counter()
        for _ in range(args.tokens):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        return (time.perf_counter() - t) / args.tokens

    def prefill_once() -> float:
        llm.reset()
        prompt = rng.integers(0, c.vocab_size, args.prefill).tolist()
        t = time.perf_counter()
        llm.eval(prompt)
        return time.perf_counter() - t

    decode_once()
    tpots = [decode_once() for _ in range(args.repeats)]
    prefill_once()
    prefills = [prefill_once() for _ in range(max(1, args.repeats - 1))]
    tpot, pre = statistics.median(tpots), statistics.median(prefills)
    bytes_per_token = weight_bytes + kv_read_bytes(c, PROMPT + args.tokens / 2, 2)  # f16 KV cache
    return {
        "engine": "llama.cpp", "version": f"llama-cpp-python {llama_cpp.__version__}",
        "dtype": LLAMA_DTYPE[args.dtype], "threads": args.threads,
        "decode_tok_s": 1 / tpot, "tpot_ms": tpot * 1e3, "tpot_ms_runs": [t * 1e3 for t in tpots],
        "bytes_per_token": bytes_per_token, "achieved_gbs": bytes_per_token / tpot / 1e9,
        "prefill_tok_s": args.prefill / pre, "prefill_s": pre,
        "prefill_gemm_gflops": gemm_flops_per_token(c) * args.prefill / pre / 1e9,
        "load_s": load_s, "weight_bytes": weight_bytes,
        "kv_cache_bytes": 2 * c.n_layer * c.d_model * 2 * (args.prefill + 64),
        "peak_rss_bytes": peak_rss(), "base_rss_bytes": base,
    }


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def run_worker(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Runs a worker; its last stdout line is JSON, or the error is recorded."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    except OSError as e:
        return {"error": f"cannot run {cmd[0]}: {e}"}
    lines = [ln for ln in p.stdout.splitlines() if ln.strip().startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {p.returncode}: " + " | ".join(tail)}
    out = json.loads(lines[-1])
    out["engine_label"] = out.pop("engine", None)
    out["wall_s"] = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------- main run

def engine_available(engine: str) -> Optional[str]:
    """None when the engine can run here, else why not."""
    if engine == "llama.cpp":
        try:
            import llama_cpp  # noqa: F401
            import gguf  # noqa: F401
        except Exception as e:  # ImportError, or a broken native build
            return f"llama-cpp-python/gguf not importable: {type(e).__name__}: {e}"
    if engine == "pytorch":
        try:
            p = subprocess.run([TORCH_PYTHON, "-c", "import torch, transformers"], capture_output=True, text=True,
                               timeout=120)
        except (OSError, subprocess.SubprocessError) as e:
            return f"{TORCH_PYTHON}: {e}"
        if p.returncode != 0:
            return f"{TORCH_PYTHON} has no torch/transformers: {p.stderr.strip().splitlines()[-1:]}"
    return None


def gemm_bench(shapes: list[str], n: int, threads: int, peak: float) -> list[dict[str, Any]]:
    """The layer GEMMs of each shape at n tokens: ours per dtype, NumPy BLAS."""
    import numpy as np
    import specstream
    from specstream import _core
    from specstream.models import pythia_config

    rows = []
    rng = np.random.default_rng(0)
    for shape in shapes:
        c = pythia_config(shape)
        for name, m, k in matrix_shapes(c):
            x = rng.standard_normal((n, k), dtype=np.float32)
            w = rng.standard_normal((m, k), dtype=np.float32)
            out = np.empty((n, m), np.float32)
            stored = {"f32": w, "bf16": (w.view(np.uint32) >> 16).astype(np.uint16), "int8": _core.pack(w, "int8")}
            row = {"shape": shape, "matrix": name, "m": m, "k": k, "n": n}
            for dt, wk in stored.items():
                _core.matmul(x, wk, dt, m, out=out)
                best = min(_timed(lambda: _core.matmul(x, wk, dt, m, out=out)) for _ in range(3))
                row[f"specstream_{dt}_gflops"] = 2 * n * m * k / best / 1e9
            wt = np.ascontiguousarray(w.T)
            np.matmul(x, wt, out=out)
            best = min(_timed(lambda: np.matmul(x, wt, out=out)) for _ in range(3))
            row["numpy_blas_f32_gflops"] = 2 * n * m * k / best / 1e9
            for key in [k_ for k_ in row if k_.endswith("_gflops")]:
                row[key.replace("_gflops", "_fraction_of_peak")] = row[key] / peak
            rows.append(row)
            print(f"  gemm {shape:>5} {name:>4} [{m}x{k}] n={n}: " + "  ".join(
                f"{k_.replace('_gflops', '')} {v:.1f}" for k_, v in row.items() if k_.endswith("_gflops")), flush=True)
    return rows


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def ppl_delta(shape_dir: Path, n_tokens: int, threads: int) -> dict[str, Any]:
    import numpy as np
    import specstream
    from specstream.eval import perplexity

    specstream.set_num_threads(threads)
    out: dict[str, Any] = {}
    m32 = specstream.load(shape_dir, dtype="f32")
    ids = np.random.default_rng(1).integers(0, m32.vocab_size, n_tokens).astype(np.int32)
    p32 = perplexity(m32, ids, chunk=128).ppl
    del m32
    p8 = perplexity(specstream.load(shape_dir, dtype="int8"), ids, chunk=128).ppl
    out["random_model"] = {"model": shape_dir.name, "tokens": n_tokens, "ppl_f32": p32, "ppl_int8": p8,
                           "relative_delta": p8 / p32 - 1}
    try:
        from specstream.defaults import default_text, load_default

        t32, _d, tok = load_default(dtype="f32")
        text_ids = tok.encode(default_text("wikitext-2-test"))[:2048] if tok is not None else None
        if text_ids is None:
            raise RuntimeError("the default model has no tokenizer")
        text_ids = np.asarray(getattr(text_ids, "ids", text_ids), np.int32)
        q32 = perplexity(t32, text_ids, chunk=256).ppl
        t8, _d8, _tok = load_default(dtype="int8", tokenizer=False)
        q8 = perplexity(t8, text_ids, chunk=256).ppl
        out["default_model"] = {"text": "wikitext-2-test (first 2048 tokens)", "tokens": int(len(text_ids)),
                                "ppl_f32": q32, "ppl_int8": q8,
                                "relative_delta": q8 / q32 - 1}
    except Exception as e:  # not bundled yet, or no tokenizer
        out["default_model"] = {"error": f"{type(e).__name__}: {e}"}
    return out


def markdown(doc: dict[str, Any]) -> str:
    lines = ["| shape | precision | engine | decode tok/s | GB/s | % of read BW | prefill tok/s | "
             "prefill GEMM GFLOP/s | peak RSS MiB (above start) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    bw = doc["read_bandwidth_gbs"]
    for r in doc["rows"]:
        if "error" in r:
            lines.append(f"| {r['shape']} | {r['precision']} | {r['engine']} | n/a: {r['error'][:80]} | | | | | |")
            continue
        rss = (r["peak_rss_bytes"] - r["base_rss_bytes"]) / 2**20
        lines.append(
            f"| {r['shape']} | {r['precision']} | {r['engine']} ({r.get('dtype', '')}) | {r['decode_tok_s']:.1f} | "
            f"{r['achieved_gbs']:.2f} | {100 * r['achieved_gbs'] / bw:.0f}% | {r['prefill_tok_s']:.0f} | "
            f"{r['prefill_gemm_gflops']:.1f} | {r['peak_rss_bytes'] / 2**20:.0f} ({rss:.0f}) |")
    return "\n".join(lines)


def summarize(doc: dict[str, Any]) -> None:
    """Ratios against the issue's targets."""
    by = {(r["shape"], r["precision"], r["engine"]): r for r in doc["rows"] if "error" not in r}
    checks = []
    for (shape, prec, eng), r in sorted(by.items()):
        if eng != "specstream":
            continue
        entry: dict[str, Any] = {"shape": shape, "precision": prec,
                                 "fraction_of_read_bandwidth": r["achieved_gbs"] / doc["read_bandwidth_gbs"],
                                 "prefill_gemm_fraction_of_peak": r["prefill_gemm_gflops"] / doc["peak_gflops"]}
        for peer in ("llama.cpp", "pytorch"):
            p = by.get((shape, prec, peer))
            if p:
                entry[f"decode_speedup_vs_{peer}"] = r["decode_tok_s"] / p["decode_tok_s"]
                entry[f"prefill_speedup_vs_{peer}"] = r["prefill_tok_s"] / p["prefill_tok_s"]
        budget = r["weight_bytes"] + r["kv_cache_bytes"]
        entry["rss_above_start_over_weights_plus_kv"] = (r["peak_rss_bytes"] - r["base_rss_bytes"]) / budget
        checks.append(entry)
    doc["targets"] = {
        "decode_410m_bf16_fraction_of_bandwidth >= 0.85": next(
            (c["fraction_of_read_bandwidth"] for c in checks if c["shape"] == "410m" and c["precision"] == "bf16"),
            None),
        "decode_speedup_vs_llama.cpp >= 1.2": {f"{c['shape']}/{c['precision']}": c.get("decode_speedup_vs_llama.cpp")
                                             for c in checks},
        "decode_speedup_vs_pytorch >= 3": {f"{c['shape']}/{c['precision']}": c.get("decode_speedup_vs_pytorch")
                                         for c in checks},
        "prefill_gemm_fraction_of_peak >= 0.5 (kernel alone, n=prefill)": {
            f"{g['shape']}/{g['matrix']}": g["specstream_f32_fraction_of_peak"] for g in doc.get("gemm", [])},
        "prefill_whole_model_fraction_of_peak": {f"{c['shape']}/{c['precision']}": c["prefill_gemm_fraction_of_peak"]
                                                 for c in checks},
        "peak_rss_above_start <= 1.1 x (weights + kv)": {
            f"{c['shape']}/{c['precision']}": c["rss_above_start_over_weights_plus_kv"] for c in checks},
    }
    doc["checks"] = checks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="70m,160m,410m")
    ap.add_argument("--dtypes", default="f32,bf16,int8")
    ap.add_argument("--engines", default="specstream,llama.cpp,pytorch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32, help="decode steps per run")
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ppl-tokens", type=int, default=512)
    ap.add_argument("--torch-tokens", type=int, default=8,
                    help="decode steps per PyTorch run (eager is slow here; its per-token time is steady)")
    ap.add_argument("--torch-repeats", type=int, default=1)
    ap.add_argument("--torch-timeout", type=float, default=900, help="seconds per PyTorch worker")
    ap.add_argument("--skip-gemm", action="store_true")
    ap.add_argument("--out", default="cpu_peers.json")
    ap.add_argument("--append", action="store_true",
                    help="keep the rows of other engines/shapes/precisions already in --out (rerun one peer)")
    ap.add_argument("--worker", choices=["specstream", "llama.cpp"], help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--gguf", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dtype", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        fn = worker_specstream if args.worker == "specstream" else worker_llama
        print(json.dumps(fn(args)))
        return

    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)  # for the BLAS comparison (before NumPy loads it)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import specstream
    from specstream import _core
    from common import machine_info, random_model, save_json

    specstream.set_num_threads(args.threads)
    shapes, dtypes, engines = args.shapes.split(","), args.dtypes.split(","), args.engines.split(",")
    doc: dict[str, Any] = {"benchmark": "cpu_peers", "machine": machine_info(), "settings": vars(args) | {
        "model": None, "gguf": None, "prompt_tokens": PROMPT}}
    doc["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in doc["settings"].items()}
    doc["read_bandwidth_gbs"] = max(_core.read_bandwidth(1 << 30, 5) for _ in range(2))
    doc["peak_gflops"] = _core.peak_gflops(2.0, 5)
    print(f"read bandwidth {doc['read_bandwidth_gbs']:.1f} GB/s, FMA peak {doc['peak_gflops']:.1f} GFLOP/s "
          f"({args.threads} threads), load average {os.getloadavg()}", flush=True)
    if not args.skip_gemm:
        doc["gemm"] = gemm_bench(shapes, args.prefill, args.threads, doc["peak_gflops"])
    doc["unavailable"] = {e: why for e in engines if (why := engine_available(e))}
    for e, why in doc["unavailable"].items():
        print(f"  {e}: unavailable ({why})", flush=True)
    doc["rows"] = []
    if args.append and (RESULTS_DIR / args.out).exists():
        old = json.loads((RESULTS_DIR / args.out).read_text())
        doc["rows"] = [r for r in old.get("rows", [])
                       if not (r["engine"] in engines and r["shape"] in shapes and r["precision"] in dtypes)]
        doc["earlier_runs"] = old.get("earlier_runs", []) + [{"machine": old.get("machine"), "read_bandwidth_gbs": old.get(
            "read_bandwidth_gbs"), "peak_gflops": old.get("peak_gflops"), "engines": sorted({r["engine"] for r in doc["rows"]})}]
        if "gemm" not in doc and "gemm" in old:
            doc["gemm"] = old["gemm"]
        if "int8_quality" in old:
            doc["int8_quality"] = old["int8_quality"]
    for shape in shapes:
        for prec in dtypes:
            ckpt = random_model(shape, "bf16" if prec == "bf16" else "f32")
            for engine in engines:
                row: dict[str, Any] = {"shape": shape, "precision": prec, "engine": engine}
                if engine in doc["unavailable"]:
                    row["error"] = "not installed: " + doc["unavailable"][engine]
                elif engine == "specstream":
                    row |= run_worker([sys.executable, __file__, "--worker", "specstream", "--model", str(ckpt),
                                       "--dtype", prec, "--threads", str(args.threads), "--tokens", str(args.tokens),
                                       "--prefill", str(args.prefill), "--repeats", str(args.repeats)], 3600)
                elif engine == "llama.cpp":
                    gg = ckpt.parent / f"{ckpt.name}-{LLAMA_DTYPE[prec]}.gguf"
                    if not gg.exists():
                        from peers.to_gguf import convert
                        convert(ckpt, gg, LLAMA_DTYPE[prec])
                    row |= run_worker([sys.executable, __file__, "--worker", "llama.cpp", "--model", str(ckpt),
                                       "--gguf", str(gg), "--dtype", prec, "--threads", str(args.threads),
                                       "--tokens", str(args.tokens), "--prefill", str(args.prefill),
                                       "--repeats", str(args.repeats)], 3600)
                else:
                    row |= run_worker([TORCH_PYTHON, str(HERE / "peers" / "torch_decode.py"), str(ckpt),
                                       "--dtype", prec, "--threads", str(args.threads), "--tokens",
                                       str(args.torch_tokens), "--prefill", str(args.prefill), "--repeats",
                                       str(args.torch_repeats)], args.torch_timeout)
                    if "error" not in row:
                        from specstream.config import ModelConfig
                        c = ModelConfig.from_dir(ckpt)
                        elem = 2 if prec == "bf16" else 4
                        wbytes = (c.num_params(embeddings=False) + c.vocab_size * c.d_model) * elem
                        if prec == "int8":  # qint8 Linear weights, f32 embed_out? (quantize_dynamic: Linear only)
                            wbytes = c.num_params(embeddings=False) + c.vocab_size * c.d_model
                        row["bytes_per_token"] = wbytes + kv_read_bytes(c, PROMPT + args.tokens / 2, elem)
                        row["achieved_gbs"] = row["bytes_per_token"] / (row["tpot_ms"] / 1e3) / 1e9
                        row["prefill_gemm_gflops"] = gemm_flops_per_token(c) * args.prefill / row["prefill_s"] / 1e9
                        row["weight_bytes"] = wbytes
                doc["rows"].append(row)
                if "error" in row:
                    print(f"  {shape:>5} {prec:>4} {engine:>10}: {row['error']}", flush=True)
                else:
                    print(f"  {shape:>5} {prec:>4} {engine:>10}: decode {row['decode_tok_s']:7.1f} tok/s "
                          f"{row['achieved_gbs']:5.2f} GB/s  prefill {row['prefill_tok_s']:7.1f} tok/s  "
                          f"peak RSS {row['peak_rss_bytes'] / 2**20:7.0f} MiB", flush=True)
                doc["machine"]["load_average_end"] = os.getloadavg()
                save_json(args.out, doc)
    if "int8" in dtypes and "specstream" in engines:
        ppl_shape = "160m" if "160m" in shapes else shapes[0]
        doc["int8_quality"] = ppl_delta(random_model(ppl_shape, "f32"), args.ppl_tokens, args.threads)
        print(f"  int8 PPL delta: {json.dumps(doc['int8_quality'])}", flush=True)
    summarize(doc)
    doc["machine"]["load_average_end"] = os.getloadavg()
    doc["table"] = markdown(doc)
    path = save_json(args.out, doc)
    print(doc["table"])
    print(json.dumps(doc["targets"], indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
