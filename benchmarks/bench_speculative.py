"""Speculative decoding speed against its analytic expectation.

    python benchmarks/bench_speculative.py [--targets 410m,1b] [--dtype bf16]

A 70m-shape draft and 410m/1b-shape targets (random weights). A benchmark-only
verifier accepts each draft token with probability a (SpeculativeConfig.
forced_acceptance), so speed can be measured at chosen acceptance rates:
a in {0.5, 0.75, 0.9}, k in 2..8. Next to each measured speedup over
target-only decoding (same run) stands the analytic expectation

    (1 - a^(k+1)) / ((1 - a) (1 + k c))

with c = (draft time per token) / (target time per verification forward),
both measured. The formula assumes verifying k+1 tokens costs one decode
step; on a CPU with ~5 FLOP per byte of bandwidth it does not for larger k,
so each row also gives the measured verify/decode time ratio and the speedup
the measured forwards allow, (1 - a^(k+1)) / (1 - a) * T / (V + k D): what is
left between that and the measured speedup is loop overhead. Prints a table
and writes results/speculative_cpu.json (and a plot of measured vs expected).
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

import specstream
from specstream import CacheConfig, SpeculativeConfig
from common import RESULTS, machine_info, random_model, save_json


def expected_speedup(a: float, k: int, c: float) -> float:
    return (1 - a ** (k + 1)) / ((1 - a) * (1 + k * c))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draft", default="70m")
    ap.add_argument("--targets", default="410m,1b")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--rates", default="0.5,0.75,0.9")
    ap.add_argument("--ks", default="2,3,4,5,6,7,8")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="speculative_cpu.json")
    args = ap.parse_args()

    draft = specstream.load(random_model(args.draft, args.dtype, seed=1), dtype=args.dtype)
    prompt = np.arange(1, 33, dtype=np.int32)
    cache = CacheConfig(policy="streaming", n_sink=4, window=508)
    rows = []
    for target_shape in args.targets.split(","):
        target = specstream.load(random_model(target_shape, args.dtype), dtype=args.dtype)
        target.generate(prompt, 4, cache=cache)  # page the weights in
        draft.generate(prompt, 4, cache=cache)
        base = statistics.median(
            target.generate(prompt, args.tokens, cache=cache).stats.tpot_s for _ in range(args.repeats))
        # cost ratio c: one draft token vs one target forward, decoding alone
        draft_tpot = statistics.median(
            draft.generate(prompt, args.tokens, cache=cache).stats.tpot_s for _ in range(args.repeats))
        for a in map(float, args.rates.split(",")):
            for k in map(int, args.ks.split(",")):
                spec = SpeculativeConfig(k=k, forced_acceptance=a)
                runs = [target.generate(prompt, args.tokens, cache=cache, draft=draft, speculative=spec, seed=r)
                        for r in range(args.repeats)]
                tpot = statistics.median(r.stats.tpot_s for r in runs)
                s = runs[0].stats
                verify_per_forward = s.verify_s / s.target_forwards
                draft_per_token = s.draft_s / s.drafted
                c = draft_per_token / verify_per_forward if s.drafted else float("nan")
                measured = base / tpot
                expect = expected_speedup(a, k, c)
                # The formula assumes a verification forward of k+1 tokens costs what one decode
                # step does (memory-bound). Where it costs more (arithmetic of k+1 tokens per
                # weight), the same tokens per round over the measured forward times is the
                # speedup the two models' forwards allow; the rest would be loop overhead.
                per_round = (1 - a ** (k + 1)) / (1 - a)
                expect_forwards = per_round * base / (verify_per_forward + k * draft_per_token)
                rows.append({
                    "target": target_shape, "draft": args.draft, "dtype": args.dtype, "a": a, "k": k,
                    "measured_acceptance": s.acceptance_rate, "c": c, "c_standalone": draft_tpot / base,
                    "target_tpot_ms": base * 1e3, "spec_tpot_ms": tpot * 1e3, "speedup": measured,
                    "verify_ms": verify_per_forward * 1e3, "verify_over_decode": verify_per_forward / base,
                    "expected_speedup": expect, "ratio_to_expected": measured / expect,
                    "expected_from_forwards": expect_forwards, "ratio_to_forwards": measured / expect_forwards,
                })
                print(f"{target_shape:>5} a={a:.2f} k={k}  acc={s.acceptance_rate:.2f}  c={c:.3f}  "
                      f"verify/decode {verify_per_forward / base:4.2f}  speedup {measured:5.2f}x  "
                      f"formula {expect:5.2f}x ({100 * measured / expect:5.1f}%)  "
                      f"from forwards {expect_forwards:5.2f}x ({100 * measured / expect_forwards:5.1f}%)")
        del target
    doc = {"benchmark": "speculative_cpu", "machine": machine_info(), "rows": rows,
           "formula": "(1 - a^(k+1)) / ((1 - a)(1 + k c)), c = draft time per token / target verify time per forward",
           "from_forwards": "(1 - a^(k+1)) / (1 - a) * T / (V + k D): T target-only TPOT, V verify time per "
                            "forward, D draft time per token, all measured in this run"}
    print(f"wrote {save_json(args.out, doc)}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(args.targets.split(",")), figsize=(11, 4), squeeze=False)
        for ax, shape in zip(axes[0], args.targets.split(",")):
            for a in map(float, args.rates.split(",")):
                sel = [r for r in rows if r["target"] == shape and r["a"] == a]
                ks = [r["k"] for r in sel]
                line, = ax.plot(ks, [r["speedup"] for r in sel], "o-", label=f"a={a} measured")
                ax.plot(ks, [r["expected_speedup"] for r in sel], "--", color=line.get_color(), label=f"a={a} formula")
                ax.plot(ks, [r["expected_from_forwards"] for r in sel], ":", color=line.get_color(),
                        label=f"a={a} from forwards")
            ax.set_title(f"draft {args.draft} -> target {shape} ({args.dtype})")
            ax.set_xlabel("k")
            ax.set_ylabel("speedup over target-only")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(RESULTS / "speculative_cpu.png", dpi=110)
    except ImportError:
        pass


if __name__ == "__main__":
    main()
