"""NumPy models of the arithmetic of each CPU kernel, and the error bounds
derived from it (csrc/kernels/cpu/kernels.h states them).

A machine runs only the kernels its CPU has, so each kernel's arithmetic is
also modelled here and its stated bounds checked against the model on every
machine: a kernel that runs only elsewhere still has a tested error bound.

A kernel's arithmetic has three parts:

* what it does to the activations before multiplying (:func:`activations`):
  nothing (f32 kernels), a split into bf16 ``hi + lo`` (AMX, bf16 and int4
  weights) with a stated relative bound on what that drops
  (:data:`ACTIVATION_ERROR`), or fixed point with 2^-20 of the token's
  largest activation as step (AMX, int8 weights: :data:`FIXED_POINT_BITS`);
* what it multiplies the activations with (:func:`weights`): the values the
  stored format stands for, except where the kernel rounds them (the
  portable path rounds int8 ``q * s`` to f32, AMX rounds int4 ``(q - z) * s``
  to bf16: :data:`WEIGHT_ERROR`);
* f32 accumulation of exact-or-rounded products: ``terms * k`` of them per
  output (``terms`` = 2 where hi and lo are multiplied separately), bounded
  by ``(terms * k + 8) u`` times ``sum |x w|`` whatever the summation order;
  or exact integer sums rounded once at the end (AMX int8).

The model of a product is ``activations(x) @ weights(w).T`` in float64:
exact sums of what the kernel multiplies, so kernel - model is accumulation
error only.
"""

from __future__ import annotations

import numpy as np

U = 2.0**-24  # f32 unit roundoff
LEVELS = ["scalar", "avx2", "avx512", "amx"]

#: Relative bound on |x - what the kernel multiplies x with|, per kernel level.
ACTIVATION_ERROR = {"amx": 2.0**-16}
#: Products per weight and activation (AMX multiplies hi and lo separately).
TERMS = {"amx": 2}
#: Relative bound on |w - what the kernel multiplies|, per (kernel level, format).
WEIGHT_ERROR = {("amx", "int4"): 2.0**-8, ("scalar", "int8"): U}
#: AMX int8: activations in fixed point, |x - x'| <= 2^-FIXED_POINT_BITS max|x_token|.
FIXED_POINT_BITS = 20


def fixed_point(level: str, fmt: str | None) -> bool:
    return level == "amx" and fmt == "int8"



def kernel_level(path: str) -> str:
    """The level of a kernel from its name ("avx2-gemv" -> "avx2")."""
    return path.split("-")[0]


def bf16_round(a: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (nearest even), as float32."""
    b = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return b.astype(np.uint32).view(np.float32)


def activation_error(level: str, fmt: str | None = None) -> float:
    """Stated relative error (per element) of what the kernel multiplies
    instead of x; 0 for fixed point, whose error is relative to the token's
    largest activation (:func:`activation_bound`)."""
    return 0.0 if fixed_point(level, fmt) else ACTIVATION_ERROR.get(level, 0.0)


def activation_bound(x: np.ndarray, level: str, fmt: str | None = None) -> np.ndarray:
    """Elementwise bound on |x - what the kernel multiplies x with|."""
    x64 = np.abs(np.asarray(x, np.float64))
    if fixed_point(level, fmt):
        return np.broadcast_to(2.0**-FIXED_POINT_BITS * x64.max(axis=1, keepdims=True), x64.shape)
    return activation_error(level, fmt) * x64


def activations(x: np.ndarray, level: str, fmt: str | None = None) -> np.ndarray:
    """What the kernel multiplies the weights with, in float64."""
    x32 = np.asarray(x, np.float32)
    if fixed_point(level, fmt):  # v = rint(x 2^F), F = 20 - e with max|x| = m 2^e, m in [0.5, 1)
        _, e = np.frexp(np.abs(x32).max(axis=1, keepdims=True).astype(np.float64))
        F = np.where(np.abs(x32).max(axis=1, keepdims=True) > 0, FIXED_POINT_BITS - e, 0)
        return np.rint(x32.astype(np.float64) * 2.0**F) * 2.0**-F
    if level != "amx":
        return x32.astype(np.float64)
    hi = bf16_round(x32)
    lo = bf16_round(x32 - hi)  # exact in f32: hi has the leading bits of x
    return hi.astype(np.float64) + lo.astype(np.float64)


def weights(level: str, fmt: str, w64: np.ndarray, parts: tuple | None = None) -> np.ndarray:
    """What the kernel multiplies with, given the exact weights w64 the format
    stands for (int8: ``parts`` = (q, s), whose f32 product the portable path
    uses)."""
    if level == "amx" and fmt == "int4":
        return bf16_round(w64.astype(np.float32)).astype(np.float64)  # (q - z) s is exact in f32
    if level == "scalar" and fmt == "int8":
        q, s = parts
        return (q.astype(np.float32) * s.astype(np.float32)[:, None]).astype(np.float64)
    return w64


def model(x: np.ndarray, w_used: np.ndarray, level: str, fmt: str | None = None) -> np.ndarray:
    """Exact sums of the products the kernel forms."""
    return activations(x, level, fmt) @ w_used.T


def bound(x: np.ndarray, w64: np.ndarray, level: str, fmt: str | None = None, bias: np.ndarray | None = None,
          exact: bool = True) -> np.ndarray:
    """Elementwise bound on |kernel - reference| for x @ w.T (+ bias): against
    the exact product when ``exact``, else against :func:`model` (accumulation
    error alone)."""
    k = x.shape[1]
    mag = np.abs(np.asarray(x, np.float64)) @ np.abs(w64).T
    extra = 0.0 if bias is None else 2 * U * np.abs(bias)
    if fixed_point(level, fmt):  # exact integer sums, one rounding at the end
        act = activation_bound(x, level, fmt) @ np.abs(w64).T if exact else 0.0
        return act + 3 * U * mag + extra + 1e-30
    stated = activation_error(level, fmt) + WEIGHT_ERROR.get((level, fmt), 0.0) if exact else 0.0
    return (stated + (TERMS.get(level, 1) * k + 8) * U) * mag + extra + 1e-30
