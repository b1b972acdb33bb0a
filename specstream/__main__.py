"""Command line: ``python -m specstream <command> ...`` (also ``specstream``).

Commands:
    generate       text (or token ids) from a model, optionally speculative,
                   with any cache policy; prints tokens/s, acceptance, memory
    eval-ppl       perplexity of a text streamed through a cache policy
    create-random  write a random Pythia-shaped model directory
    sweep          run an ablation grid from a TOML sweep file (resumable JSONL store)
    merge          unite a sweep directory's shard files into results.jsonl
    plot           Pareto fronts, acceptance vs k, recommended configurations

Every field of CacheConfig and SpeculativeConfig is a flag of its own
(``--window 252``, ``--compress-every 16``, ``--k 4``, ``--adaptive``...),
generated from the dataclasses, so new switches appear here automatically.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from . import _contract
from .generation import CacheConfig, SpeculativeConfig

DEMO_DIR = Path.home() / ".cache" / "specstream" / "demo"


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, prefix: str, title: str, kind: str) -> None:
    """One flag per dataclass field, documented and limited by the core's
    schema of that kind; unset flags keep the dataclass default."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + (prefix + f.name).replace("_", "-")
        hint = hints[f.name]
        args = typing.get_args(hint)
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        dest = prefix.replace("-", "_") + f.name
        core = _contract.field(kind, f.name)
        doc = f"{core['doc']} (default: {f.default})"
        if base is bool:
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=doc)
        elif core["choices"]:
            group.add_argument(flag, dest=dest, choices=core["choices"], default=None, help=doc)
        elif float in args and str in args:
            group.add_argument(flag, dest=dest, type=_float_or_word, default=None, help=f"a number or a keyword: {doc}")
        elif base is tuple:
            group.add_argument(flag, dest=dest, type=_int_tuple, default=None, help=f"comma-separated ints: {doc}")
        else:
            group.add_argument(flag, dest=dest, type=base, default=None, help=doc)


def _float_or_word(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text  # a keyword such as "measured"; the dataclass validates it


def _int_tuple(text: str) -> tuple:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _dataclass_from_args(cls: type, ns: argparse.Namespace, prefix: str) -> Any:
    values = {}
    for f in dataclasses.fields(cls):
        v = getattr(ns, prefix.replace("-", "_") + f.name)
        if v is not None:
            values[f.name] = v
    return cls(**values)


def _load_pair(args: argparse.Namespace) -> tuple[Any, Optional[Any], Optional[Any], str]:
    """(target, draft or None, tokenizer or None, description)."""
    from .model import load

    if args.draft_revision is not None and args.draft in (None, "none"):
        raise ValueError("--draft-revision needs --draft (a Hugging Face repo id)")
    if args.model == "default":
        _refuse_revision_of_default(args)
        try:
            from .defaults import load_default

            target, draft, tok = load_default(dtype=args.dtype)
            return target, (None if args.draft == "none" else draft), tok, "bundled default pair"
        except (ImportError, FileNotFoundError):
            target_dir, draft_dir = _demo_models()
            target = load(target_dir, dtype=args.dtype)
            draft = None if args.draft == "none" else load(draft_dir, dtype=args.dtype)
            return target, draft, None, f"random demo pair in {DEMO_DIR} (no bundled models in this install)"
    target = load(args.model, dtype=args.dtype, revision=args.revision, download=args.download)
    draft = None
    if args.draft not in (None, "none"):
        draft = load(args.draft, dtype=args.dtype, revision=args.draft_revision, download=args.download)
    return target, draft, target.tokenizer, _describe(args.model, args.revision)


def _refuse_revision_of_default(args: argparse.Namespace) -> None:
    if args.revision is not None:
        raise ValueError("--revision needs --model (a Hugging Face repo id): the bundled models have no revisions")


def _describe(model: str, revision: Optional[str]) -> str:
    return model if revision is None else f"{model} (revision {revision})"


def _demo_models() -> tuple[Path, Path]:
    """A random 70m-shape target and a small random draft, created once."""
    from .models import create_random

    target, draft = DEMO_DIR / "target-70m", DEMO_DIR / "draft"
    if not (target / "config.json").exists():
        print(f"creating a random pythia-70m-shape target in {target} (once) ...", file=sys.stderr)
        create_random("70m", target, seed=0)
    if not (draft / "config.json").exists():
        create_random({"n_layer": 2, "d_model": 128, "n_head": 4, "d_ff": 512, "vocab_size": 50304}, draft, seed=1)
    return target, draft


def _prompt_ids(args: argparse.Namespace, tokenizer: Any, vocab: int) -> np.ndarray:
    if args.prompt_ids:
        return np.array([int(x) for x in args.prompt_ids.split(",") if x.strip()], dtype=np.int32)
    if tokenizer is None:
        if args.prompt:
            print("note: this model has no tokenizer.json; ignoring --prompt and using token ids 1..8 "
                  "(pass --prompt-ids to choose)", file=sys.stderr)
        return np.arange(1, 9, dtype=np.int32) % vocab
    return np.asarray(tokenizer.encode(args.prompt or "The"), dtype=np.int32)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def cmd_generate(args: argparse.Namespace) -> int:
    target, draft, tok, what = _load_pair(args)
    cache = _dataclass_from_args(CacheConfig, args, "")
    spec = _dataclass_from_args(SpeculativeConfig, args, "")
    if spec.method == "draft" and draft is None:
        spec_arg = None
    else:
        spec_arg = spec
    ids = _prompt_ids(args, tok, target.vocab_size)
    res = target.generate(ids, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, seed=args.seed, cache=cache,
                          draft=draft if spec.method == "draft" else None, speculative=spec_arg,
                          measure_speedup=args.measure_speedup)
    s = res.stats
    if args.json:
        print(json.dumps({"tokens": res.tokens.tolist(), "text": res.text, "stats": s.to_dict(), "model": what}))
        return 0
    print(f"model: {what}")
    if tok is not None:
        print("---")
        print(tok.decode(ids) + tok.decode(res.tokens))
        print("---")
    else:
        print("tokens:", " ".join(map(str, res.tokens.tolist())))
    mode = "target only" if spec_arg is None else f"speculative ({spec.method}, k={'adaptive' if spec.adaptive else spec.k})"
    print(f"{mode}, cache: {cache.policy}" + (f" (budget {cache.budget}, R={cache.compress_every})" if cache.bounded else ""))
    print(f"tokens/s: {s.tokens_per_s:.1f}  (TTFT {s.ttft_s * 1e3:.1f} ms, TPOT {s.tpot_s * 1e3:.2f} ms, "
          f"{s.new_tokens} new tokens)")
    if spec_arg is not None:
        print(f"acceptance: {s.acceptance_rate:.3f}  mean accepted length {s.mean_accepted_length:.2f}  "
              f"tokens per target forward {s.tokens_per_target_forward:.2f}")
        if s.speedup is not None:
            print(f"speedup over target-only: {s.speedup:.2f}x")
    print(f"memory: KV cache {_mib(s.cache_bytes)}, weights read per step {_mib(s.weight_bytes)}, "
          f"peak RSS {_mib(s.peak_rss_bytes)}")
    return 0


def _read_text(name: str) -> str:
    p = Path(name)
    if p.is_file():
        return p.read_text(encoding="utf-8")
    try:
        from .defaults import default_text

        return default_text(name)
    except (ImportError, FileNotFoundError, KeyError, ValueError):
        raise SystemExit(f"--text {name!r}: not a file and not a bundled text name")


def cmd_eval_ppl(args: argparse.Namespace) -> int:
    from .eval import perplexity
    from .model import load

    if args.model == "default":
        _refuse_revision_of_default(args)
        from .defaults import load_default

        model, _draft, tok = load_default(dtype=args.dtype)
    else:
        model = load(args.model, dtype=args.dtype, revision=args.revision, download=args.download)
        tok = model.tokenizer
    if args.ids:
        ids = np.load(args.ids) if args.ids.endswith(".npy") else np.loadtxt(args.ids, dtype=np.int64)
    else:
        if tok is None:
            raise SystemExit("the model has no tokenizer.json: pass --ids FILE (.npy or whitespace-separated ids)")
        ids = tok.encode(_read_text(args.text))
    ids = np.asarray(ids)[args.offset: args.offset + args.tokens]
    cache = _dataclass_from_args(CacheConfig, args, "")
    res = perplexity(model, ids, cache=cache, chunk=args.chunk, repeats=args.repeats)
    summary = res.summary()
    print(json.dumps(summary, indent=2))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        res.to_json(out / "ppl.json")
        res.plot(out / "nll.png")
        print(f"wrote {out / 'ppl.json'} and {out / 'nll.png'}", file=sys.stderr)
    return 0


def cmd_create_random(args: argparse.Namespace) -> int:
    from .models import create_random

    path = create_random(args.shape, args.out, seed=args.seed, dtype=args.dtype)
    print(path)
    return 0


def _add_download_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--download", action="store_true",
                        help="fetch a repo id or revision missing from the Hugging Face cache (the only network "
                             "access; without it a missing one is an error)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m specstream", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate text, optionally speculative, with any cache policy")
    g.add_argument("--model", default="default", help="model directory, a Hugging Face repo id in the local cache "
                                                      "(EleutherAI/pythia-160m), or 'default' (the bundled pair)")
    g.add_argument("--revision", default=None, help="revision of the --model repo: branch (Pythia: step1000 ... "
                                                    "step143000), tag or commit hash (default: main)")
    g.add_argument("--draft", default=None, help="draft model directory or repo id ('none' to disable; with "
                                                "--model default the bundled draft is used)")
    g.add_argument("--draft-revision", default=None, help="revision of the --draft repo (default: main)")
    _add_download_flag(g)
    g.add_argument("--prompt", default=None, help="prompt text (needs the model's tokenizer)")
    g.add_argument("--prompt-ids", default=None, help="prompt as comma-separated token ids")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--dtype", default="f32", help="weight storage: f32, bf16 or f16")
    g.add_argument("--measure-speedup", action="store_true", help="also time target-only decoding")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    _add_dataclass_flags(g, CacheConfig, "", "cache (CacheConfig fields)", "cache")
    _add_dataclass_flags(g, SpeculativeConfig, "", "speculative decoding (SpeculativeConfig fields)", "speculative")
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("eval-ppl", help="perplexity of a text streamed through a cache policy")
    e.add_argument("--model", default="default", help="model directory, a Hugging Face repo id in the local cache, "
                                                      "or 'default' (the bundled target)")
    e.add_argument("--revision", default=None, help="revision of the --model repo (default: main)")
    _add_download_flag(e)
    e.add_argument("--text", default="wikitext-2-test", help="a .txt file or a bundled text name")
    e.add_argument("--ids", default=None, help="token ids instead of text (.npy or whitespace-separated)")
    e.add_argument("--tokens", type=int, default=4096, help="tokens to evaluate")
    e.add_argument("--offset", type=int, default=0, help="first token of the slice")
    e.add_argument("--chunk", type=int, default=1, help="tokens per forward (1 = as generation sees them)")
    e.add_argument("--repeats", type=int, default=2, help="runs; timings are medians")
    e.add_argument("--dtype", default="f32")
    e.add_argument("--out", default=None, help="directory for ppl.json and nll.png")
    _add_dataclass_flags(e, CacheConfig, "", "cache (CacheConfig fields)", "cache")
    e.set_defaults(func=cmd_eval_ppl)

    c = sub.add_parser("create-random", help="write a random Pythia-shaped model directory")
    c.add_argument("out")
    c.add_argument("--shape", default="160m", help="70m, 160m, 410m, 1b, 1.4b, 2.8b, 6.9b, 12b")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--dtype", default="f32")
    c.set_defaults(func=cmd_create_random)

    from .experiments import register_cli  # sweep, merge, plot

    register_cli(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, NotImplementedError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
