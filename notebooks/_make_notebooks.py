"""Writes the experiment notebooks (outputs cleared) from the cell sources below.

    python notebooks/_make_notebooks.py

Edit a notebook here (or in Jupyter, then mirror the change here) so that the
sources stay reviewable as plain Python. tests/test_notebooks.py executes
every notebook top to bottom.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SIZE_CELL = '''import os
# SIZE: "small" runs in a few minutes on 2 CPU cores; "medium" is ~10x more work;
# "protocol" follows the experiment protocol (WikiText 4,096 tokens, a 20,000-token
# book, median of 2 runs) and wants a bigger machine.
SIZE = os.environ.get("SPECSTREAM_NOTEBOOK_SIZE", "small")
SIZES = {
    "small":    dict(tokens=256,  long_tokens=384,   repeats=1, new_tokens=32),
    "medium":   dict(tokens=1024, long_tokens=4096,  repeats=2, new_tokens=128),
    "protocol": dict(tokens=4096, long_tokens=20000, repeats=2, new_tokens=256),
}
S = SIZES[SIZE]
# The bundled models are tiny: one thread avoids OpenMP stalls on a busy machine;
# bigger runs use every core.
THREADS = 1 if SIZE == "small" else os.cpu_count()
S'''

COMMON = '''from pathlib import Path
import numpy as np
import pandas as pd
import matplotlib
matplotlib.use("Agg")  # figures are saved and shown inline as images
import matplotlib.pyplot as plt
from IPython.display import Image, display

import specstream
from specstream import CacheConfig, SpeculativeConfig
from specstream import experiments as ex, plots
pd.set_option("display.width", 160)
specstream.set_num_threads(THREADS)
OUT = Path("notebook_runs")  # sweeps and figures of this notebook
OUT.mkdir(exist_ok=True)'''


def show_fig() -> str:
    return "display(Image(filename=str(path)))"


NOTEBOOKS = {
    "01_quickstart.ipynb": [
        ("md", """# specstream quick start

Load the bundled GPT-NeoX pair, generate (plain, speculative, with a bounded
StreamingLLM cache), measure perplexity through a cache, and run a first
two-point sweep. Everything runs on the CPU."""),
        ("code", SIZE_CELL),
        ("code", COMMON),
        ("md", "## The bundled models\n`load_default()` returns the target, its distilled draft and the shared tokenizer."),
        ("code", """target, draft, tok = specstream.load_default()
print(target)
print(draft)
print("SIMD kernels:", specstream.cpu_kernels(), "| threads:", specstream.get_num_threads())"""),
        ("md", "## Generate\nGreedy by default; `stats` carries TTFT, TPOT, tokens/s and memory."),
        ("code", """text = specstream.default_text("wikitext-2-test")
prompt = tok.encode(text[:400])[:48]
out = target.generate(prompt, max_new_tokens=S["new_tokens"])
print(repr(out.text))
s = out.stats
print(f"TTFT {s.ttft_s*1e3:.1f} ms, TPOT {s.tpot_s*1e3:.2f} ms, {s.tokens_per_s:.0f} tokens/s, KV {s.cache_bytes/2**10:.0f} KiB")"""),
        ("md", """## Speculative decoding
The draft proposes `k` tokens, the target verifies them in one forward pass.
Greedy output is identical to the target's own; `measure_speedup=True` also
times target-only decoding in the same call."""),
        ("code", """spec = target.generate(prompt, max_new_tokens=S["new_tokens"], draft=draft,
                       speculative=SpeculativeConfig(k=4), measure_speedup=True)
assert (spec.tokens == out.tokens).all()  # same tokens as the target alone
s = spec.stats
print(f"acceptance {s.acceptance_rate:.2f}, mean accepted length {s.mean_accepted_length:.2f}, "
      f"speedup {s.speedup:.2f}x")"""),
        ("md", """## A bounded cache
StreamingLLM keeps `n_sink` first tokens plus the last `window`; `compress_every=R`
evicts lazily in batches."""),
        ("code", """cache = CacheConfig(policy="streaming", n_sink=4, window=64, compress_every=16)
bounded = target.generate(prompt, max_new_tokens=S["new_tokens"], cache=cache)
print(repr(bounded.text[:200]))
print(f"keys a query sees at most: {cache.budget} (+ up to R-1 = {cache.compress_every - 1} before a batch "
      f"eviction), however long the stream; KV bytes allocated: {bounded.stats.cache_bytes}")"""),
        ("md", "## Perplexity through a cache\nPer-token NLL, eviction log, and the keys each token saw."),
        ("code", """ids = tok.encode(text)[: S["tokens"]]
full = specstream.eval.perplexity(target, ids)
stream = specstream.eval.perplexity(target, ids, cache=cache)
print(f"full cache PPL {full.ppl:.2f}; streaming PPL {stream.ppl:.2f} "
      f"({stream.ppl / full.ppl - 1:+.2%}), {len(stream.evictions)} evictions, "
      f"visible keys {stream.visible_stats}")
stream.to_frame().head()"""),
        ("code", """path = OUT / "nll_streaming.png"
plots.plot_nll(stream, path, smooth=16)
""" + show_fig()),
        ("md", """## A first sweep
`experiments.run_sweep` takes a grid of dotted field paths, measures every
configuration (plus a full-cache baseline row) and appends rows to a resumable
JSONL store. Run the cell twice: the second run recomputes nothing."""),
        ("code", """df = ex.run_sweep({"cache.policy": ["streaming"], "cache.window": [32, 64]},
                  target="default", data="wikitext-2-test", tokens=S["tokens"], repeats=S["repeats"],
                  out=OUT / "first_sweep", progress=False)
df[["kind", "label", "ppl", "ppl_delta", "tpot_ms", "kv_bytes", "evictions", "visible_mean"]]"""),
        ("md", "Every sweepable field, discovered from the config dataclasses:"),
        ("code", """print(", ".join(ex.grid_fields()))"""),
    ],

    "02_streaming_ablation.ipynb": [
        ("md", """# Streaming-cache ablation

The protocol's Phase B matrix: lazy eviction (`compress_every` = R), a cap on how
many keys one step may drop (`max_drop`), and refresh tokens kept as dynamic
sinks (`refresh_budget`), against the full-cache baseline of the same model and
text. Metrics: PPL change, TPOT, KV bytes, evictions and the keys each token saw."""),
        ("code", SIZE_CELL),
        ("code", COMMON),
        ("code", """WINDOW = 64 if SIZE == "small" else 256
grid = {
    "cache.policy": ["streaming"],
    "cache.window": [WINDOW],
    "cache.compress_every": [1, 16, 64],
    "cache.max_drop": [None, 16],
    "cache.refresh_budget": [0, 8],
}
if SIZE == "small":  # a 4-point slice of the matrix: R alone, then one refresh point
    base = {"cache.policy": ["streaming"], "cache.window": [WINDOW]}
    grid = [dict(base, **{"cache.compress_every": [1, 16, 64]}),
            dict(base, **{"cache.compress_every": [64], "cache.refresh_budget": [8]})]
print(len(ex.Grid(grid).points()), "configurations")"""),
        ("code", """df = ex.run_sweep(grid, target="default", data="wikitext-2-test", tokens=S["tokens"],
                  repeats=S["repeats"], out=OUT / "streaming", progress=False)
cols = ["label", "ppl", "ppl_delta", "tpot_ms", "tpot_vs_full", "kv_bytes", "evictions",
        "visible_min", "visible_mean", "visible_max"]
df[cols].sort_values("ppl_delta")"""),
        ("md", """Larger R keeps more keys on average (`visible_mean`) and evicts in fewer,
larger batches; `max_drop` spreads a batch over several steps. The Pareto front of
TPOT against PPL change:"""),
        ("code", """path = OUT / "pareto_streaming.png"
plots.plot_pareto(df, "tpot_ms", "ppl_delta", path)
""" + show_fig()),
        ("md", """## Token-level NLL around eviction boundaries
The runner saved every configuration's per-token NLL under `nll/`; plot the
largest R (red lines: evictions)."""),
        ("code", """row = df[df["kind"] == "config"].sort_values("cache.compress_every").iloc[-1]
path = OUT / "nll_largest_R.png"
plots.plot_nll(OUT / "streaming" / "nll" / f"{row['ppl_key'][:16]}.json", path, smooth=16,
               title=f"{row['label']}: PPL {row['ppl']:.2f}")
""" + show_fig()),
        ("md", "## Long text\nThe same comparison on a slice of the PG-19-style book (Crime and Punishment)."),
        ("code", """long = ex.run_sweep({"cache.policy": ["streaming"], "cache.window": [WINDOW],
                     "cache.compress_every": [1, 64]},
                    target="default", data="pg2554", offset=2000, tokens=S["long_tokens"],
                    repeats=S["repeats"], out=OUT / "streaming_long", progress=False)
long[["kind", "label", "ppl", "ppl_delta", "tpot_ms", "kv_bytes"]]"""),
    ],

    "03_speculative_ablation.ipynb": [
        ("md", """# Speculative-decoding ablation

How many tokens should the draft propose? For each k: acceptance rate, mean
accepted length (tokens per verification), and the speedup over target-only
decoding timed in the same run; plus adaptive k and prompt lookup (no draft
model)."""),
        ("code", SIZE_CELL),
        ("code", COMMON),
        ("code", """ks = [1, 2, 3, 4, 6] if SIZE == "small" else [1, 2, 3, 4, 5, 6, 8]
grid = [
    {"speculative.k": ks, "generation.max_new_tokens": [S["new_tokens"]]},
    {"speculative.adaptive": [True], "generation.max_new_tokens": [S["new_tokens"]]},
    {"speculative.method": ["lookup"], "speculative.k": [4], "generation.max_new_tokens": [S["new_tokens"]]},
]
df = ex.run_sweep(grid, target="default", draft="default", data="wikitext-2-test", tokens=S["tokens"],
                  repeats=S["repeats"], measure=["generate"], out=OUT / "speculative", progress=False)
cols = ["label", "acceptance_rate", "mean_accepted_length", "tokens_per_target_forward",
        "gen_tokens_per_s", "target_only_tokens_per_s", "speedup", "gen_tpot_ms", "gen_ttft_ms"]
df[cols]"""),
        ("md", "Greedy speculative decoding reproduces the target exactly, whatever k:"),
        ("code", """assert df["tokens_sha"].nunique() == 1
print("identical output for every k:", df["tokens_sha"].iloc[0])"""),
        ("code", """path = OUT / "acceptance_vs_k.png"
plots.plot_acceptance(df[(df["speculative.method"] == "draft") & ~df["speculative.adaptive"]], path)
""" + show_fig()),
        ("md", """Acceptance per token falls slowly with k while the cost of a step grows;
the best k balances the two. With a cache as well, the two switches combine:"""),
        ("code", """both = ex.run_sweep({"cache.policy": ["streaming"], "cache.window": [64],
                     "speculative.k": [2, 4], "generation.max_new_tokens": [S["new_tokens"]]},
                    target="default", draft="default", data="wikitext-2-test", tokens=S["tokens"],
                    repeats=S["repeats"], out=OUT / "spec_and_cache", progress=False)
both[["kind", "label", "ppl_delta", "acceptance_rate", "speedup", "gen_tpot_ms"]]"""),
    ],

    "04_pareto_analysis.ipynb": [
        ("md", """# Pareto analysis and recommended configurations

Load a sweep's results (the committed default-model sweep under
`benchmarks/results/sweep_default/` when this checkout has it, otherwise a small
sweep run here), find the Pareto fronts, and derive recommended configurations
per regime from them (rules stated in `plots.recommend`)."""),
        ("code", SIZE_CELL),
        ("code", COMMON),
        ("code", """committed = Path(specstream.__file__).resolve().parents[1] / "benchmarks/results/sweep_default/results.jsonl"
if committed.is_file():
    df = ex.load_results(committed)
    source = str(committed)
else:
    df = ex.run_sweep({"cache.policy": ["streaming"], "cache.window": [32, 64],
                       "cache.compress_every": [1, 16], "speculative.k": [2, 4],
                       "generation.max_new_tokens": [S["new_tokens"]]},
                      target="default", draft="default", data="wikitext-2-test", tokens=S["tokens"],
                      repeats=S["repeats"], out=OUT / "pareto", progress=False)
    source = "a small sweep run in this notebook"
print(source, "-", (df["kind"] == "config").sum(), "configurations")
print("varying:", plots.varying_columns(df))"""),
        ("md", "## The front\nA configuration is on the front when no other is both faster and at least as accurate."),
        ("code", """configs = df[df["kind"] == "config"].copy()
x = "gen_tpot_ms" if configs["gen_tpot_ms"].notna().all() else "tpot_ms"
configs["on_front"] = plots.pareto_front(configs, x, "ppl_delta")
configs["short"] = plots.labels(configs)
configs.loc[configs["on_front"], ["short", x, "ppl_delta", "kv_bytes", "speedup"]].sort_values(x)"""),
        ("code", """path = OUT / "pareto.png"
plots.plot_pareto(df, x, "ppl_delta", path)
""" + show_fig()),
        ("code", """path = OUT / "pareto_memory.png"
plots.plot_pareto(df, "kv_bytes", "ppl_delta", path, title="KV bytes vs PPL change")
""" + show_fig()),
        ("md", """## Recommendations
Each regime picks from a front by a stated rule: short text - the fastest point
within 3% PPL change; long text - the knee of the front within 5%, quality
weighted double; extreme memory - the smallest cache within 10%. Nothing is
hard-coded: change the data and the picks change."""),
        ("code", """rec = plots.recommend(df)
rec[["regime", "label", "x_metric", "x", "ppl_delta", "kv_bytes", "meets_tolerance", "rule"]]"""),
        ("code", """written = plots.plot_all(df, OUT / "all_figures")
[p.name for p in written]"""),
    ],
}


def build() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells]
        for i, c in enumerate(nb.cells):  # stable ids: clean diffs when regenerated
            c["id"] = f"{name.split('_')[0]}-{i:02d}"
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    build()
