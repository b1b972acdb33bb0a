"""PyTorch eager peer: HF transformers GPTNeoXForCausalLM on the CPU.

Run by benchmarks/bench_cpu_peers.py as a subprocess with the interpreter that
has torch + transformers (Debian's /usr/bin/python3), one model per process so
that its peak RSS is its own:

    /usr/bin/python3 benchmarks/peers/torch_decode.py MODEL_DIR --dtype f32|bf16|int8 \\
        --threads 2 --prompt 16 --tokens 32 --prefill 512

Prints one JSON object: decode tok/s (greedy, KV cache via past_key_values),
prefill tok/s for `--prefill` tokens (hidden states of every token, logits of
the last one, as a generator needs), peak RSS and RSS before loading. int8 is
torch.ao dynamic quantization of every nn.Linear (qint8 weights, per-tensor
activations quantized on the fly), PyTorch's own weight-only-ish CPU int8.
"""

import argparse
import json
import resource
import statistics
import sys
import time


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16", "int8"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch
    from transformers import GPTNeoXForCausalLM

    torch.set_num_threads(args.threads)
    base_rss = rss_now()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    t0 = time.perf_counter()
    model = GPTNeoXForCausalLM.from_pretrained(args.model, torch_dtype=dtype).eval()
    if args.dtype == "int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    load_s = time.perf_counter() - t0
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)

    def decode_once() -> float:
        ids = torch.randint(0, vocab, (1, args.prompt), generator=gen)
        with torch.inference_mode():
            out = model(ids, use_cache=True)
            past = out.past_key_values
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            t = time.perf_counter()
            for _ in range(args.tokens):
                out = model(tok, past_key_values=past, use_cache=True)
                past = out.past_key_values
                tok = out.logits[:, -1].argmax(-1, keepdim=True)
            return (time.perf_counter() - t) / args.tokens

    def prefill_once() -> float:
        ids = torch.randint(0, vocab, (1, args.prefill), generator=gen)
        with torch.inference_mode():
            t = time.perf_counter()
            h = model.gpt_neox(ids, use_cache=True).last_hidden_state
            model.embed_out(h[:, -1:])
            return time.perf_counter() - t

    decode_once()  # warm-up
    tpots = [decode_once() for _ in range(args.repeats)]
    if args.repeats > 1:  # the decode runs warmed the kernels up already
        prefill_once()
    prefills = [prefill_once() for _ in range(args.repeats)]
    tpot, pre = statistics.median(tpots), statistics.median(prefills)
    print(json.dumps({
        "engine": "pytorch-eager", "version": f"torch {torch.__version__}, transformers "
        + __import__("transformers").__version__, "dtype": args.dtype, "threads": args.threads,
        "decode_tok_s": 1.0 / tpot, "tpot_ms": tpot * 1e3, "tpot_ms_runs": [t * 1e3 for t in tpots],
        "prefill_tok_s": args.prefill / pre, "prefill_s": pre, "load_s": load_s,
        "peak_rss_bytes": peak_rss(), "base_rss_bytes": base_rss,
    }))


if __name__ == "__main__":
    sys.exit(main())
