"""An independent NumPy implementation of GPT-NeoX: the ground truth for the C engine.

Nothing here imports specstream: the file reader, the config parsing and the
model are written again from the format and the architecture, in float64,
so that a bug in the engine's Python or C code cannot hide in the reference.
It is slow and simple on purpose; use it on small models.

Three ways to compute logits:

* :meth:`RefModel.forward` - full causal attention over a fresh sequence,
  rotary positions 0..n-1.
* :meth:`RefModel.stream_logits` - token-by-token decoding with a bounded
  StreamingLLM cache (sinks + window, lazy eviction), positions assigned by
  place in the cache; see :func:`stream_schedule` for the exact rules.
* :meth:`RefModel.recompute_logits` - sliding window with re-computation:
  each token is scored by a fresh forward over its last ``window`` tokens.
* :meth:`RefModel.select_stream_logits` - the StreamingLLM schedule plus a
  dynamic pinned set of evicted tokens kept anyway (refresh tokens, heavy
  hitters: h2o, snapkv, keynorm); :meth:`RefModel.select_trace` gives every
  decision it made.

GPT-NeoX specifics: query_key_value rows are grouped per head as
[n_head, 3 (q, k, v), head_dim]; rotary embeddings act on the first
rotary_dim dims of each head with the "rotate_half" pairing (i, i + rd/2);
attention is scaled by 1/sqrt(head_dim); GELU is exact (erf) unless the
config names a tanh variant; the residual is parallel
(x + attn(ln1 x) + mlp(ln2 x)) or sequential; a final LayerNorm precedes the
untied embed_out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

__all__ = [
    "RefModel", "RefConfig", "Eviction", "SelectTrace", "stream_schedule", "read_safetensors", "read_model_dir",
    "SELECT_POLICIES", "REFRESH_MODES",
]

# ----------------------------------------------------------------- file reading


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Reads every tensor of a safetensors file as float64 (BF16/F16/F32 only)."""
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        buf = data[begin:end]
        if info["dtype"] == "F32":
            arr = np.frombuffer(buf, "<f4").astype(np.float64)
        elif info["dtype"] == "F16":
            arr = np.frombuffer(buf, "<f2").astype(np.float64)
        elif info["dtype"] == "BF16":  # the top 16 bits of a float32
            arr = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        else:
            raise ValueError(f"{path}: {name}: dtype {info['dtype']} is not a float type")
        out[name] = arr.reshape(info["shape"])
    return out


def read_model_dir(path: str | Path) -> dict[str, np.ndarray]:
    """Reads model.safetensors, or every shard named by model.safetensors.index.json."""
    d = Path(path)
    if (d / "model.safetensors").is_file():
        return read_safetensors(d / "model.safetensors")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    out: dict[str, np.ndarray] = {}
    for shard in sorted(set(index["weight_map"].values())):
        out.update(read_safetensors(d / shard))
    return out


# ----------------------------------------------------------------- config


class RefConfig(NamedTuple):
    """The few config values the math needs."""

    n_layer: int
    d_model: int
    n_head: int
    rotary_dim: int
    rotary_base: float
    eps: float
    parallel_residual: bool
    gelu_tanh: bool

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @staticmethod
    def from_hf(c: dict[str, Any]) -> "RefConfig":
        d, h = c["hidden_size"], c["num_attention_heads"]
        pct = c.get("rotary_pct", c.get("partial_rotary_factor", 0.25))
        act = c.get("hidden_act", "gelu")
        if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
            raise ValueError(f"unsupported activation {act}")
        return RefConfig(
            n_layer=c["num_hidden_layers"],
            d_model=d,
            n_head=h,
            rotary_dim=int((d // h) * pct),
            rotary_base=float(c.get("rotary_emb_base", c.get("rope_theta", 10000))),
            eps=float(c.get("layer_norm_eps", 1e-5)),
            parallel_residual=bool(c.get("use_parallel_residual", True)),
            gelu_tanh=act != "gelu",
        )


# ----------------------------------------------------------------- math helpers

_erf = np.frompyfunc(math.erf, 1, 1)  # exact to double precision; NumPy has no erf


def gelu(x: np.ndarray, tanh: bool) -> np.ndarray:
    """Exact erf GELU, or the tanh approximation."""
    if tanh:
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis with the biased (population) variance."""
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def rotate(x: np.ndarray, positions: np.ndarray, rotary_dim: int, base: float) -> np.ndarray:
    """GPT-NeoX rotary embedding of x [n, n_head, head_dim] at positions [n].

    Only the first rotary_dim dims of each head turn; dim i pairs with
    i + rotary_dim/2 and turns by position * base^(-2i/rotary_dim).
    """
    half = rotary_dim // 2
    inv_freq = 1.0 / base ** (np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim)
    angle = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]  # [n, half]
    cos = np.cos(angle)[:, None, :]  # broadcast over heads
    sin = np.sin(angle)[:, None, :]
    x1, x2 = x[..., :half], x[..., half:rotary_dim]
    out = x.copy()
    out[..., :half] = x1 * cos - x2 * sin
    out[..., half:rotary_dim] = x2 * cos + x1 * sin
    return out


# ----------------------------------------------------------------- eviction rules


class Eviction(NamedTuple):
    """One eviction: while appending token ``step``, ``dropped`` keys left and
    the cache then held ``kept`` keys (the appended one included)."""

    step: int
    dropped: int
    kept: int


def stream_schedule(
    n: int, n_sink: int, window: int, compress_every: int = 1, max_drop: int = 0, overlap: int = 0
) -> tuple[list[np.ndarray], list[Eviction]]:
    """The visible token indices at each step and the eviction events.

    With s = n_sink, B = s + window, R = compress_every: text positions
    [0, s) are sinks and never leave. f is the first text position of the
    window run (initially s), ``draining`` a flag (initially false). Before
    token t >= s is appended, with size = s + (t - f) keys in the cache:
    if draining or size + 1 > B + R - 1, then need = size + 1 - (B + overlap);
    if need > 0, drop = need (max_drop == 0) or min(need, max_drop), f += drop,
    an event (t, drop, size + 1 - drop) is recorded and draining becomes
    (max_drop > 0 and need > drop); otherwise draining becomes false. Token t
    then sees S_t = [0, min(t + 1, s)) + [max(f, s), t].
    """
    if n_sink < 0 or window < 1 or compress_every < 1 or max_drop < 0 or overlap < 0:
        raise ValueError(
            f"need n_sink >= 0, window >= 1, compress_every >= 1, max_drop >= 0, overlap >= 0; got "
            f"{n_sink}, {window}, {compress_every}, {max_drop}, {overlap}"
        )
    s, budget, r = n_sink, n_sink + window, compress_every
    f, draining = s, False
    visible: list[np.ndarray] = []
    events: list[Eviction] = []
    for t in range(n):
        if t >= s:
            size = s + (t - f)
            if draining or size + 1 > budget + r - 1:
                need = size + 1 - (budget + overlap)
                if need > 0:
                    drop = need if max_drop == 0 else min(need, max_drop)
                    f += drop
                    events.append(Eviction(step=t, dropped=drop, kept=size + 1 - drop))
                    draining = max_drop > 0 and need > drop
                else:
                    draining = False
        sinks = np.arange(0, min(t + 1, s))
        recent = np.arange(max(f, s), t + 1)
        visible.append(np.concatenate([sinks, recent]).astype(np.int64))
    return visible, events


# ----------------------------------------------------------------- the model


class RefModel:
    """GPT-NeoX in float64 NumPy. Weights are converted to float64 at load."""

    def __init__(self, config: RefConfig, weights: dict[str, np.ndarray]) -> None:
        self.cfg = config
        self.w = weights
        self.vocab_rows = weights["embed_out.weight"].shape[0]

    @classmethod
    def from_dir(cls, path: str | Path) -> "RefModel":
        """Loads config.json and the safetensors weights of a Hugging Face directory."""
        d = Path(path)
        cfg = RefConfig.from_hf(json.loads((d / "config.json").read_text()))
        return cls(cfg, read_model_dir(d))

    # -- pieces -----------------------------------------------------------

    def _p(self, layer: int, name: str) -> np.ndarray:
        return self.w[f"gpt_neox.layers.{layer}.{name}"]

    def _bias(self, layer: int, name: str, size: int) -> np.ndarray:
        """A bias, or zeros when the checkpoint has none (attention_bias=false)."""
        key = f"gpt_neox.layers.{layer}.{name}"
        return self.w[key] if key in self.w else np.zeros(size)

    def _qkv(self, layer: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """q, k, v [n, n_head, head_dim] (un-rotated) of LayerNorm-ed inputs x [n, d]."""
        c = self.cfg
        y = x @ self._p(layer, "attention.query_key_value.weight").T
        y = y + self._bias(layer, "attention.query_key_value.bias", 3 * c.d_model)
        y = y.reshape(x.shape[0], c.n_head, 3, c.head_dim)  # per head: q, k, v
        return y[:, :, 0], y[:, :, 1], y[:, :, 2]

    def _attn_out(self, layer: int, heads: np.ndarray) -> np.ndarray:
        """Output projection of attention results [n, n_head, head_dim] -> [n, d]."""
        c = self.cfg
        y = heads.reshape(heads.shape[0], c.d_model) @ self._p(layer, "attention.dense.weight").T
        return y + self._bias(layer, "attention.dense.bias", c.d_model)

    def _mlp(self, layer: int, x: np.ndarray) -> np.ndarray:
        h = x @ self._p(layer, "mlp.dense_h_to_4h.weight").T + self._p(layer, "mlp.dense_h_to_4h.bias")
        h = gelu(h, self.cfg.gelu_tanh)
        return h @ self._p(layer, "mlp.dense_4h_to_h.weight").T + self._p(layer, "mlp.dense_4h_to_h.bias")

    def _ln(self, layer: int, which: str, x: np.ndarray) -> np.ndarray:
        return layer_norm(x, self._p(layer, f"{which}.weight"), self._p(layer, f"{which}.bias"), self.cfg.eps)

    def _residual(self, layer: int, x: np.ndarray, attn: np.ndarray) -> np.ndarray:
        """Adds the attention output and the MLP branch to the residual stream x."""
        if self.cfg.parallel_residual:
            return x + attn + self._mlp(layer, self._ln(layer, "post_attention_layernorm", x))
        x = x + attn
        return x + self._mlp(layer, self._ln(layer, "post_attention_layernorm", x))

    def _embed(self, ids: Sequence[int]) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.w["gpt_neox.embed_in.weight"].shape[0]):
            raise ValueError(f"token id out of range [0, {self.w['gpt_neox.embed_in.weight'].shape[0]})")
        return self.w["gpt_neox.embed_in.weight"][ids]

    def _logits(self, x: np.ndarray) -> np.ndarray:
        h = layer_norm(x, self.w["gpt_neox.final_layer_norm.weight"], self.w["gpt_neox.final_layer_norm.bias"],
                       self.cfg.eps)
        return h @ self.w["embed_out.weight"].T

    # -- full causal forward ------------------------------------------------

    def forward(self, ids: Sequence[int]) -> np.ndarray:
        """Logits [len(ids), vocab_rows] of a fresh sequence, positions 0..n-1."""
        c = self.cfg
        x = self._embed(ids)
        n = x.shape[0]
        pos = np.arange(n)
        mask = np.triu(np.ones((n, n), dtype=bool), k=1)  # True above the diagonal: the future
        for layer in range(c.n_layer):
            q, k, v = self._qkv(layer, self._ln(layer, "input_layernorm", x))
            q = rotate(q, pos, c.rotary_dim, c.rotary_base)
            k = rotate(k, pos, c.rotary_dim, c.rotary_base)
            scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(c.head_dim)
            scores[:, mask] = -np.inf
            heads = np.einsum("hqk,khd->qhd", softmax(scores), v)
            x = self._residual(layer, x, self._attn_out(layer, heads))
        return self._logits(x)

    # -- bounded-cache streaming ---------------------------------------------

    def stream_logits(
        self,
        ids: Sequence[int],
        n_sink: int,
        window: int,
        compress_every: int = 1,
        max_drop: int = 0,
        overlap: int = 0,
        return_events: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, list[Eviction]]:
        """Token-by-token logits under a StreamingLLM cache (see stream_schedule).

        Un-rotated keys and values of every token are kept; at step t the
        visible tokens S_t get positions 0..|S_t|-1 in text order, their keys
        are rotated there and the query at |S_t|-1 (the newest token is last).
        ``n_sink=0`` is the plain sliding-window policy.
        """
        c = self.cfg
        x_all = self._embed(ids)
        n = x_all.shape[0]
        visible, events = stream_schedule(n, n_sink, window, compress_every, max_drop, overlap)
        keys = [np.zeros((n, c.n_head, c.head_dim)) for _ in range(c.n_layer)]
        values = [np.zeros((n, c.n_head, c.head_dim)) for _ in range(c.n_layer)]
        out = np.zeros((n, self.vocab_rows))
        for t in range(n):
            idx = visible[t]
            m = len(idx)
            x = x_all[t : t + 1]
            for layer in range(c.n_layer):
                q, k, v = self._qkv(layer, self._ln(layer, "input_layernorm", x))
                keys[layer][t], values[layer][t] = k[0], v[0]
                kr = rotate(keys[layer][idx], np.arange(m), c.rotary_dim, c.rotary_base)
                qr = rotate(q, np.array([m - 1]), c.rotary_dim, c.rotary_base)
                scores = np.einsum("qhd,khd->hqk", qr, kr) / math.sqrt(c.head_dim)
                heads = np.einsum("hqk,khd->qhd", softmax(scores), values[layer][idx])
                x = self._residual(layer, x, self._attn_out(layer, heads))
            out[t] = self._logits(x)[0]
        return (out, events) if return_events else out

    # -- sliding window with re-computation -----------------------------------

    def recompute_logits(self, ids: Sequence[int], window: int) -> np.ndarray:
        """Row t = forward(ids[max(0, t - window + 1) : t + 1])[-1]."""
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.zeros((len(ids), self.vocab_rows))
        for t in range(len(ids)):
            out[t] = self.forward(ids[max(0, t - window + 1) : t + 1])[-1]
        return out

    # -- bounded caches with a dynamic pinned set ---------------------------------

    def select_trace(self, ids: Sequence[int], n_sink: int, window: int, policy: str, M: int,
                     compress_every: int = 1, max_drop: int = 0, overlap: int = 0, refresh: str = "uniform",
                     structural_ids: Sequence[int] = (), entropy_threshold: float = 0.0) -> "SelectTrace":
        """Token-by-token decoding with sinks + a dynamic pinned set D + a window.

        With s = n_sink (0 for ``policy="window"``), B = s + window,
        R = compress_every. State: f (first text position of the window run,
        initially s), draining (false), D (sorted text positions, at most M).
        Before token t >= s is appended:

        1. size = s + (t - f) (D not counted); force = entropy_threshold > 0
           and t >= 1 and H(t-1) > entropy_threshold, H(p) the entropy (nats)
           of softmax(logits row p). If draining or force or size + 1 >
           B + R - 1: need = size + 1 - (B + overlap); if need > 0 then
           drop = need (max_drop 0) or min(need, max_drop), the span
           E = [f, f + drop) leaves, f += drop, event (t, drop, size + 1 - drop),
           draining = max_drop > 0 and need > drop; else draining = false.
        2. If drop > 0 and M > 0, D is updated:
           streaming/window with ``refresh`` "uniform" (positions
           f_old + floor((i + 0.5) drop / m), m = min(M, drop)), "structural"
           (the last M of E whose id is in structural_ids) or "entropy" (the
           min(M, drop) of E with the highest H, ties to the larger position)
           give a selection, and D = the M largest positions of D + selection.
           Score policies keep the M candidates of D + E with the highest score
           (ties to the larger position): "h2o" attention received from every
           earlier query (summed over layers and heads), "snapkv" the same from
           the queries since the previous eviction only, max-pooled over
           +-3 neighbours in the position-sorted candidate list (the
           observation window then restarts), "keynorm" minus the sum over
           layers and heads of the key L2 norm.
        3. Token t attends to sinks [0, min(t + 1, s)), D, then [f, t], at
           positions 0..|S|-1 in that order (the query at |S|-1); for t < s,
           to [0, t].
        """
        return _select_trace(self, ids, n_sink, window, policy, M, compress_every, max_drop, overlap, refresh,
                             structural_ids, entropy_threshold)

    def select_stream_logits(
        self,
        ids: Sequence[int],
        n_sink: int,
        window: int,
        policy: str,
        M: int,
        compress_every: int = 1,
        max_drop: int = 0,
        overlap: int = 0,
        refresh: str = "uniform",
        structural_ids: Sequence[int] = (),
        entropy_threshold: float = 0.0,
        return_events: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, list[Eviction], np.ndarray]:
        """Logits [n, vocab_rows] under a cache with a dynamic pinned set (see
        :meth:`select_trace`); with ``return_events`` also the eviction events
        and the number of keys each token attended to."""
        tr = self.select_trace(ids, n_sink, window, policy, M, compress_every, max_drop, overlap, refresh,
                               structural_ids, entropy_threshold)
        if not return_events:
            return tr.logits
        return tr.logits, tr.events, np.array([len(v) for v in tr.visible], dtype=np.int64)


# ----------------------------------------------------------------- dynamic pinned sets
#
# Cache policies that keep some evicted tokens anyway: refresh tokens for the
# window/streaming policies (uniform, structural, entropy) and heavy hitters
# for the score policies (h2o, snapkv, keynorm). Written from the rules alone,
# sequentially, token by token; see RefModel.select_trace for the rules.

SELECT_POLICIES = ("streaming", "window", "h2o", "snapkv", "keynorm")
REFRESH_MODES = ("uniform", "structural", "entropy")
SNAPKV_POOL = 3  # max-pooling reach: neighbours i-3 .. i+3 in the candidate list


class SelectTrace(NamedTuple):
    """Everything :meth:`RefModel.select_trace` decided and computed.

    ``visible[t]``: the text positions token t attended to, in cache order
    (sinks, pinned, window); ``pinned[t]``: the dynamic pinned set D it saw;
    ``entropy[p]``: H(p) in nats of the logits row p; ``forced``: the steps
    at which the entropy trigger caused an eviction; ``margin``: the smallest
    relative gap of any data-dependent decision that mattered (inf when none)
    - how far float32 rounding may move scores before a decision flips.
    """

    logits: np.ndarray
    events: list[Eviction]
    visible: list[np.ndarray]
    pinned: list[np.ndarray]
    entropy: np.ndarray
    forced: list[int]
    margin: float


def entropy_nats(logits: np.ndarray) -> np.ndarray:
    """Entropy (nats) of softmax over the last axis."""
    z = logits - logits.max(axis=-1, keepdims=True)
    log_total = np.log(np.exp(z).sum(axis=-1, keepdims=True))
    p = np.exp(z - log_total)
    return (log_total[..., 0] - (p * z).sum(axis=-1))


def _rel_gap(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


def top_by_score(cands: Sequence[int], score: dict[int, float], m: int) -> tuple[list[int], float]:
    """The m candidates with the highest score, ties to the larger position,
    returned sorted by position, and the decision margin: the smallest
    relative gap between a chosen and a rejected score (exact ties, decided
    by position alone, do not count; inf when nothing was rejected)."""
    ranked = sorted(cands, key=lambda p: (score[p], p), reverse=True)
    chosen, rejected = ranked[:m], ranked[m:]
    margin = math.inf
    for a in chosen:
        for b in rejected:
            if score[a] != score[b]:
                margin = min(margin, _rel_gap(score[a], score[b]))
    return sorted(chosen), margin


def uniform_refresh(first: int, dropped: int, budget: int) -> list[int]:
    """min(budget, dropped) evenly spaced positions of [first, first + dropped):
    first + floor((i + 0.5) * dropped / m), i = 0..m-1."""
    m = min(budget, dropped)
    return [first + ((2 * i + 1) * dropped) // (2 * m) for i in range(m)]


def snapkv_pool(cands: Sequence[int], score: dict[int, float], reach: int = SNAPKV_POOL) -> dict[int, float]:
    """Max-pools scores over neighbours in the position-sorted candidate list."""
    c = sorted(cands)
    return {p: max(score[c[j]] for j in range(max(0, i - reach), min(len(c), i + reach + 1)))
            for i, p in enumerate(c)}


def _check_select_args(policy: str, n_sink: int, window: int, budget: int, compress_every: int, max_drop: int,
                       overlap: int, refresh: str, entropy_threshold: float) -> None:
    if policy not in SELECT_POLICIES:
        raise ValueError(f"policy must be one of {SELECT_POLICIES}, got {policy!r}")
    if refresh not in REFRESH_MODES:
        raise ValueError(f"refresh must be one of {REFRESH_MODES}, got {refresh!r}")
    if budget < 0:
        raise ValueError(f"the pinned budget M must be >= 0, got {budget}")
    if not entropy_threshold >= 0:
        raise ValueError(f"entropy_threshold must be >= 0, got {entropy_threshold}")
    stream_schedule(0, n_sink, window, compress_every, max_drop, overlap)  # the same checks


def _select_trace(
    model: "RefModel",
    ids: Sequence[int],
    n_sink: int,
    window: int,
    policy: str,
    M: int,
    compress_every: int = 1,
    max_drop: int = 0,
    overlap: int = 0,
    refresh: str = "uniform",
    structural_ids: Sequence[int] = (),
    entropy_threshold: float = 0.0,
) -> SelectTrace:
    _check_select_args(policy, n_sink, window, M, compress_every, max_drop, overlap, refresh, entropy_threshold)
    c = model.cfg
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    x_all = model._embed(ids)
    n = x_all.shape[0]
    s = 0 if policy == "window" else n_sink
    budget, r = s + window, compress_every
    structural = {int(i) for i in structural_ids}

    keys = [np.zeros((n, c.n_head, c.head_dim)) for _ in range(c.n_layer)]
    values = [np.zeros((n, c.n_head, c.head_dim)) for _ in range(c.n_layer)]
    out = np.zeros((n, model.vocab_rows))
    H = np.full(n, np.nan)
    attn_total = np.zeros(n)  # h2o: attention received from every query so far
    attn_since = np.zeros(n)  # snapkv: ... from the queries since the last eviction
    key_norm = np.zeros(n)    # keynorm: sum over layers and heads of ||k||

    f, draining = s, False
    D: list[int] = []
    events: list[Eviction] = []
    forced: list[int] = []
    visible: list[np.ndarray] = []
    pinned: list[np.ndarray] = []
    margin = math.inf

    for t in range(n):
        # 1. the eviction due before token t
        drop, f_old = 0, f
        if t >= s:
            size = s + (t - f)
            over = size + 1 > budget + r - 1
            need = size + 1 - (budget + overlap)
            force = entropy_threshold > 0 and t >= 1 and H[t - 1] > entropy_threshold
            if entropy_threshold > 0 and t >= 1 and not (draining or over) and need > 0:
                # the trigger alone decides whether this eviction happens
                margin = min(margin, _rel_gap(float(H[t - 1]), entropy_threshold))
                if force:
                    forced.append(t)
            if draining or force or over:
                if need > 0:
                    drop = need if max_drop == 0 else min(need, max_drop)
                    f += drop
                    events.append(Eviction(step=t, dropped=drop, kept=size + 1 - drop))
                    draining = max_drop > 0 and need > drop
                else:
                    draining = False
        # 2. the dynamic pinned set
        if drop > 0 and M > 0:
            span = list(range(f_old, f_old + drop))
            if policy in ("streaming", "window"):
                if refresh == "uniform":
                    sel = uniform_refresh(f_old, drop, M)
                elif refresh == "structural":
                    sel = [p for p in span if int(ids[p]) in structural][-M:]
                else:
                    sel, gap = top_by_score(span, {p: float(H[p]) for p in span}, min(M, drop))
                    margin = min(margin, gap)
                D = sorted(set(D) | set(sel))[-M:]
            else:
                cands = D + span
                if policy == "h2o":
                    score = {p: float(attn_total[p]) for p in cands}
                elif policy == "snapkv":
                    score = snapkv_pool(cands, {p: float(attn_since[p]) for p in cands})
                else:
                    score = {p: -float(key_norm[p]) for p in cands}
                D, gap = top_by_score(cands, score, M)
                margin = min(margin, gap)
        if drop > 0:
            attn_since[:] = 0.0  # snapkv's observation window restarts at every eviction
        # 3. token t through the model, on sinks + D + window
        if t < s:
            idx = np.arange(0, t + 1)
        else:
            idx = np.array(list(range(s)) + D + list(range(f, t + 1)), dtype=np.int64)
        visible.append(idx)
        pinned.append(np.array(D, dtype=np.int64))
        m = len(idx)
        x = x_all[t : t + 1]
        for layer in range(c.n_layer):
            q, k, v = model._qkv(layer, model._ln(layer, "input_layernorm", x))
            keys[layer][t], values[layer][t] = k[0], v[0]
            key_norm[t] += float(np.linalg.norm(k[0], axis=-1).sum())
            kr = rotate(keys[layer][idx], np.arange(m), c.rotary_dim, c.rotary_base)
            qr = rotate(q, np.array([m - 1]), c.rotary_dim, c.rotary_base)
            scores = np.einsum("qhd,khd->hqk", qr, kr) / math.sqrt(c.head_dim)
            probs = softmax(scores)  # [head, 1, m]
            received = probs[:, 0, :].sum(axis=0)
            attn_total[idx] += received
            attn_since[idx] += received
            heads = np.einsum("hqk,khd->qhd", probs, values[layer][idx])
            x = model._residual(layer, x, model._attn_out(layer, heads))
        out[t] = model._logits(x)[0]
        H[t] = entropy_nats(out[t])
    return SelectTrace(out, events, visible, pinned, H, forced, margin)
