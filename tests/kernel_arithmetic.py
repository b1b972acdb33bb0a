"""NumPy models of the arithmetic of each CPU kernel level, and the error
bounds derived from it (csrc/kernels/cpu/kernels.h states them).

A machine runs only the levels its CPU has, so each level's arithmetic is
also modelled here and its stated bound checked against the model on every
machine: a kernel that runs only elsewhere still has a tested error bound.

A level's arithmetic has two parts:

* what it does to the activations before multiplying (:func:`activations`):
  nothing (f32 kernels) or a split into bf16 ``hi + lo`` (VDPBF16PS kernels),
  with a stated relative bound on what that drops (:data:`ACTIVATION_ERROR`);
* f32 accumulation of exact-or-rounded products, bounded by ``(k + 8) u``
  times ``sum |x w|`` whatever the summation order.

The model of a product is ``activations(x) @ w.T`` in float64: exact sums of
what the kernel multiplies, so kernel - model is accumulation error only.
"""

from __future__ import annotations

import numpy as np

U = 2.0**-24  # f32 unit roundoff
LEVELS = ["scalar", "avx2", "avx512bf16"]

#: Relative bound on |x - what the kernel multiplies with| per level and dtype.
ACTIVATION_ERROR = {("avx512bf16", "bf16"): 2.0**-16}


def bf16_round(a: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (nearest even), as float32."""
    b = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return b.astype(np.uint32).view(np.float32)


def activation_error(level: str, dtype: str, n: int, gemm_min: int) -> float:
    """Stated relative activation error of the kernel that runs this batch
    (0: f32 activations). The hi/lo kernel serves batches below the GEMM's."""
    return ACTIVATION_ERROR.get((level, dtype), 0.0) if n < gemm_min else 0.0


def activations(x: np.ndarray, split: bool) -> np.ndarray:
    """What the kernel multiplies the weights with, in float64."""
    x32 = np.asarray(x, np.float32)
    if not split:
        return x32.astype(np.float64)
    hi = bf16_round(x32)
    lo = bf16_round(x32 - hi)  # exact in f32: hi has the leading bits of x
    return hi.astype(np.float64) + lo.astype(np.float64)


def model(x: np.ndarray, w64: np.ndarray, split: bool) -> np.ndarray:
    """Exact sums of the products the kernel forms."""
    return activations(x, split) @ w64.T


def bound(x: np.ndarray, w64: np.ndarray, act_error: float, bias: np.ndarray | None = None) -> np.ndarray:
    """Elementwise bound on |kernel - exact| for x @ w.T (+ bias), given the
    kernel's relative activation error."""
    k = x.shape[1]
    mag = np.abs(np.asarray(x, np.float64)) @ np.abs(w64).T
    extra = 0.0 if bias is None else 2 * U * np.abs(bias)
    return (act_error + (k + 8) * U) * mag + extra + 1e-30
