"""Shared pieces of the atheris harnesses in fuzz/.

Each harness defines ``one_input(data: bytes)`` that feeds the bytes to a
parser, checks what comes back, and lets any exception escape; :func:`main`
wraps it so that the exceptions the parser documents for bad input are
swallowed and everything else -- another exception type, a failed check, a
crash in the C core, a hang (libFuzzer's -timeout) or a runaway allocation
(-rss_limit_mb / -malloc_limit_mb) -- stops the fuzzer with a reproducer.

What counts as a documented error (the issue's contract for untrusted input):
``ValueError`` (SafetensorsError, TokenizerFormatError, UnicodeError and the
config errors are all ValueErrors), ``TypeError``, ``KeyError`` and
``IndexError``. ``SPECSTREAM_FUZZ_STRICT=1`` narrows that to each parser's
own documented class (``strict`` below), to find errors that are raised with
the wrong type or without naming the file.

Run a harness through fuzz/run.sh, or directly:
``python fuzz/fuzz_config.py CORPUS_DIR -max_total_time=60``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterable

import atheris

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: What any untrusted-input parser may raise (see the module docstring).
ALLOWED: tuple[type[BaseException], ...] = (ValueError, TypeError, KeyError, IndexError)
STRICT = os.environ.get("SPECSTREAM_FUZZ_STRICT", "") not in ("", "0")


def instrumented_specstream() -> None:
    """Imports specstream with atheris coverage instrumentation (the Python
    code only; the C core is fuzzed by the libFuzzer targets in fuzz/c/)."""
    with atheris.instrument_imports(include=["specstream"]):
        import specstream  # noqa: F401
        import specstream.config  # noqa: F401
        import specstream.model  # noqa: F401
        import specstream.safetensors  # noqa: F401
        import specstream.tokenizer  # noqa: F401  (instrumented, used by the harnesses)


#: Open findings in code outside fuzz/ (reported with reproducers; see
#: docs/RELIABILITY.md and tests/test_fuzz_regressions.py, where each is a
#: strict xfail): (exception type, file, function) of where the exception is
#: raised inside specstream. The fuzzers step over these so that they keep
#: looking for new problems; delete an entry once its fix lands.
KNOWN: list[tuple[type[BaseException], str, str]] = []


def _known(e: BaseException) -> bool:
    frames = []
    tb = e.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code)
        tb = tb.tb_next
    inside = [f for f in frames if "/specstream/" in f.co_filename.replace("\\", "/")]
    if not inside:
        return False
    last = inside[-1]
    path = last.co_filename.replace("\\", "/")
    return any(isinstance(e, t) and path.endswith(f) and last.co_name == fn for t, f, fn in KNOWN)


def allowed(strict: Iterable[type[BaseException]] = ()) -> tuple[type[BaseException], ...]:
    """The exceptions that count as a documented rejection of bad input."""
    strict = tuple(strict)
    return strict if STRICT and strict else ALLOWED


def main(one_input: Callable[[bytes], None], strict: Iterable[type[BaseException]] = ()) -> None:
    """Runs libFuzzer (through atheris) on one_input with the command line."""
    ok = allowed(strict)

    def test_one_input(data: bytes) -> None:
        try:
            one_input(data)
        except ok:
            pass
        except Exception as e:  # noqa: BLE001
            if not _known(e):
                raise

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def replay(one_input: Callable[[bytes], None], paths: Iterable[Path], strict: Iterable[type[BaseException]] = ()) -> int:
    """Runs one_input on files without libFuzzer (for debugging a crash):
    prints what each raised; returns how many broke the contract."""
    ok = allowed(strict)
    bad = 0
    for p in paths:
        try:
            one_input(Path(p).read_bytes())
            print(f"{p}: ok")
        except ok as e:
            print(f"{p}: rejected: {type(e).__name__}: {str(e)[:200]}")
        except BaseException as e:  # noqa: BLE001 - reporting everything is the point
            if _known(e):
                print(f"{p}: KNOWN ISSUE: {type(e).__name__}: {str(e)[:200]}")
                continue
            bad += 1
            print(f"{p}: CONTRACT BROKEN: {type(e).__name__}: {str(e)[:500]}")
    return bad


def real_tokenizer_json() -> Path:
    """A full-size tokenizer.json for the encode/decode targets, first found of:
    $SPECSTREAM_FUZZ_TOKENIZER_JSON; the GPT-NeoX-20B tokenizer under
    $SPECSTREAM_DATA (default: shared/data beside the repository); the bundled
    default model's; the small seed fuzz/corpus/tokenizer_json/small_bpe.json."""
    data = Path(os.environ.get("SPECSTREAM_DATA", REPO.parent / "shared" / "data"))
    candidates = [
        os.environ.get("SPECSTREAM_FUZZ_TOKENIZER_JSON"),
        data / "tokenizer" / "gpt-neox-20b.tokenizer.json",
        REPO / "specstream" / "default_models" / "target" / "tokenizer.json",
        HERE / "corpus" / "tokenizer_json" / "small_bpe.json",
    ]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    raise FileNotFoundError("no tokenizer.json found for the tokenizer targets")
