#!/usr/bin/env python3
"""Writes the Hugging Face golden fixtures under tests/fixtures/ (maintainers only).

Creates two tiny random GPT-NeoX models with transformers'
GPTNeoXForCausalLM, saves them with save_pretrained(safe_serialization=True)
and records their logits, so that tests can check the NumPy reference (and
through it the C engine) against Hugging Face without needing torch:

    tests/fixtures/hf_tiny_parallel/    use_parallel_residual=true,  F16 weights
    tests/fixtures/hf_tiny_sequential/  use_parallel_residual=false, BF16 weights
        config.json, generation_config.json, model.safetensors
        golden_logits.npz:
            ids                 int32 [40]    token ids (0 and 999 included)
            logits              float32 [40, 1000]  one full forward over ids
            n_prefill           int  32
            logits_incremental  float32 [40, 1000]  rows 0..31 from a prefill
                                 with use_cache=True, rows 32..39 from eight
                                 one-token steps fed past_key_values
            transformers_version, torch_version  str

Weights are random but non-trivial: LayerNorm weights 1 + N(0, 0.1), every
bias N(0, 0.05), qkv N(0, 0.15) so that attention is far from uniform and
rotary positions matter, embed_out N(0, 1/d). They are rounded to the storage
dtype (F16 / BF16) before the logits are computed in float32, so the stored
files hold exactly the weights that produced the goldens.

Dependencies (not the project's): Debian's CPU torch and a transformers that
works with torch 1.13, installed for the system Python:

    apt-get update && apt-get install -y python3-torch
    /usr/bin/python3 -m pip install --break-system-packages "transformers==4.40.2" safetensors
    /usr/bin/python3 scripts/make_hf_golden.py
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

SEQ_LEN = 40
N_PREFILL = 32

MODELS = {
    "hf_tiny_parallel": dict(use_parallel_residual=True, rotary_pct=0.25, dtype=torch.float16, seed=1),
    "hf_tiny_sequential": dict(use_parallel_residual=False, rotary_pct=0.5, dtype=torch.bfloat16, seed=2),
}


def build(use_parallel_residual: bool, rotary_pct: float, dtype: torch.dtype, seed: int) -> GPTNeoXForCausalLM:
    """A float32 tiny GPT-NeoX whose weights are exactly representable in `dtype`."""
    config = GPTNeoXConfig(
        vocab_size=1000,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        hidden_act="gelu",
        rotary_pct=rotary_pct,
        rotary_emb_base=10000,
        max_position_embeddings=256,
        layer_norm_eps=1e-5,
        use_parallel_residual=use_parallel_residual,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(config).eval()
    d = config.hidden_size
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or "layer_norm" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                else:
                    p.copy_(0.05 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
            elif name == "embed_out.weight":
                p.copy_(torch.randn_like(p) / math.sqrt(d))
            elif "query_key_value" in name:
                p.copy_(0.15 * torch.randn_like(p))
            elif "embed_in" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(0.05 * torch.randn_like(p))
            p.copy_(p.to(dtype).to(torch.float32))  # the stored values, exactly
    return model


@torch.no_grad()
def goldens(model: GPTNeoXForCausalLM, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 999, size=SEQ_LEN).astype(np.int64)
    ids[3], ids[17] = 0, 999  # both ends of the vocabulary
    x = torch.from_numpy(ids)[None]

    full = model(x).logits[0].float().numpy()

    out = model(x[:, :N_PREFILL], use_cache=True)
    rows = [out.logits[0]]
    past = out.past_key_values
    for t in range(N_PREFILL, SEQ_LEN):
        out = model(x[:, t : t + 1], past_key_values=past, use_cache=True)
        past = out.past_key_values
        rows.append(out.logits[0])
    incremental = torch.cat(rows).float().numpy()

    return {
        "ids": ids.astype(np.int32),
        "logits": full.astype(np.float32),
        "n_prefill": np.array(N_PREFILL),
        "logits_incremental": incremental.astype(np.float32),
        "transformers_version": np.array(transformers.__version__),
        "torch_version": np.array(torch.__version__),
    }


def main() -> int:
    for name, spec in MODELS.items():
        out = FIXTURES / name
        out.mkdir(parents=True, exist_ok=True)
        model = build(**spec)
        g = goldens(model, spec["seed"])
        err = np.abs(g["logits"] - g["logits_incremental"]).max()
        assert err < 1e-4, f"{name}: incremental decoding disagrees with the full forward ({err})"
        model.to(spec["dtype"]).save_pretrained(out, safe_serialization=True)
        np.savez_compressed(out / "golden_logits.npz", **g)
        cfg = json.loads((out / "config.json").read_text())
        size = sum(p.stat().st_size for p in out.iterdir())
        print(f"{name}: parallel={cfg['use_parallel_residual']} dtype={cfg['torch_dtype']} "
              f"logits std {g['logits'].std():.3f}, incremental max diff {err:.2e}, {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
