#!/usr/bin/env python3
"""Checks and measures the bundled default models (specstream/default_models).

Subcommands:

``golden``    (needs torch + transformers, e.g. /usr/bin/python3 on Debian)
              Loads each shipped directory with Hugging Face
              ``GPTNeoXForCausalLM`` in float32 and records logits of a fixed id
              sequence (a fixed subset of vocabulary columns, plus per-row
              logsumexp and argmax) in tests/fixtures/default_models_golden.npz,
              together with the first 1,024 token ids of pg2554 as the HF
              ``tokenizers`` library encodes them.
``evaluate``  (needs only specstream) Held-out perplexity with full / window /
              streaming caches, draft acceptance (greedy and sampled) and the
              speculative speedup on this machine, written to
              benchmarks/results/default_models.json.
``cards``     Writes MODEL_CARD.md into both model directories and
              specstream/default_models/SHA256SUMS from the JSON files.
``all``       evaluate + cards (golden must be run by an interpreter with torch).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "specstream" / "default_models"
GOLDEN = ROOT / "tests" / "fixtures" / "default_models_golden.npz"
RESULTS = ROOT / "benchmarks" / "results" / "default_models.json"
TRAIN_SUMMARY = ROOT / "benchmarks" / "results" / "train_default_models.json"
SHIPPED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

GOLDEN_TEXT = ("The old man walked slowly towards the bridge, thinking of the money he owed "
               "to his landlady; \"Well,\" said Raskolnikov, \"what of it?\"")
GOLDEN_LEN = 40
GOLDEN_COLS = 512
SLICE_TOKENS = 1024


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def golden_ids() -> np.ndarray:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(MODELS / "target" / "tokenizer.json"))
    ids = tok.encode(GOLDEN_TEXT).ids[:GOLDEN_LEN]
    rng = np.random.default_rng(7)
    extra = rng.integers(0, tok.get_vocab_size(), GOLDEN_LEN - len(ids)).tolist()
    return np.asarray(ids + extra, dtype=np.int32)


def golden_cols(vocab: int) -> np.ndarray:
    rng = np.random.default_rng(11)
    cols = np.concatenate([np.arange(64), rng.choice(np.arange(64, vocab), GOLDEN_COLS - 64, replace=False)])
    return np.sort(cols).astype(np.int32)


# --------------------------------------------------------------------------- golden (torch)

def cmd_golden(args) -> None:
    import torch
    from tokenizers import Tokenizer
    from transformers import GPTNeoXForCausalLM

    torch.set_num_threads(1)
    ids = golden_ids()
    out = {"ids": ids}
    for name in ("target", "draft"):
        model = GPTNeoXForCausalLM.from_pretrained(MODELS / name, torch_dtype=torch.float32)
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=torch.from_numpy(ids.astype(np.int64))[None]).logits[0].double().numpy()
        cols = golden_cols(logits.shape[1])
        out[f"{name}_cols"] = cols
        out[f"{name}_logits"] = logits[:, cols].astype(np.float32)
        m = logits.max(1, keepdims=True)
        out[f"{name}_lse"] = (m[:, 0] + np.log(np.exp(logits - m).sum(1))).astype(np.float32)
        out[f"{name}_argmax"] = logits.argmax(1).astype(np.int32)
        log(f"golden: {name} logits {logits.shape}, max |logit| {np.abs(logits).max():.3f}")
    tok = Tokenizer.from_file(str(MODELS / "target" / "tokenizer.json"))
    text = (ROOT / "specstream" / "data" / "pg2554.txt").read_text(encoding="utf-8")
    out["pg2554_ids"] = np.asarray(tok.encode(text[:20000]).ids[:SLICE_TOKENS], dtype=np.int16)
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(GOLDEN, **out)
    log(f"golden: wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")


# --------------------------------------------------------------------------- evaluate (specstream)

def _tokenize_all(tok, text: str, max_tokens: int) -> np.ndarray:
    # Tokenize a prefix long enough for max_tokens (about 4 chars per token here).
    n_chars = max_tokens * 8
    while True:
        ids = np.asarray(tok.encode(text[:n_chars]), dtype=np.int32)
        if len(ids) > max_tokens + 1 or n_chars >= len(text):
            return ids[:max_tokens]
        n_chars *= 2


def _ppl(nll: np.ndarray) -> float:
    return float(math.exp(float(np.mean(nll)))) if len(nll) else float("nan")


def _save(path: Path, res: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    os.replace(tmp, path)


def cmd_ppl_long(args) -> None:
    """Target-only perplexity on the first --long-tokens of pg2554 (all three
    caches), merged into an existing results JSON under "pg2554-<N>"."""
    import specstream
    from specstream import CacheConfig
    from specstream.defaults import default_text, load_default

    target, _, tok = load_default("f32")
    n = args.long_tokens
    arr = _tokenize_all(tok, default_text("pg2554"), n)
    res = json.loads(args.out.read_text())
    caches = {"full": CacheConfig(policy="full"), "window256": CacheConfig(policy="window", window=256),
              "streaming4+252": CacheConfig(policy="streaming", n_sink=4, window=252)}
    for cname in ("window256", "streaming4+252", "full"):
        t0 = time.time()
        nll = np.asarray(specstream.eval.perplexity(target, arr, cache=caches[cname], chunk=64).nll, np.float64)
        e = {"tokens": int(len(arr)), "ppl": _ppl(nll), "mean_nll": float(nll.mean()),
             "ppl_first_512": _ppl(nll[:511]), "ppl_after_512": _ppl(nll[511:]),
             "ppl_512_to_2048": _ppl(nll[511:2047]), "ppl_after_2048": _ppl(nll[2047:]),
             "seconds": round(time.time() - t0, 2)}
        res["perplexity"]["target"].setdefault(f"pg2554-{n}", {})[cname] = e
        _save(args.out, res)
        log(f"ppl target pg2554-{n} {cname}: {e}")


def cmd_evaluate(args) -> None:
    import specstream
    from specstream import CacheConfig, SpeculativeConfig
    from specstream.defaults import default_text, load_default

    target, draft, tok = load_default("f32")
    log(f"loaded {target} / {draft}; tokenizer {type(tok).__module__}.{type(tok).__name__}")
    res: dict = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "load_avg_at_start": os.getloadavg(), "specstream_kernels": specstream.cpu_kernels(),
                    "specstream_threads": specstream.get_num_threads()},
        "tokenizer": f"{type(tok).__module__}.{type(tok).__name__}",
        "dtype": "f32 compute from f16-stored weights",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    texts = {"pg2554": (default_text("pg2554"), args.pg_tokens),
             "wikitext-2-test": (default_text("wikitext-2-test"), args.wiki_tokens)}
    ids = {k: _tokenize_all(tok, t, n) for k, (t, n) in texts.items()}
    for k, v in ids.items():
        assert len(v) == texts[k][1], (k, len(v))
    caches = {
        "full": CacheConfig(policy="full"),
        "window256": CacheConfig(policy="window", window=256),
        "streaming4+252": CacheConfig(policy="streaming", n_sink=4, window=252),
    }
    ppl: dict = {}
    for mname, model in (("target", target), ("draft", draft)):
        for tname, arr in ids.items():
            for cname, cache in caches.items():
                t0 = time.time()
                r = specstream.eval.perplexity(model, arr, cache=cache, chunk=64)
                nll = np.asarray(r.nll, dtype=np.float64)
                entry = {
                    "tokens": int(len(arr)), "ppl": _ppl(nll), "mean_nll": float(nll.mean()),
                    "ppl_first_512": _ppl(nll[:511]), "ppl_after_512": _ppl(nll[511:]),
                    "ppl_512_to_2048": _ppl(nll[511:2047]), "ppl_after_2048": _ppl(nll[2047:]),
                    "seconds": round(time.time() - t0, 2),
                }
                ppl.setdefault(mname, {}).setdefault(tname, {})[cname] = entry
                log(f"ppl {mname} {tname} {cname}: {entry}")
        sl = ids["pg2554"][:1024]
        r = specstream.eval.perplexity(model, sl, cache=caches["full"], chunk=64)
        ppl[mname]["pg2554_first1024_full"] = {"tokens": 1024, "ppl": _ppl(np.asarray(r.nll, np.float64))}
    res["perplexity"] = ppl
    _save(args.out, res)
    notes = []
    for tname in ids:
        e = ppl["target"][tname]
        w, s, f = e["window256"]["ppl_after_512"], e["streaming4+252"]["ppl_after_512"], e["full"]["ppl_after_512"]
        verdict = ("sinks help" if s < 0.97 * w else "sinks make no material difference" if s <= 1.03 * w
                   else "sinks hurt")
        notes.append(f"target on {tname}, tokens after 512: window (no sinks) PPL {w:.2f}, streaming (4 sinks) "
                     f"PPL {s:.2f}, full cache PPL {f:.2f} -> {verdict} ({(w / s - 1) * 100:+.1f}% PPL from sinks)")
    res["sink_effect"] = "; ".join(notes) + "."
    log(res["sink_effect"])

    # Acceptance of the draft against the target, k=4, prompts from both held-out texts.
    spec = SpeculativeConfig(k=args.k)
    prompts = []
    for tname, arr in ids.items():
        n_prompts = 6 if tname == "pg2554" else 4
        starts = np.linspace(0, len(arr) - args.prompt_len - 1, n_prompts).astype(int)
        prompts.extend((tname, int(s), arr[s:s + args.prompt_len]) for s in starts)
    acc: dict = {}
    for mode, temp in (("greedy", 0.0), ("sampled_t1", 1.0)):
        drafted = accepted = forwards = new = 0
        per_prompt = []
        for i, (tname, start, p) in enumerate(prompts):
            g = target.generate(p, max_new_tokens=args.new_tokens, temperature=temp, seed=1000 + i,
                                draft=draft, speculative=spec)
            s = g.stats
            drafted += s.drafted
            accepted += s.accepted
            forwards += s.target_forwards
            new += s.new_tokens
            per_prompt.append({"text": tname, "start": start, "acceptance_rate": s.acceptance_rate,
                               "mean_accepted_length": s.mean_accepted_length})
        acc[mode] = {"k": args.k, "prompts": len(prompts), "prompt_len": args.prompt_len,
                     "new_tokens_each": args.new_tokens, "drafted": drafted, "accepted": accepted,
                     "acceptance_rate": accepted / max(1, drafted),
                     "tokens_per_target_forward": new / max(1, forwards), "per_prompt": per_prompt}
        log(f"acceptance {mode}: {acc[mode]['acceptance_rate']:.3f} "
            f"({acc[mode]['tokens_per_target_forward']:.2f} tokens/target forward)")
    res["acceptance"] = acc
    _save(args.out, res)

    # Speedup on this CPU: speculative vs target-only decoding, same prompt and length.
    speed: dict = {}
    for threads in args.speed_threads or sorted({1, specstream.get_num_threads()}):
        prev = specstream.get_num_threads()
        specstream.set_num_threads(threads)
        for mode, temp in (("greedy", 0.0), ("sampled_t1", 1.0)):
            for k in args.speed_ks:
                ratios, tps, base_tps = [], [], []
                for i in range(args.speed_repeats):
                    _, _, p = prompts[i % len(prompts)]
                    g = target.generate(p, max_new_tokens=args.speed_tokens, temperature=temp, seed=7 + i,
                                        draft=draft, speculative=SpeculativeConfig(k=k), measure_speedup=True)
                    ratios.append(g.stats.speedup)
                    tps.append(g.stats.tokens_per_s)
                    base_tps.append(g.stats.tokens_per_s / g.stats.speedup if g.stats.speedup else float("nan"))
                key = f"threads{threads}_{mode}_k{k}"
                speed[key] = {"threads": threads, "mode": mode, "k": k, "new_tokens": args.speed_tokens,
                              "repeats": args.speed_repeats, "speedup_median": float(np.median(ratios)),
                              "speedups": ratios, "spec_tokens_per_s_median": float(np.median(tps)),
                              "target_only_tokens_per_s_median": float(np.nanmedian(base_tps))}
                log(f"speed {key}: {speed[key]['speedup_median']:.2f}x "
                    f"({speed[key]['spec_tokens_per_s_median']:.0f} vs {speed[key]['target_only_tokens_per_s_median']:.0f} tok/s)")
        specstream.set_num_threads(prev)
    res["speedup"] = speed
    res["machine"]["load_avg_at_end"] = os.getloadavg()

    # Sample outputs (greedy and sampled) for the model card.
    prompt_text = "It was a bright cold day in April, and the old man"
    p = np.asarray(tok.encode(prompt_text), dtype=np.int32)
    samples = {}
    for mode, temp in (("greedy", 0.0), ("sampled_t0.8_topk40", 0.8)):
        g = target.generate(p, max_new_tokens=60, temperature=temp, top_k=40 if temp else 0, seed=3,
                            draft=draft, speculative=spec)
        samples[mode] = prompt_text + tok.decode(g.tokens)
    res["samples"] = samples
    for m, s in samples.items():
        log(f"sample {m}: {s!r}")
    _save(args.out, res)
    log(f"wrote {args.out}")


# --------------------------------------------------------------------------- cards

def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fmt(x: float, nd: int = 2) -> str:
    return f"{x:,.{nd}f}" if isinstance(x, (int, float)) and math.isfinite(x) else str(x)


def _card(name: str, train: dict, data: dict, ev: dict) -> str:
    cfg = json.loads((MODELS / name / "config.json").read_text())
    size = (MODELS / name / "model.safetensors").stat().st_size
    lines = [
        f"# specstream default {name} model",
        "",
        f"A {'small draft' if name == 'draft' else 'target'} GPT-NeoX (Pythia architecture) model trained from scratch "
        "for specstream's examples, tests and benchmarks, so that perplexity under KV-cache eviction, "
        "speculative decoding acceptance and the attention-sink question can be studied without downloads. "
        "It is a toy: a few million parameters trained for under an hour on two shared CPU cores. "
        "Re-create it with `scripts/train_default_models.py`; measurements come from "
        "`scripts/check_default_models.py` (specstream's own engine).",
        "",
        "## Architecture",
        "",
        f"- GPT-NeoX, {cfg['num_hidden_layers']} layers, d_model {cfg['hidden_size']}, "
        f"{cfg['num_attention_heads']} heads (head dim {cfg['hidden_size'] // cfg['num_attention_heads']}), "
        f"d_ff {cfg['intermediate_size']}, vocabulary {cfg['vocab_size']}",
        f"- parallel residual, rotary on {cfg['rotary_pct']:.0%} of each head (base {cfg['rotary_emb_base']}), "
        f"untied embed_out, GELU (erf), LayerNorm eps {cfg['layer_norm_eps']}",
        f"- {train['parameters']:,} parameters, stored as float16 safetensors ({size / 1e6:.1f} MB)",
        "- tokenizer: byte-level BPE of the GPT-NeoX family (NFC, ByteLevel without prefix space), 8,192 entries "
        "trained on the training text; id 0 = `<|endoftext|>` (bos = eos = 0)",
        "- trained with context 512; `max_position_embeddings` says 2048 as in Pythia, but positions beyond 512 "
        "were never seen in training",
        "",
        "## Training",
        "",
        "- data: War and Peace (Gutenberg #2600), Anna Karenina (#1399), tiny-shakespeare, WikiText-2 validation "
        f"({data.get('train_chars', 0):,} characters, {data.get('train_tokens', 0):,} tokens, documents separated by "
        "`<|endoftext|>`)",
        "- held out entirely (never trained on, not used for any choice): Crime and Punishment (#2554), "
        "WikiText-2 test",
        f"- {train['steps']} steps of {train['batch']} x {train['seq']} packed tokens: "
        f"**{train['tokens_seen']:,} tokens seen** ({train['epochs']:.2f} epochs), "
        f"{train['minutes']:.0f} minutes on 1 CPU thread (PyTorch 1.13, seed {train['seed']})",
        f"- AdamW (0.9, 0.95), weight decay {train['weight_decay']}, peak lr {train['peak_lr']}, "
        f"{train['warmup']} warmup steps, cosine to 10%, gradient clip 1.0",
    ]
    for note in train.get("notes", []):
        lines.append(f"- {note} (the shared 2-core machine slowed down under other jobs; the run was stopped at a "
                     "checkpoint and resumed with `--steps`)")
    if name == "draft":
        lines.append(f"- loss: {train['kd_alpha']} x T^2 x KL(target_T || draft_T) + {1 - train['kd_alpha']:.1f} x "
                     f"next-token cross-entropy, T = {train['kd_temperature']} (distilled from the default target)")
    else:
        lines.append("- loss: next-token cross-entropy")
    lines += [
        f"- final train loss (mean CE of the last logged steps): {train['final_train_ce_last_log']:.3f} nats/token",
        f"- held-out loss (f32 training weights, 512-token windows): pg2554 {train['heldout_ce_f32_40x512_pg2554']:.3f}, "
        f"WikiText-2 test {train['heldout_ce_f32_16x512_wikitext2_test']:.3f} nats/token",
        "",
        "## Evaluation (specstream engine, f32 compute from the stored f16 weights)",
        "",
    ]
    p = ev.get("perplexity", {}).get(name, {})
    if p:
        lines += [
            "Held-out perplexity, token by token from the start of each text (streaming evaluation, "
            "chunks of 64 tokens; every token sees exactly what the cache policy keeps). "
            "Cache of 256 keys for `window` (no sinks) and `streaming` (4 sink tokens + 252 recent).",
            "",
            "| text | tokens | cache | PPL all | PPL first 512 | PPL 512-2048 | PPL after 2048 |",
            "|---|---|---|---|---|---|---|",
        ]
        for tname in [k for k in p if k.startswith(("pg2554", "wikitext")) and isinstance(p[k], dict)
                      and any(c in p[k] for c in ("full", "window256", "streaming4+252"))]:
            for cname, e in p.get(tname, {}).items():
                lines.append(f"| {tname} | {e['tokens']:,} | {cname} | {_fmt(e['ppl'])} | {_fmt(e['ppl_first_512'])} | "
                             f"{_fmt(e['ppl_512_to_2048'])} | {_fmt(e['ppl_after_2048'])} |")
        if "pg2554_first1024_full" in p:
            lines += ["", f"pg2554 first 1,024 tokens, full cache: PPL {p['pg2554_first1024_full']['ppl']:.4f} "
                          "(checked by tests/test_default_models.py within 2%)."]
        lines.append("")
    if ev.get("sink_effect"):
        lines += ["Attention sinks: " + ev["sink_effect"], ""]
    acc = ev.get("acceptance")
    if acc:
        g, s = acc["greedy"], acc["sampled_t1"]
        lines += [
            f"Draft acceptance against the target (k = {g['k']}, {g['prompts']} held-out prompts of {g['prompt_len']} "
            f"tokens, {g['new_tokens_each']} new tokens each): greedy **{g['acceptance_rate']:.3f}** "
            f"({g['tokens_per_target_forward']:.2f} tokens per target forward), sampled at temperature 1 "
            f"**{s['acceptance_rate']:.3f}** ({s['tokens_per_target_forward']:.2f} tokens per target forward).",
            "",
        ]
    sp = ev.get("speedup")
    if sp:
        lines += ["Speculative speedup over target-only decoding on the machine it was measured on "
                  f"({ev['machine']['cpus']} shared CPUs, load average {ev['machine']['load_avg_at_start'][0]:.1f}; "
                  "other jobs were running, so timings are noisy):", "",
                  "| threads | mode | k | speedup (median) | spec tok/s | target-only tok/s |", "|---|---|---|---|---|---|"]
        for e in sp.values():
            lines.append(f"| {e['threads']} | {e['mode']} | {e['k']} | {e['speedup_median']:.2f}x | "
                         f"{e['spec_tokens_per_s_median']:.0f} | {e['target_only_tokens_per_s_median']:.0f} |")
        lines.append("")
    if ev.get("samples") and name == "target":
        lines += ["Samples (target, with the draft; prompt in the first clause):", ""]
        for m, s in ev["samples"].items():
            lines += [f"- {m}: {json.dumps(s, ensure_ascii=False)}"]
        lines.append("")
    lines += [
        "## Licence and intended use",
        "",
        "Weights: trained by the specstream authors, released with the package (Apache-2.0). Training texts are "
        "public domain (Project Gutenberg, Shakespeare) and WikiText-2 (CC BY-SA 3.0, Merity et al., 2016). "
        "For testing and benchmarking inference code only; the model knows little and makes things up.",
        "",
    ]
    return "\n".join(lines)


def cmd_cards(args) -> None:
    trains = json.loads(TRAIN_SUMMARY.read_text()) if TRAIN_SUMMARY.exists() else {}
    ev = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in ("target", "draft"):
        train = json.loads((MODELS / name / "training_summary.json").read_text())
        (MODELS / name / "MODEL_CARD.md").write_text(_card(name, train, trains.get("data", {}), ev))
    sums = []
    for name in ("target", "draft"):
        for f in SHIPPED_FILES:
            sums.append(f"{sha256(MODELS / name / f)}  {name}/{f}")
    heads = MODELS / "medusa" / "heads.safetensors"  # scripts/train_medusa.py
    if heads.exists():
        sums.append(f"{sha256(heads)}  medusa/heads.safetensors")
    (MODELS / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    log("cards and SHA256SUMS written")
    print((MODELS / "SHA256SUMS").read_text())
    print("sha256(SHA256SUMS) =", sha256(MODELS / "SHA256SUMS"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["golden", "evaluate", "ppl-long", "cards", "all"])
    p.add_argument("--long-tokens", type=int, default=20000)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--pg-tokens", type=int, default=20000)
    p.add_argument("--wiki-tokens", type=int, default=4096)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--speed-tokens", type=int, default=256)
    p.add_argument("--speed-repeats", type=int, default=3)
    p.add_argument("--speed-ks", type=int, nargs="+", default=[2, 4, 6])
    p.add_argument("--speed-threads", type=int, nargs="+", default=None,
                   help="thread counts to time (default: 1 and the core's default)")
    args = p.parse_args(argv)
    if args.cmd == "golden":
        cmd_golden(args)
    if args.cmd in ("evaluate", "all"):
        cmd_evaluate(args)
    if args.cmd == "ppl-long":
        cmd_ppl_long(args)
    if args.cmd in ("cards", "all"):
        cmd_cards(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
