"""atheris harness: specstream.safetensors.read_header and load on arbitrary bytes.

The input is written to a file and read as a safetensors file. A header that
read_header accepts must load, and every array must be exactly what the
header says (shape, dtype, read-only) and hold exactly the file's bytes at
its offsets; tensors must not overlap. Documented failure: SafetensorsError.
"""

from __future__ import annotations

import os
import sys
import tempfile

import _common

_common.instrumented_specstream()

import numpy as np  # noqa: E402

from specstream import safetensors as st  # noqa: E402

_DIR = tempfile.mkdtemp(prefix="specstream-fuzz-st-")
PATH = os.path.join(_DIR, "model.safetensors")


def one_input(data: bytes) -> None:
    with open(PATH, "wb") as f:
        f.write(data)
    header = st.read_header(PATH)
    assert header.data_start >= 8 and header.file_size == len(data)
    arrays = st.load(PATH, header=header)
    assert set(arrays) == set(header.tensors)
    spans = []
    for name, info in header.tensors.items():
        a = arrays[name]
        assert a.shape == info.shape, (name, a.shape, info.shape)
        assert a.dtype == info.numpy_dtype, (name, a.dtype)
        assert a.nbytes == info.nbytes, (name, a.nbytes, info.nbytes)
        assert not a.flags.writeable
        lo, hi = header.data_start + info.begin, header.data_start + info.end
        assert np.ascontiguousarray(a).view(np.uint8).tobytes() == data[lo:hi], name
        if hi > lo:
            spans.append((lo, hi))
    spans.sort()
    assert all(b0 <= a1 for (_, b0), (a1, _) in zip(spans, spans[1:])), "tensors overlap"
    del arrays


if __name__ == "__main__":
    if sys.argv[1:2] == ["--replay"]:
        sys.exit(1 if _common.replay(one_input, sys.argv[2:], strict=(st.SafetensorsError,)) else 0)
    _common.main(one_input, strict=(st.SafetensorsError,))
