"""The invariant speculative decoding rests on: for a given kernel level and
weight format, row i of an n-token product is bitwise the 1-token product of
row i alone, for every n up to SS_WIDE_MAX (the order of every output's
floating-point operations depends neither on n, nor on the tile it falls
in, nor on the threads). And the thread split entry point (ss_matmul_part)
gives ss_matmul_ex's results for any number of parts."""

from __future__ import annotations

import numpy as np
import pytest

import specstream
from specstream import _core
from test_cpu_kernels import FORMATS, WIDE_MAX, EPI_ADD, EPI_GELU, EPI_NONE, case, level_param, stored

SHAPES = [(37, 70), (130, 96), (64, 257)]


@level_param
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m,k", SHAPES)
def test_rows_of_a_batch_are_bitwise_single_token_products(level, fmt, m, k):
    x, w, b = case(WIDE_MAX, m, k, seed=31)
    wk, _, _ = stored(w, fmt)
    epi = EPI_GELU if m % 2 else EPI_NONE
    single = np.concatenate([_core.matmul(x[i:i + 1], wk, fmt, m, b, epilogue=epi, level=level)
                             for i in range(WIDE_MAX)])
    for n in range(1, WIDE_MAX + 1):
        batch = _core.matmul(x[:n], wk, fmt, m, b, epilogue=epi, level=level)
        np.testing.assert_array_equal(batch, single[:n], err_msg=f"n={n}")


@level_param
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("n", [1, 7, 16, 33, WIDE_MAX, WIDE_MAX + 30])
def test_parts_give_the_whole_product(level, fmt, n):
    """Any number of parts, each computed alone (as threads of one parallel
    region would), together give ss_matmul_ex's bits; the residual epilogue
    shows that every row is written exactly once."""
    m, k = 150, 88
    x, w, b = case(n, m, k, seed=41)
    wk, _, _ = stored(w, fmt)
    resid = np.random.default_rng(2).standard_normal((n, m)).astype(np.float32)
    whole = resid.copy()
    _core.matmul(x, wk, fmt, m, b, epilogue=EPI_ADD, out=whole, level=level)
    for parts in (1, 2, 3, 7):
        split = resid.copy()
        _core.matmul(x, wk, fmt, m, b, epilogue=EPI_ADD, out=split, level=level, parts=parts)
        np.testing.assert_array_equal(split, whole, err_msg=f"parts={parts}")


@level_param
@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_independent_of_thread_count(level, fmt):
    m, k = 300, 130
    x, w, b = case(20, m, k, seed=5)
    wk, _, _ = stored(w, fmt)
    before = specstream.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 3):
            specstream.set_num_threads(t)
            outs.append(_core.matmul(x, wk, fmt, m, b, level=level))
    finally:
        specstream.set_num_threads(before)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
