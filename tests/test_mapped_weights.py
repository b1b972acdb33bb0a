"""Weights files changed after load. Weights are used in place from
read-only maps of their files; a file truncated in place after load would
kill the process with SIGBUS at the next forward. The core turns that into
OSError (and keeps raising until the model is loaded again); load(...,
mmap=False) keeps weights in memory, immune to the file. Each case runs in
a child process, so that a regression is a failed test, not a dead suite."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from specstream.models import create_random

SHAPE = dict(n_layer=2, d_model=64, n_head=4, d_ff=256, vocab_size=1000, rotary_pct=0.25)


def run_child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mapped")


@pytest.mark.parametrize("file_dtype,dtype", [("f32", "f32"), ("bf16", "bf16"), ("f32", "int8")])
def test_truncated_weights_raise_oserror(model_dir, file_dtype, dtype):
    d = create_random(dict(SHAPE), model_dir / f"{file_dtype}-{dtype}", seed=1, dtype=file_dtype)
    r = run_child(f"""
        import os, specstream
        from specstream import CacheConfig
        m = specstream.load({str(d)!r}, dtype={dtype!r})
        m.forward([1, 2, 3])
        os.truncate({str(d / "model.safetensors")!r}, 0)
        for call in (lambda: m.forward([1, 2, 3]), lambda: m.generate([1, 2], 4, speculative=None)):
            try:
                call()
            except OSError as e:
                assert "model.safetensors" in str(e) and "load the model again" in str(e), e
                print("OSError")
            else:
                print("no error")
        """)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.split() == ["OSError", "OSError"], r.stdout


def test_mmap_false_is_immune_to_the_file(model_dir):
    d = create_random(dict(SHAPE), model_dir / "copy", seed=2)
    r = run_child(f"""
        import os, numpy as np, specstream
        m = specstream.load({str(d)!r}, mmap=False)
        want = m.forward([1, 2, 3])
        os.truncate({str(d / "model.safetensors")!r}, 0)
        np.testing.assert_array_equal(m.forward([1, 2, 3]), want)
        print("ok")
        """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout, r.stderr[-2000:])


def test_a_fault_outside_weights_still_ends_the_process(tmp_path):
    """The handler only takes faults in watched maps: a SIGBUS anywhere else
    does what it did before (here: the default action)."""
    d = create_random(dict(SHAPE), tmp_path / "m", seed=3)
    other = tmp_path / "other.bin"
    other.write_bytes(b"x" * 65536)
    r = run_child(f"""
        import mmap, os, faulthandler, specstream
        faulthandler.disable()
        m = specstream.load({str(d)!r})
        f = open({str(other)!r}, "rb")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        os.truncate({str(other)!r}, 0)
        print(mm[40000])
        """)
    assert r.returncode == -7, (r.returncode, r.stderr[-500:])  # SIGBUS


def test_bad_mmap_argument(model_dir):
    import specstream

    d = create_random(dict(SHAPE), model_dir / "arg", seed=4)
    with pytest.raises(TypeError, match="mmap"):
        specstream.load(d, mmap="no")
