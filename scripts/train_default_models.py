#!/usr/bin/env python3
"""Trains the bundled default models: a byte-level BPE tokenizer, a ~9M
parameter GPT-NeoX target and a ~2.5M parameter draft distilled from it.

Maintainer-only: needs PyTorch and Hugging Face ``transformers`` (Debian's CPU
build is enough: ``apt-get install python3-torch`` then
``/usr/bin/python3 -m pip install --break-system-packages transformers``).
Users and tests never need torch; they read the shipped directories under
``specstream/default_models/``.

    /usr/bin/python3 scripts/train_default_models.py all            # everything
    /usr/bin/python3 scripts/train_default_models.py target --steps 600
    /usr/bin/python3 scripts/train_default_models.py export

Phases (``all`` runs them in order; each one is skipped when its output
exists, and a training phase resumes from its last checkpoint):

``tokenizer``  BPE on the training text only (8192 entries, id 0 = <|endoftext|>)
``data``       token ids of the training stream and of the held-out texts
``target``     AdamW + warmup + cosine, next-token cross-entropy
``draft``      the same, loss = alpha * T^2 * KL(target_T || draft_T) + (1 - alpha) * CE
``export``     HF directories (f16 safetensors) into specstream/default_models/
``plot``       loss curves (CSV/JSON/PNG) into benchmarks/results/

Determinism: data order, initialisation and the schedule depend only on the
seed and the step counts. When ``--steps``/``--draft-steps`` are not given,
the number of steps is sized from the throughput measured during the first
minute so that the phase fits ``--target-minutes``/``--draft-minutes``; the
chosen number is stored in the checkpoint and logged, and passing it back
explicitly reproduces the run (up to floating-point summation order of the
BLAS library). A killed run continues from its last checkpoint (written every
``--ckpt-minutes``) with identical data order.

Training data: ``/work/shared/data/text`` (or ``--data-dir``): War and Peace
(pg2600), Anna Karenina (pg1399), tiny-shakespeare and WikiText-2 valid.
Held out entirely: Crime and Punishment (pg2554) and WikiText-2 test.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-openmp"


def _maybe_reexec_with_openblas() -> None:
    """Debian's torch calls the system BLAS; the reference libblas is ~30x
    slower than OpenBLAS. If libopenblas0-openmp is installed but not the
    active alternative, re-run this script with it on LD_LIBRARY_PATH."""
    if os.environ.get("SPECSTREAM_TRAIN_NO_REEXEC") or not os.path.isdir(_OPENBLAS):
        return
    if _OPENBLAS in os.environ.get("LD_LIBRARY_PATH", ""):
        return
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = _OPENBLAS + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    # The thread count of OpenBLAS/OpenMP must be fixed before the library loads.
    threads = "1"
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            threads = sys.argv[i + 1]
        elif a.startswith("--threads="):
            threads = a.split("=", 1)[1]
    env.setdefault("OMP_NUM_THREADS", threads)
    env.setdefault("OPENBLAS_NUM_THREADS", threads)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


TRAIN_FILES = [
    "gutenberg/pg2600.txt",
    "gutenberg/pg1399.txt",
    "shakespeare/tinyshakespeare.txt",
    "wikitext-2/valid.txt",
]
HELDOUT_FILES = {"pg2554": "gutenberg/pg2554.txt", "wikitext-2-test": "wikitext-2/test.txt"}
EOS = "<|endoftext|>"
VOCAB = 8192

TARGET_SHAPE = dict(num_hidden_layers=6, hidden_size=256, num_attention_heads=4, intermediate_size=1024)
DRAFT_SHAPE = dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512)


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


# --------------------------------------------------------------------------- data

_WIKI_TITLE = re.compile(r"^ = [^=].* = $")


def split_documents(rel: str, text: str) -> list[str]:
    """Books are one document each; WikiText is split into its articles
    (a line `` = Title = `` starts an article)."""
    if not rel.startswith("wikitext"):
        return [text]
    docs: list[list[str]] = []
    for line in text.split("\n"):
        if _WIKI_TITLE.match(line) or not docs:
            docs.append([])
        docs[-1].append(line)
    return ["\n".join(d) for d in docs if "".join(d).strip()]


def training_documents(data_dir: Path) -> list[str]:
    docs: list[str] = []
    for rel in TRAIN_FILES:
        docs.extend(split_documents(rel, (data_dir / rel).read_text(encoding="utf-8")))
    return docs


def train_tokenizer(data_dir: Path, out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    docs = training_documents(data_dir)
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    assert tok.token_to_id(EOS) == 0, "the end-of-text token must be id 0"
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tok.save(str(tmp), pretty=True)
    os.replace(tmp, out)
    log(f"tokenizer: {tok.get_vocab_size()} entries -> {out}")


def build_data(data_dir: Path, tok_path: Path, work: Path) -> None:
    import numpy as np
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_path))
    docs = training_documents(data_dir)
    pieces = []
    for enc in tok.encode_batch(docs):
        pieces.append(np.asarray(enc.ids, dtype=np.uint16))
        pieces.append(np.zeros(1, np.uint16))  # <|endoftext|> after each document
    train = np.concatenate(pieces)
    np.save(work / "train_ids.npy", train)
    info = {"train_tokens": int(train.size), "train_documents": len(docs),
            "train_chars": int(sum(len(d) for d in docs))}
    for name, rel in HELDOUT_FILES.items():
        ids = np.asarray(tok.encode((data_dir / rel).read_text(encoding="utf-8")).ids, dtype=np.uint16)
        np.save(work / f"heldout_{name}.npy", ids)
        info[f"heldout_{name}_tokens"] = int(ids.size)
    (work / "data.json").write_text(json.dumps(info, indent=2))
    log(f"data: {info}")


# --------------------------------------------------------------------------- model

def neox_config(shape: dict, vocab: int = VOCAB):
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=vocab,
        max_position_embeddings=2048,
        rotary_pct=0.25,
        rotary_emb_base=10000,
        layer_norm_eps=1e-5,
        use_parallel_residual=True,
        hidden_act="gelu",
        tie_word_embeddings=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        initializer_range=0.02,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=True,
        **shape,
    )


def new_model(shape: dict, seed: int):
    import torch
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(neox_config(shape))
    return model


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


class Batches:
    """Deterministic batches of packed ``seq+1``-token windows: epoch e uses
    the windows of the stream shifted by a seed-dependent offset, in a
    seed-dependent permutation; step s takes samples s*B .. s*B+B-1."""

    def __init__(self, ids, seq: int, batch: int, seed: int) -> None:
        self.ids, self.seq, self.batch, self.seed = ids, seq, batch, seed
        self.n_windows = (ids.size - 1) // (seq + 1) - 1
        self._epoch = -1

    def _epoch_order(self, epoch: int):
        import numpy as np

        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._offset = int(rng.integers(0, self.seq + 1))
            self._perm = rng.permutation(self.n_windows)
            self._epoch = epoch
        return self._offset, self._perm

    def get(self, step: int):
        import numpy as np
        import torch

        rows = []
        for sample in range(step * self.batch, (step + 1) * self.batch):
            epoch, k = divmod(sample, self.n_windows)
            off, perm = self._epoch_order(epoch)
            start = off + int(perm[k]) * (self.seq + 1)
            rows.append(self.ids[start:start + self.seq + 1].astype(np.int64))
        x = torch.from_numpy(np.stack(rows))
        return x[:, :-1], x[:, 1:]


def heldout_windows(work: Path, seq: int, per_text: dict):
    """Fixed evaluation windows: the first n non-overlapping ``seq+1`` windows
    of each held-out text."""
    import numpy as np
    import torch

    out = {}
    for name, n in per_text.items():
        ids = np.load(work / f"heldout_{name}.npy").astype(np.int64)
        n = min(n, (ids.size - 1) // (seq + 1))
        x = torch.from_numpy(ids[: n * (seq + 1)].reshape(n, seq + 1))
        out[name] = (x[:, :-1], x[:, 1:])
    return out


def eval_loss(model, windows, batch: int = 8) -> dict:
    import torch
    import torch.nn.functional as F

    model.eval()
    res = {}
    with torch.no_grad():
        for name, (x, y) in windows.items():
            tot, n = 0.0, 0
            for i in range(0, x.shape[0], batch):
                logits = model(input_ids=x[i:i + batch]).logits
                tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[i:i + batch].reshape(-1),
                                       reduction="sum").item()
                n += y[i:i + batch].numel()
            res[name] = tot / n
    model.train()
    return res


def lr_at(step: int, total: int, peak: float, warmup: int, final_frac: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    if total <= warmup:
        return peak
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def _save_ckpt(path: Path, state: dict) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def train_phase(name: str, args, work: Path, teacher=None) -> None:
    """Trains the target (teacher None) or the draft (distilled from teacher)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    pdir = work / name
    pdir.mkdir(parents=True, exist_ok=True)
    final = pdir / "final.pt"
    if final.exists():
        log(f"{name}: already trained ({final})")
        return
    is_draft = teacher is not None
    shape = DRAFT_SHAPE if is_draft else TARGET_SHAPE
    seed = args.seed + (1 if is_draft else 0)
    peak = args.draft_lr if is_draft else args.lr
    warmup = args.warmup
    budget_s = 60 * (args.draft_minutes if is_draft else args.target_minutes)
    fixed_steps = args.draft_steps if is_draft else args.steps

    model = new_model(shape, seed)
    decay = [p for n_, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n_, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=peak, betas=(0.9, 0.95), eps=1e-8)
    ids = np.load(work / "train_ids.npy")
    batches = Batches(ids, args.seq, args.batch, seed)
    windows = heldout_windows(work, args.seq, {"pg2554": 8, "wikitext-2-test": 4})

    step, total, elapsed, rows, notes = 0, fixed_steps, 0.0, [], []
    ckpt = pdir / "ckpt.pt"
    if ckpt.exists():
        st = torch.load(ckpt)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, total, elapsed, rows = st["step"], st["total"], st["elapsed"], st["rows"]
        notes = st.get("notes", [])
        log(f"{name}: resumed at step {step}/{total} ({elapsed / 60:.1f} min trained)")
        if fixed_steps is not None and total is not None and fixed_steps != total:
            # Re-sizing a run in flight (e.g. when the shared machine slows down):
            # the cosine schedule continues from here towards the new end.
            notes.append(f"at step {step} the schedule was re-sized from {total} to {fixed_steps} steps")
            log(f"{name}: {notes[-1]}")
            total = max(step + 1, fixed_steps)
    log(f"{name}: {n_params(model):,} parameters, shape {shape}, batch {args.batch}x{args.seq}")

    T, alpha = args.kd_temperature, args.kd_alpha
    model.train()
    t_last_ckpt = time.time()
    t0 = time.time() - elapsed
    run_loss, run_n = 0.0, 0
    calib_from = None
    while total is None or step < total:
        if total is None and calib_from is None and step >= 2:
            calib_from = (step, time.time())  # skip the first (slow) steps
        lr = lr_at(step, total if total is not None else 10**9, peak, warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batches.get(step)
        logits = model(input_ids=x).logits
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss = ce
        kl_val = float("nan")
        if is_draft:
            with torch.no_grad():
                t_logits = teacher(input_ids=x).logits
            kl = F.kl_div(F.log_softmax(logits / T, -1), F.log_softmax(t_logits / T, -1),
                          reduction="batchmean", log_target=True) / x.shape[1]
            kl_val = kl.item()
            loss = alpha * T * T * kl + (1 - alpha) * ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        opt.step()
        step += 1
        run_loss += ce.item()
        run_n += 1
        now = time.time()
        if total is None and calib_from is not None and now - t0 >= args.calibrate_s:
            s0, ts = calib_from
            sec_per_step = (now - ts) / max(1, step - s0)
            total = max(step + 1, int(0.92 * budget_s / sec_per_step))
            log(f"{name}: {args.batch * args.seq / sec_per_step:.0f} tokens/s ({sec_per_step:.2f} s/step) "
                f"-> {total} steps to fit {budget_s / 60:.0f} min (pass --{'draft-' if is_draft else ''}steps "
                f"{total} to reproduce)")
        if step % args.log_every == 0 or step == total:
            row = {"step": step, "tokens": step * args.batch * args.seq, "lr": lr,
                   "train_ce": run_loss / run_n, "grad_norm": gnorm, "minutes": (now - t0) / 60,
                   "tokens_per_s": step * args.batch * args.seq / max(1e-9, now - t0)}
            if is_draft:
                row["kl"] = kl_val
            if step % (args.log_every * args.eval_every) == 0 or step == total:
                for k, v in eval_loss(model, windows).items():
                    row[f"heldout_{k}"] = v
            rows.append(row)
            run_loss, run_n = 0.0, 0
            log(f"{name} " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in row.items()))
            _write_csv(pdir / "log.csv", rows)
        if time.time() - t_last_ckpt >= 60 * args.ckpt_minutes and total is not None:
            _save_ckpt(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                              "total": total, "elapsed": time.time() - t0, "rows": rows, "notes": notes})
            t_last_ckpt = time.time()
            log(f"{name}: checkpoint at step {step}")

    windows = heldout_windows(work, args.seq, {"pg2554": 40, "wikitext-2-test": 16})
    final_eval = eval_loss(model, windows)
    summary = {"phase": name, "parameters": n_params(model), "shape": shape, "steps": step,
               "batch": args.batch, "seq": args.seq, "tokens_seen": step * args.batch * args.seq,
               "train_tokens_available": int(ids.size), "epochs": step * args.batch * (args.seq + 1) / ids.size,
               "peak_lr": peak, "warmup": warmup, "weight_decay": args.weight_decay, "seed": seed,
               "minutes": (time.time() - t0) / 60, "final_train_ce_last_log": rows[-1]["train_ce"] if rows else None,
               "heldout_ce_f32_40x512_pg2554": final_eval["pg2554"],
               "heldout_ce_f32_16x512_wikitext2_test": final_eval["wikitext-2-test"]}
    if notes:
        summary["notes"] = notes
    if is_draft:
        summary.update(kd_temperature=T, kd_alpha=alpha)
    (pdir / "summary.json").write_text(json.dumps(summary, indent=2))
    _save_ckpt(final, {"model": model.state_dict(), "rows": rows, "summary": summary})
    log(f"{name}: done {summary}")


def load_trained(work: Path, name: str):
    import torch

    st = torch.load(work / name / "final.pt")
    model = new_model(DRAFT_SHAPE if name == "draft" else TARGET_SHAPE, 0)
    model.load_state_dict(st["model"])
    model.eval()
    return model, st


# --------------------------------------------------------------------------- export

def export(work: Path, out_root: Path) -> None:
    import torch

    tok_path = work / "tokenizer.json"
    for name in ("target", "draft"):
        model, st = load_trained(work, name)
        out = out_root / name
        out.mkdir(parents=True, exist_ok=True)
        model.to(torch.float16)
        model.config.torch_dtype = "float16"
        model.save_pretrained(out, safe_serialization=True)
        for extra in ("generation_config.json",):
            if (out / extra).exists():
                os.remove(out / extra)
        shutil.copyfile(tok_path, out / "tokenizer.json")
        os.chmod(out / "model.safetensors", 0o644)
        (out / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "GPTNeoXTokenizerFast", "bos_token": EOS, "eos_token": EOS,
            "unk_token": EOS, "add_prefix_space": False, "model_max_length": 2048,
            "clean_up_tokenization_spaces": False}, indent=2) + "\n")
        (out / "training_summary.json").write_text(json.dumps(st["summary"], indent=2) + "\n")
        log(f"export: {name} -> {out} ({(out / 'model.safetensors').stat().st_size / 1e6:.1f} MB)")


def plot(work: Path, res_dir: Path) -> None:
    res_dir.mkdir(parents=True, exist_ok=True)
    summaries = {}
    curves = {}
    for name in ("target", "draft"):
        if not (work / name / "log.csv").exists():
            continue
        shutil.copyfile(work / name / "log.csv", res_dir / f"train_{name}.csv")
        with open(work / name / "log.csv") as f:
            curves[name] = list(csv.DictReader(f))
        if (work / name / "summary.json").exists():
            summaries[name] = json.loads((work / name / "summary.json").read_text())
    info = json.loads((work / "data.json").read_text()) if (work / "data.json").exists() else {}
    (res_dir / "train_default_models.json").write_text(json.dumps({"data": info, "runs": summaries},
                                                                   indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plot: matplotlib missing, PNG skipped")
        return
    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], curves.items()):
        tok = [float(r["tokens"]) / 1e6 for r in rows]
        ax.plot(tok, [float(r["train_ce"]) for r in rows], label="train CE")
        for key, lab in (("heldout_pg2554", "held-out pg2554"), ("heldout_wikitext-2-test", "held-out WikiText-2 test")):
            pts = [(t, float(r[key])) for t, r in zip(tok, rows) if r.get(key)]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=lab)
        if name == "draft" and rows and "kl" in rows[0]:
            ax.plot(tok, [float(r["kl"]) for r in rows], label="KL(target_T || draft_T)")
        ax.set_xlabel("tokens seen (M)")
        ax.set_ylabel("nats / token")
        ax.set_title(f"{name}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(res_dir / "train_loss.png", dpi=110)
    log(f"plot: {res_dir / 'train_loss.png'}")


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=["all", "tokenizer", "data", "target", "draft", "export", "plot"])
    p.add_argument("--data-dir", type=Path, default=Path("/work/shared/data/text"))
    p.add_argument("--work", type=Path, default=ROOT / "build" / "train_default_models")
    p.add_argument("--out", type=Path, default=ROOT / "specstream" / "default_models")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1,
                   help="torch/BLAS threads. 1 by default: on the shared 2-core machine, 2 threads "
                        "ran 4x SLOWER than 1 (every small GEMM waits for a descheduled thread)")
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--draft-lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=40)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=None, help="target steps (default: sized from the time budget)")
    p.add_argument("--draft-steps", type=int, default=None)
    p.add_argument("--target-minutes", type=float, default=45)
    p.add_argument("--draft-minutes", type=float, default=20)
    p.add_argument("--calibrate-s", type=float, default=60)
    p.add_argument("--kd-temperature", type=float, default=1.5)
    p.add_argument("--kd-alpha", type=float, default=0.8)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=5, help="held-out eval every N log lines")
    p.add_argument("--ckpt-minutes", type=float, default=3)
    args = p.parse_args(argv)

    ph = args.phase
    if ph == "plot":  # needs no torch: runs in any interpreter with matplotlib
        plot(args.work, args.results)
        return 0
    _maybe_reexec_with_openblas()
    import torch

    torch.set_num_threads(args.threads)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    (work / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))
    tok_path = work / "tokenizer.json"
    if ph in ("all", "tokenizer") and not tok_path.exists():
        train_tokenizer(args.data_dir, tok_path)
    if ph in ("all", "data") and not (work / "train_ids.npy").exists():
        build_data(args.data_dir, tok_path, work)
    if ph in ("all", "target"):
        train_phase("target", args, work)
    if ph in ("all", "draft"):
        teacher, _ = load_trained(work, "target")
        for q in teacher.parameters():
            q.requires_grad_(False)
        train_phase("draft", args, work, teacher=teacher)
    if ph in ("all", "export"):
        export(work, args.out)
    if ph in ("all", "export"):
        plot(work, args.results)  # the PNG needs matplotlib; else run the "plot" phase with another python
    return 0


if __name__ == "__main__":
    sys.exit(main())
