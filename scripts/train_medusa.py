#!/usr/bin/env python3
"""Trains Medusa heads for the bundled default target, the target frozen.

NumPy only (specstream computes the frozen target's hidden states; no torch):

    python scripts/train_medusa.py all        # hidden states, training, write the heads, measure
    python scripts/train_medusa.py train      # hidden states (cached under --work) + training
    python scripts/train_medusa.py measure    # tokens per target forward / speedup of the shipped heads

Convention (the C drafter's, ``csrc/spec/medusa.c``): after a verification
step the drafter holds the target's final hidden state ``x_t`` (after the
final LayerNorm) of the last token whose key went into the cache, token t.
Its logits gave the pending token t+1 (the next step's tree root), so head
``i`` (0-based) proposes token ``t + 2 + i`` from ``x_t``:

    logits_i = embed_out @ (x_t + SiLU(w_i x_t + b_i))

Each head trains only ``w_i`` and ``b_i`` (initialised to zero, the Medusa
paper's choice: a head starts as the target's own LM head, shifted); the
unembedding is the target's ``embed_out``, frozen and shared. The loss is the
sum over heads of the mean cross-entropy against the true token t+2+i of the
training text; Adam with linear warm-up and cosine decay, minibatches drawn
with a fixed seed. ``--labels target`` (the target's greedy token there) and
``--labels soft`` (its whole distribution: self-distillation) are the
alternatives that were measured: on the bundled target, ``target`` labels
raise greedy tokens per target forward and lower sampled ones, ``soft`` is
about even with text labels (numbers in benchmarks/results/train_medusa.json,
"label_ablation"). Three heads: a fourth was accepted too rarely to pay for
its pass through the unembedding.

Cost on two shared cores: hidden states of 306,000 positions in about 2
minutes, training 1,500 steps of 256 positions in 4 to 7 minutes.

Data: the default models' training texts (``scripts/train_default_models.py``,
TRAIN_FILES: War and Peace, Anna Karenina, tiny-shakespeare, WikiText-2
valid), tokenised with the bundled tokenizer into one stream (documents
separated by <|endoftext|>). Hidden states come from windows of 255 tokens
(the most ``Model.forward_tree`` takes) at seeded random offsets of that
stream, each read from an empty context. Held out (never trained on):
Crime and Punishment (pg2554), where top-1 accuracy per head is measured.

Outputs: ``specstream/default_models/medusa/heads.safetensors`` (with
metadata) and ``benchmarks/results/train_medusa.json`` (training curve,
held-out accuracy per head, baselines, and the ``measure`` results).
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # thread counts must be fixed before NumPy / OpenMP load
    import sys as _sys

    _threads = "2"
    for _i, _a in enumerate(_sys.argv):
        if _a == "--threads" and _i + 1 < len(_sys.argv):
            _threads = _sys.argv[_i + 1]
        elif _a.startswith("--threads="):
            _threads = _a.split("=", 1)[1]
    for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_v, _threads)

import argparse
import hashlib
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT_HEADS = ROOT / "specstream" / "default_models" / "medusa" / "heads.safetensors"
OUT_JSON = ROOT / "benchmarks" / "results" / "train_medusa.json"
WINDOW = 255            # Model.forward_tree's largest batch
HELDOUT_OFFSET = 10000  # pg2554 tokens skipped (Gutenberg header, contents) before the held-out windows


# --------------------------------------------------------------------------- the loss

def silu(z: np.ndarray) -> np.ndarray:
    return z / (1.0 + np.exp(-z))


def head_states(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pre-activations z = x w^T + b, head outputs x + SiLU(z)) for x [n, d]."""
    z = x @ w.T + b
    return z, x + silu(z)


def medusa_loss(x: np.ndarray, ws: np.ndarray, bs: np.ndarray, embed_out: np.ndarray, labels: np.ndarray,
                grad: bool = True):
    """Loss and gradients of Medusa heads sharing a frozen unembedding.

    ``x`` [n, d]: the target's final hidden states; ``ws`` [H, d, d] and
    ``bs`` [H, d]: the heads (``w`` maps input to output rows, ``w @ x``);
    ``embed_out`` [V, d]; ``labels``: what head h must predict for row j,
    either token ids [n, H] or probabilities [H, n, V] (soft labels, e.g. the
    target's own distribution). Returns ``(loss, per_head, dws, dbs)`` with
    ``loss`` = sum over heads of the mean cross-entropy, ``per_head`` [H]
    those means, and the gradients of ``loss`` (``None`` when ``grad`` is
    false). The heads' unembeddings run as one product; arithmetic in x's
    dtype.
    """
    n_heads, n = ws.shape[0], x.shape[0]
    zs, hs = [], []
    for i in range(n_heads):
        z, h = head_states(x, ws[i], bs[i])
        zs.append(z)
        hs.append(h)
    logits = np.concatenate(hs) @ embed_out.T          # [H*n, V], head-major rows
    logits -= logits.max(axis=1, keepdims=True)
    soft = labels.ndim == 3
    if soft:
        probs = labels.reshape(n_heads * n, -1)
        dot = np.einsum("rv,rv->r", probs, logits)     # sum_v p_v * logit_v
    else:
        y = labels.T.reshape(-1)
        rows = np.arange(y.size)
        dot = logits[rows, y]
    np.exp(logits, out=logits)
    denom = logits.sum(axis=1, keepdims=True)
    nll = np.log(denom[:, 0]) - dot                    # -sum_v p_v log softmax_v
    per_head = nll.reshape(n_heads, n).mean(axis=1)
    loss = float(per_head.sum())
    if not grad:
        return loss, per_head, None, None
    logits /= denom                                    # softmax
    if soft:
        logits -= probs
    else:
        logits[rows, y] -= 1.0
    logits /= n                                        # d loss / d logits (each head's mean)
    dh = logits @ embed_out                            # [H*n, d]
    dws = np.empty_like(ws)
    dbs = np.empty_like(bs)
    for i in range(n_heads):
        z = zs[i]
        s = 1.0 / (1.0 + np.exp(-z))
        dz = dh[i * n:(i + 1) * n] * (s * (1.0 + z * (1.0 - s)))
        dws[i] = dz.T @ x
        dbs[i] = dz.sum(axis=0)
    return loss, per_head, dws, dbs


def head_predictions(x: np.ndarray, ws: np.ndarray, bs: np.ndarray, embed_out: np.ndarray, top: int = 1,
                     chunk: int = 1024) -> np.ndarray:
    """Top-``top`` tokens [H, n, top] of every head for hidden states x [n, d]
    (most probable first)."""
    out = np.empty((ws.shape[0], x.shape[0], top), np.int64)
    for s in range(0, x.shape[0], chunk):
        xc = x[s:s + chunk]
        for i in range(ws.shape[0]):
            lg = head_states(xc, ws[i], bs[i])[1] @ embed_out.T
            part = np.argpartition(-lg, top - 1, axis=1)[:, :top] if top > 1 else lg.argmax(1)[:, None]
            if top > 1:
                order = np.argsort(-np.take_along_axis(lg, part, 1), axis=1)
                part = np.take_along_axis(part, order, 1)
            out[i, s:s + chunk] = part
    return out


# --------------------------------------------------------------------------- data

def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def _rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def embed_out_of(target) -> np.ndarray:
    """The target's unembedding [vocab_rows, d] as float32 (what its f32
    forward computes with)."""
    from specstream import safetensors as st

    w = st.load(Path(target.path) / "model.safetensors")["embed_out.weight"]
    return np.ascontiguousarray(w, np.float32)


def training_stream(data_dir: Path, tok) -> np.ndarray:
    """Token ids of the default models' training documents, each followed by
    <|endoftext|> (id 0), as train_default_models.py builds them."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import train_default_models as tdm

    pieces = []
    for doc in tdm.training_documents(data_dir):
        pieces.append(np.asarray(tok.encode(doc), np.int32))
        pieces.append(np.zeros(1, np.int32))
    return np.concatenate(pieces)


def heldout_stream(tok) -> np.ndarray:
    from specstream.defaults import default_text

    return np.asarray(tok.encode(default_text("pg2554")), np.int32)


def window_hidden(target, ids: np.ndarray, starts: np.ndarray, n_heads: int, desc: str):
    """Hidden states [n_windows*WINDOW, d] of windows ids[s:s+WINDOW] (each
    from an empty context), text labels [.., n_heads + 1] (column 0 the next
    token, for the target's own head; column 1 + i head i's token t+2+i) and
    the target's labels, the same columns filled with its greedy choice at
    that position given the text before it (-1 past the window's end)."""
    from tqdm import tqdm

    d = target.config.d_model
    x = np.empty((len(starts) * WINDOW, d), np.float32)
    y = np.empty((len(starts) * WINDOW, n_heads + 1), np.int32)
    g = np.full((len(starts) * WINDOW, n_heads + 1), -1, np.int32)
    parents = np.arange(WINDOW) - 1
    pos = np.arange(WINDOW)
    for j, s in enumerate(tqdm(starts, desc=desc, unit="win", mininterval=2.0)):
        s = int(s)
        lg, h = target.forward_tree([], ids[s:s + WINDOW], parents)
        rows = slice(j * WINDOW, (j + 1) * WINDOW)
        x[rows] = h
        best = lg.argmax(1)
        for c in range(n_heads + 1):
            y[rows, c] = ids[s + pos + 1 + c]
            g[j * WINDOW:(j + 1) * WINDOW - c, c] = best[c:]
    return x, y, g


def hidden_data(args, target, tok):
    """Training and held-out hidden states, cached under --work."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(json.dumps([sha256(Path(target.path) / "model.safetensors"), args.train_windows,
                                     args.heldout_windows, args.seed, WINDOW, HELDOUT_OFFSET, 5]).encode()
                         ).hexdigest()[:16]
    cache = work / f"hidden_{key}.npz"
    if cache.exists():
        log(f"hidden states from {cache}")
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    t0 = time.time()
    stream = training_stream(Path(args.data_dir), tok)
    held = heldout_stream(tok)
    log(f"training stream: {stream.size} tokens; pg2554: {held.size} tokens ({time.time() - t0:.1f} s)")
    rng = np.random.default_rng([args.seed, 1])
    starts = np.sort(rng.choice(stream.size - WINDOW - 8, size=args.train_windows, replace=False))
    hstarts = HELDOUT_OFFSET + WINDOW * np.arange(args.heldout_windows)
    t1 = time.time()
    x, y, g = window_hidden(target, stream, starts, 4, "train hidden")
    t2 = time.time()
    hx, hy, hg = window_hidden(target, held, hstarts, 4, "held-out hidden")
    out = {"x": x, "y": y, "g": g, "hx": hx, "hy": hy, "hg": hg, "starts": starts,
           "stream_tokens": np.int64(stream.size),
           "hidden_s": np.float64(t2 - t1 + time.time() - t2)}
    np.savez(cache, **out)
    log(f"hidden states: {x.shape[0]} train, {hx.shape[0]} held-out in {time.time() - t1:.0f} s -> {cache}")
    return out


# --------------------------------------------------------------------------- training

def evaluate(x, y, g, ws, bs, E, chunk: int = 2048) -> dict:
    """Held-out cross-entropy and top-1 / top-5 accuracy per head against the
    text, and top-1 agreement with the target's own greedy choice there."""
    n_heads = ws.shape[0]
    ce = np.zeros(n_heads)
    for s in range(0, x.shape[0], chunk):
        _, per, _, _ = medusa_loss(x[s:s + chunk], ws, bs, E, y[s:s + chunk, 1:1 + n_heads], grad=False)
        ce += per * min(chunk, x.shape[0] - s)
    top5 = head_predictions(x, ws, bs, E, top=5)
    lab = y[:, 1:1 + n_heads].T[:, :, None]
    tg = g[:, 1:1 + n_heads].T
    agree = [float((top5[i, :, 0] == tg[i])[tg[i] >= 0].mean()) for i in range(n_heads)]
    return {"ce": (ce / x.shape[0]).tolist(),
            "top1": (top5[:, :, 0:1] == lab).any(2).mean(1).tolist(),
            "top5": (top5 == lab).any(2).mean(1).tolist(),
            "top1_vs_target_greedy": agree}


def baselines(x, y, E, n_heads: int, train_y) -> dict:
    """What the heads are measured against: the target's own head (next token
    and, unchanged, each later token: the zero-initialised heads), and the
    most frequent training token."""
    base = (x @ E.T).argmax(1)
    mode = int(np.bincount(train_y[:, 0]).argmax())
    return {"target_head_next_token_top1": float((base == y[:, 0]).mean()),
            "target_head_as_head_i_top1": [float((base == y[:, 1 + i]).mean()) for i in range(n_heads)],
            "most_frequent_token": mode,
            "most_frequent_token_top1": [float((y[:, 1 + i] == mode).mean()) for i in range(n_heads)]}


def soft_labels(x: np.ndarray, idx: np.ndarray, n_heads: int, E: np.ndarray) -> np.ndarray:
    """The target's own distributions [H, n, V] over the tokens heads 0..H-1
    predict at rows idx: row t + 1 + i's next-token softmax for head i."""
    rows = (idx[None, :] + 1 + np.arange(n_heads)[:, None]).reshape(-1)
    p = x[rows] @ E.T
    p -= p.max(axis=1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=1, keepdims=True)
    return p.reshape(n_heads, idx.size, -1)


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def train(args, data, E) -> tuple[np.ndarray, np.ndarray, dict]:
    from tqdm import tqdm

    x, hx, hy, hg = data["x"], data["hx"], data["hy"], data["hg"]
    H, d = args.heads, x.shape[1]
    # rows whose labels all exist: t + 1 + H inside the window, for both kinds
    keep = np.flatnonzero(data["g"][:, H] >= 0)
    y = data["y"] if args.labels == "text" else data["g"]
    ws = np.zeros((H, d, d), np.float32)
    bs = np.zeros((H, d), np.float32)
    m = [np.zeros_like(ws), np.zeros_like(bs)]
    v = [np.zeros_like(ws), np.zeros_like(bs)]
    b1, b2, eps = 0.9, 0.999, 1e-8
    rng = np.random.default_rng([args.seed, 2])
    curve, evals = [], []
    evals.append({"step": 0, **evaluate(hx, hy, hg, ws, bs, E)})
    acc, n_acc = np.zeros(H), 0
    t0 = time.time()
    bar = tqdm(range(args.steps), desc="train", unit="step", mininterval=2.0)
    order, pos = rng.permutation(keep), 0
    for step in bar:
        if pos + args.batch > order.size:
            order, pos = rng.permutation(keep), 0
        idx = np.sort(order[pos:pos + args.batch])
        pos += args.batch
        loss, per, dws, dbs = medusa_loss(x[idx], ws, bs, E, soft_labels(x, idx, H, E) if args.labels == "soft"
                                          else y[idx, 1:1 + H])
        lr = lr_at(step, args)
        for j, (p, g) in enumerate(((ws, dws), (bs, dbs))):
            m[j] *= b1
            m[j] += (1 - b1) * g
            v[j] *= b2
            v[j] += (1 - b2) * g * g
            mhat = m[j] / (1 - b1 ** (step + 1))
            vhat = v[j] / (1 - b2 ** (step + 1))
            p -= (lr * mhat / (np.sqrt(vhat) + eps)).astype(p.dtype)
        acc += per
        n_acc += 1
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            curve.append({"step": step + 1, "lr": lr, "train_ce": (acc / n_acc).round(5).tolist(),
                          "seconds": round(time.time() - t0, 2)})
            bar.set_postfix(ce=" ".join(f"{c:.3f}" for c in acc / n_acc))
            acc, n_acc = np.zeros(H), 0
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            ev = {"step": step + 1, **evaluate(hx, hy, hg, ws, bs, E)}
            evals.append(ev)
            log(f"step {step + 1}: held-out ce {np.round(ev['ce'], 3).tolist()} top1 {np.round(ev['top1'], 4).tolist()}")
    return ws, bs, {"curve": curve, "heldout_evals": evals, "train_s": time.time() - t0,
                    "training_positions": int(keep.size)}


def cmd_train(args) -> None:
    import specstream
    from specstream.defaults import load_default
    from specstream.medusa import save_medusa

    specstream.set_num_threads(args.threads)
    target, _, tok = load_default()
    E = embed_out_of(target)
    data = hidden_data(args, target, tok)
    # the hidden states are the ones whose logits the target computes
    probe = tok.encode("It was a bright cold day in April, and the clocks were striking thirteen.")
    lg, h = target.forward_tree([], probe, np.arange(len(probe)) - 1)
    assert np.allclose(h @ E.T, lg, atol=2e-3), "embed_out @ hidden does not give the target's logits"
    log(f"train: {data['x'].shape[0]} positions, {args.heads} heads, {args.steps} steps of {args.batch}")
    ws, bs, hist = train(args, data, E)
    final = hist["heldout_evals"][-1]
    base = baselines(data["hx"], data["hy"], E, args.heads, data["y"])
    tensors = {}
    for i in range(args.heads):
        tensors[f"medusa.{i}.w"] = ws[i]
        tensors[f"medusa.{i}.b"] = bs[i]
    last_train = hist["curve"][-1]["train_ce"]
    meta = {
        "format": "specstream Medusa heads (specstream/medusa.py)",
        "target": "specstream/default_models/target",
        "target_model_sha256": sha256(Path(target.path) / "model.safetensors"),
        "convention": "head i reads the target's final hidden state (after the final LayerNorm) at token t "
                      "and predicts token t+2+i; lm_head shared (the target's embed_out)",
        "n_heads": str(args.heads),
        "training_positions": str(hist["training_positions"]),
        "training_tokens_seen": str(args.steps * args.batch),
        "steps": str(args.steps),
        "batch": str(args.batch),
        "labels": args.labels,
        "lr": str(args.lr),
        "seed": str(args.seed),
        "train_ce_last_log": json.dumps([round(c, 4) for c in last_train]),
        "heldout": f"pg2554, {data['hx'].shape[0]} positions from token {HELDOUT_OFFSET}",
        "heldout_ce": json.dumps([round(c, 4) for c in final["ce"]]),
        "heldout_top1": json.dumps([round(c, 4) for c in final["top1"]]),
        "script": "scripts/train_medusa.py",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_medusa(out, tensors, meta)
    log(f"heads -> {out} ({out.stat().st_size} bytes)")
    # the file computes what was trained
    heads = specstream.load_medusa(out, target)
    got = heads.logits(data["hx"][0])
    want = np.stack([head_states(data["hx"][:1], ws[i], bs[i])[1][0] @ E.T for i in range(args.heads)])
    assert np.allclose(got, want, atol=1e-3), float(np.abs(got - want).max())
    res = json.loads(Path(args.json).read_text()) if Path(args.json).exists() else {}
    res.update({
        "config": {k: (_rel(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "cmd"},
        "data": {"training_stream_tokens": int(data["stream_tokens"]), "training_positions": hist["training_positions"],
                 "window": WINDOW, "heldout": "pg2554", "heldout_offset": HELDOUT_OFFSET,
                 "heldout_positions": int(data["hx"].shape[0]), "hidden_s": round(float(data["hidden_s"]), 1),
                 "train_files": "scripts/train_default_models.py TRAIN_FILES (pg2554 and WikiText-2 test held out)"},
        "heads_file": _rel(out),
        "heads_sha256": sha256(out),
        "heldout_final": final,
        "baselines": base,
        "curve": hist["curve"],
        "heldout_evals": hist["heldout_evals"],
        "train_s": round(hist["train_s"], 1),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads},
    })
    Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    log(f"results -> {args.json}")
    log(f"held-out top1 per head {np.round(final['top1'], 4).tolist()} (target's head shifted: "
        f"{np.round(base['target_head_as_head_i_top1'], 4).tolist()}, most frequent token: "
        f"{np.round(base['most_frequent_token_top1'], 4).tolist()})")


# --------------------------------------------------------------------------- measure

def cmd_measure(args) -> None:
    """Tokens per target forward and speedup over target-only decoding of the
    shipped heads on the bundled target, greedy and sampled."""
    import specstream
    from specstream import SpeculativeConfig
    from specstream.defaults import load_default, default_text

    specstream.set_num_threads(args.threads)
    target, _, tok = load_default()
    heads = specstream.load_medusa(args.out, target)
    text = default_text("pg2554")
    ids = tok.encode(text)
    prompts = [ids[HELDOUT_OFFSET + 5000 + 997 * j: HELDOUT_OFFSET + 5000 + 997 * j + args.prompt_len]
               for j in range(args.prompts)]
    n = heads.n_heads
    settings = sorted({(1, 1, 1), (min(2, n), 1, min(2, n)), (n, 1, n), (n, 2, 8), (n, 3, 16), (n, 4, 32)})
    modes = {"greedy": {"temperature": 0.0}, "t0.8_p0.95": {"temperature": 0.8, "top_p": 0.95}}
    rows, base = [], {}
    for mode, samp in modes.items():
        tpot = [target.generate(p, max_new_tokens=args.new_tokens, seed=100 + j, speculative=None,
                                **samp).stats.tpot_s for j, p in enumerate(prompts)]
        base[mode] = {"target_only_ms_per_token": round(1e3 * float(np.median(tpot)), 3)}
        log(f"{mode}: target-only {base[mode]['target_only_ms_per_token']} ms/token")
        for k, br, mn in settings:
            tpf, spd, acc, dms, vms = [], [], [], [], []
            for j, p in enumerate(prompts):
                for rep in range(args.repeats):
                    out = target.generate(p, max_new_tokens=args.new_tokens, seed=100 + j, draft=heads,
                                          speculative=SpeculativeConfig(method="medusa", k=k, branch=br,
                                                                        max_nodes=mn),
                                          measure_speedup=True, **samp)
                    st = out.stats
                    tpf.append(st.tokens_per_target_forward)
                    spd.append(st.speedup)
                    dms.append(1e3 * st.draft_s / max(1, st.target_forwards))
                    vms.append(1e3 * st.verify_s / max(1, st.target_forwards))
                    a = list(st.acceptance_by_depth)[:k]
                    acc.append(a + [math.nan] * (k - len(a)))
            row = {"mode": mode, "k": k, "branch": br, "max_nodes": mn,
                   "tokens_per_target_forward": round(float(np.mean(tpf)), 3),
                   "speedup_median": round(float(np.median(spd)), 3),
                   "speedup_mean": round(float(np.mean(spd)), 3),
                   "draft_ms_per_step": round(float(np.median(dms)), 3),
                   "verify_ms_per_step": round(float(np.median(vms)), 3),
                   "acceptance_by_depth": [round(float(a), 3) for a in np.nanmean(np.array(acc, float), 0)]}
            rows.append(row)
            log(json.dumps(row))
    res = json.loads(Path(args.json).read_text()) if Path(args.json).exists() else {}
    res["generation"] = {"prompts": f"{args.prompts} pg2554 slices of {args.prompt_len} tokens",
                         "new_tokens": args.new_tokens, "repeats": args.repeats, "threads": args.threads,
                         "cache": "full", "target_only": base, "rows": rows,
                         "note": "speedup = tokens/s over target-only decoding of the same length in the same call "
                                 "(GenerationStats.speedup, median over prompts); draft/verify ms per step are "
                                 "medians of GenerationStats.draft_s / verify_s per target forward; machine shared "
                                 "with other jobs"}
    Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    log(f"results -> {args.json}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["all", "train", "measure"])
    p.add_argument("--data-dir", type=Path, default=Path("/work/shared/data/text"))
    p.add_argument("--work", type=Path, default=ROOT / "build" / "train_medusa")
    p.add_argument("--out", type=Path, default=OUT_HEADS)
    p.add_argument("--json", type=Path, default=OUT_JSON)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--heads", type=int, default=3, choices=[1, 2, 3, 4],
                   help="3: a 4th head was accepted too rarely to pay for its unembedding (measured)")
    p.add_argument("--train-windows", type=int, default=1200, help="255-token windows of training text")
    p.add_argument("--heldout-windows", type=int, default=40, help="255-token windows of pg2554")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--labels", choices=["text", "target", "soft"], default="text",
                   help="what head i learns to predict at token t: the text's token t+2+i ('text'), the "
                        "target's greedy choice for it given the text up to t+1+i ('target'), or the target's "
                        "whole distribution there ('soft'; self-distillation)")
    p.add_argument("--min-lr-frac", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args(argv)
    if args.cmd in ("all", "train"):
        cmd_train(args)
    if args.cmd in ("all", "measure"):
        cmd_measure(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
