"""Converts a GPT-NeoX checkpoint directory (HF layout: config.json +
safetensors, as written by specstream.models.create_random) to a GGUF file
that llama.cpp loads as its "gptneox" architecture.

    python benchmarks/peers/to_gguf.py MODEL_DIR OUT.gguf --type f32|bf16|q8_0

Written for the peer benchmark (benchmarks/bench_cpu_peers.py) with the
`gguf` package (PyPI). What llama.cpp expects of a gptneox file:
  - metadata under "gptneox.": context_length, embedding_length, block_count,
    feed_forward_length, attention.head_count, attention.layer_norm_epsilon,
    rope.dimension_count (rotary dims per head), rope.freq_base,
    use_parallel_residual, vocab_size; general.file_type;
  - no tokenizer: tokenizer.ggml.model = "none" with gptneox.vocab_size
    dummy tokens (the benchmark feeds token ids, never text);
  - tensors token_embd, output_norm.{weight,bias}, output, and per layer
    blk.N.{attn_norm, attn_qkv, attn_output, ffn_norm, ffn_up, ffn_down}
    .{weight,bias}; numpy [rows, cols] arrays (ggml reverses the dims);
  - attn_qkv with rows [all q heads | all k heads | all v heads]: HF's
    query_key_value interleaves them per head ([q_h k_h v_h] for each head h),
    so rows (and bias) are regrouped here.
Matrices (2-D) get the requested type; norms and biases stay f32, as
llama.cpp's own converter does. For q8_0 the token embedding is q8_0 too
(llama.cpp reads one row per token from it either way).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

import gguf  # noqa: E402

from specstream.config import ModelConfig  # noqa: E402
from specstream import safetensors as st  # noqa: E402

TYPES = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}


def read_tensors(directory: Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint as float32."""
    out: dict[str, np.ndarray] = {}
    for f in sorted(directory.glob("*.safetensors")):
        for name, arr in st.load(f).items():
            out[name] = st.bf16_to_f32(arr) if arr.dtype == np.uint16 else np.asarray(arr, np.float32)
    return out


def regroup_qkv(a: np.ndarray, n_head: int) -> np.ndarray:
    """[q_0 k_0 v_0 q_1 k_1 v_1 ...] (per head) -> [q_all | k_all | v_all]."""
    per_head = a.reshape((n_head, 3, -1) + a.shape[1:])
    return np.ascontiguousarray(np.swapaxes(per_head, 0, 1)).reshape(a.shape)


def convert(model_dir: Path, out: Path, type_name: str) -> Path:
    cfg = ModelConfig.from_dir(model_dir)
    qtype, ftype = TYPES[type_name]
    t = read_tensors(model_dir)
    arch = "gptneox"
    w = gguf.GGUFWriter(str(out), arch)
    w.add_name(model_dir.name)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.d_model)
    w.add_block_count(cfg.n_layer)
    w.add_feed_forward_length(cfg.d_ff)
    w.add_head_count(cfg.n_head)
    w.add_layer_norm_eps(cfg.layer_norm_eps)
    w.add_rope_dimension_count(cfg.rotary_dim)
    w.add_rope_freq_base(cfg.rotary_emb_base)
    w.add_bool(f"{arch}.use_parallel_residual", bool(cfg.use_parallel_residual))
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(int(ftype))
    w.add_tokenizer_model("none")

    def matrix(name: str, a: np.ndarray) -> None:
        a = np.ascontiguousarray(a, np.float32)
        if qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, a)
        else:
            w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)

    def vector(name: str, a: np.ndarray) -> None:
        w.add_tensor(name, np.ascontiguousarray(a, np.float32))

    matrix("token_embd.weight", t["gpt_neox.embed_in.weight"])
    vector("output_norm.weight", t["gpt_neox.final_layer_norm.weight"])
    vector("output_norm.bias", t["gpt_neox.final_layer_norm.bias"])
    matrix("output.weight", t["embed_out.weight"])
    for i in range(cfg.n_layer):
        p, b = f"gpt_neox.layers.{i}.", f"blk.{i}."
        vector(b + "attn_norm.weight", t[p + "input_layernorm.weight"])
        vector(b + "attn_norm.bias", t[p + "input_layernorm.bias"])
        matrix(b + "attn_qkv.weight", regroup_qkv(t[p + "attention.query_key_value.weight"], cfg.n_head))
        vector(b + "attn_qkv.bias", regroup_qkv(t[p + "attention.query_key_value.bias"], cfg.n_head))
        matrix(b + "attn_output.weight", t[p + "attention.dense.weight"])
        vector(b + "attn_output.bias", t[p + "attention.dense.bias"])
        vector(b + "ffn_norm.weight", t[p + "post_attention_layernorm.weight"])
        vector(b + "ffn_norm.bias", t[p + "post_attention_layernorm.bias"])
        matrix(b + "ffn_up.weight", t[p + "mlp.dense_h_to_4h.weight"])
        vector(b + "ffn_up.bias", t[p + "mlp.dense_h_to_4h.bias"])
        matrix(b + "ffn_down.weight", t[p + "mlp.dense_4h_to_h.weight"])
        vector(b + "ffn_down.bias", t[p + "mlp.dense_4h_to_h.bias"])
    out.parent.mkdir(parents=True, exist_ok=True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--type", default="f32", choices=sorted(TYPES))
    args = ap.parse_args()
    print(convert(args.model_dir, args.out, args.type))


if __name__ == "__main__":
    main()
