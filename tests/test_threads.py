"""Thread safety of the Python API (docs/RELIABILITY.md, "Threads").

The contract:
  * a Model (and a Tokenizer) is read-only after loading and may be used by
    any number of threads at once: every call makes its own state, and gives
    exactly what it gives single-threaded;
  * a TokenStream (the generator behind Model.stream) belongs to one thread
    at a time: a second thread that steps it while a step runs gets
    RuntimeError("... in use by another thread") and the stream is unharmed;
  * long calls (forward, generate, stream steps, eval) release the GIL, so
    other Python threads keep running meanwhile.
"""

from __future__ import annotations

import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import specstream
from specstream import CacheConfig, SpeculativeConfig
from conftest import rss_bytes

N_THREADS = 4
SMALL_TOKENIZER = Path(__file__).resolve().parents[1] / "fuzz" / "corpus" / "tokenizer_json" / "small_bpe.json"

CACHES = {
    "full": CacheConfig(),
    "streaming": CacheConfig(policy="streaming", n_sink=2, window=24),
    "window": CacheConfig(policy="window", window=20, compress_every=4),
    "h2o": CacheConfig(policy="h2o", n_sink=2, window=16, heavy=6),
    "refresh": CacheConfig(policy="streaming", n_sink=2, window=20, refresh_budget=4, compress_every=3),
}


def _tasks(models: dict[str, specstream.Model]) -> dict[str, object]:
    """Named calls on the shared models; each returns arrays to compare."""
    target, draft = models["parallel"], models["draft"]
    prompt = np.random.default_rng(7).integers(0, target.vocab_size, 40).astype(np.int32)
    long_ids = np.random.default_rng(8).integers(0, target.vocab_size, 120).astype(np.int32)
    tasks: dict[str, object] = {}
    for name, cache in CACHES.items():
        tasks[f"forward-{name}"] = lambda c=cache: target.forward(long_ids, cache=c, chunk=32)
        tasks[f"greedy-{name}"] = lambda c=cache: target.generate(prompt, 40, cache=c, speculative=None).tokens
        for seed in (1, 2):
            tasks[f"sample-{name}-s{seed}"] = lambda c=cache, s=seed: target.generate(
                prompt, 40, cache=c, temperature=0.9, top_k=50, seed=s, speculative=None).tokens
            tasks[f"draft-{name}-s{seed}"] = lambda c=cache, s=seed: target.generate(
                prompt, 40, cache=c, draft=draft, speculative=SpeculativeConfig(k=3), temperature=1.0,
                seed=s).tokens
        tasks[f"lookup-{name}"] = lambda c=cache: target.generate(
            prompt, 40, cache=c, speculative=SpeculativeConfig(method="lookup", k=4)).tokens
        tasks[f"stream-{name}"] = lambda c=cache: np.array(
            list(target.stream(prompt, 30, cache=c, draft=draft, temperature=0.7, seed=5)), dtype=np.int32)
    tasks["sequential-forward"] = lambda: models["sequential"].forward(long_ids % models["sequential"].vocab_size)
    tasks["eval"] = lambda: np.asarray(specstream.eval.perplexity(target, long_ids, cache=CACHES["streaming"]).nll)
    return tasks


def test_shared_model_from_threads_matches_single_thread(models):
    tasks = _tasks(models)
    expected = {name: np.array(fn()) for name, fn in tasks.items()}
    names = list(tasks)
    barrier = threading.Barrier(N_THREADS)

    def worker(i: int) -> list[str]:
        order = list(np.random.default_rng(i).permutation(names))
        barrier.wait()  # all threads start together
        wrong = []
        for _ in range(2):
            for name in order:
                got = np.array(tasks[name]())
                if got.shape != expected[name].shape or not np.array_equal(got, expected[name]):
                    wrong.append(name)
        return wrong

    with ThreadPoolExecutor(N_THREADS) as pool:
        wrong = [w for ws in pool.map(worker, range(N_THREADS)) for w in ws]
    assert not wrong, f"results differ from the single-threaded ones under {N_THREADS} threads: {sorted(set(wrong))}"


def test_shared_tokenizer_from_threads():
    """Encoding and decoding with one tokenizer from several threads (texts
    long enough that the binding releases the GIL)."""
    tok = specstream.Tokenizer.from_file(SMALL_TOKENIZER)
    text = specstream.default_text("pg2554")
    texts = [text[i * 9000:(i + 1) * 9000] for i in range(8)]
    expected = [tok.encode(t) for t in texts]

    def worker(i: int) -> bool:
        ok = True
        for j in range(len(texts)):
            k = (i + j) % len(texts)
            ids = tok.encode(texts[k])
            ok &= bool(np.array_equal(ids, expected[k])) and tok.decode(ids) == tok.normalize(texts[k])
        return ok

    with ThreadPoolExecutor(N_THREADS) as pool:
        assert all(pool.map(worker, range(N_THREADS)))


def test_concurrent_step_on_one_stream_raises(models):
    """While one thread is inside a step, another thread's step raises
    RuntimeError; the stream then goes on exactly as if untouched."""
    target, draft = models["parallel"], models["draft"]
    prompt = np.arange(1, 30, dtype=np.int32)
    kwargs = dict(max_new_tokens=2500, cache=CACHES["streaming"], draft=draft, temperature=1.0, seed=11)
    reference = target.generate(prompt, step_tokens=4096, **kwargs).tokens

    stream = target.stream(prompt, **kwargs)
    gen = stream._gen  # the core generator, for one long step in one thread
    first = gen.step(1)  # the prompt is processed outside the race
    inside = threading.Event()
    result: dict[str, np.ndarray] = {}

    def long_step() -> None:
        inside.set()
        result["tokens"] = gen.step(2000)

    t = threading.Thread(target=long_step)
    t.start()
    inside.wait()
    core_errors, public_errors, extra = [], [], []
    while t.is_alive():
        try:
            gen.step(0)  # asks for no tokens: changes nothing when it runs
        except RuntimeError as e:
            core_errors.append(str(e))
            # The other thread is inside its step: the public iterator must
            # refuse too (or, if that step just ended, simply go on).
            try:
                extra.append(next(iter(stream)))
            except RuntimeError as e2:
                public_errors.append(str(e2))
        time.sleep(0.0005)
    t.join()
    assert core_errors, "stepping a stream that another thread was stepping never raised"
    assert public_errors, "iterating a stream that another thread was stepping never raised"
    assert all("in use by another thread" in e for e in core_errors + public_errors), (core_errors + public_errors)[:3]
    rest = np.array(list(stream), dtype=np.int32)
    got = np.concatenate([first, result["tokens"], np.array(extra, dtype=np.int32), rest])
    np.testing.assert_array_equal(got, reference)


def test_gil_released_during_long_forward(models):
    """A Python thread keeps running while another thread is inside a long
    forward pass: the longest pause it sees is a small part of the call."""
    target = models["parallel"]
    ids = np.random.default_rng(3).integers(0, target.vocab_size, 1500).astype(np.int32)
    for n in (1500, 4000, 8000):  # make the call long enough to measure on a fast machine too
        ids = np.resize(ids, n)
        start = threading.Event()
        span: dict[str, float] = {}

        def call() -> None:
            start.set()
            t0 = time.perf_counter()
            target.forward(ids, chunk=256)
            span["t0"], span["t1"] = t0, time.perf_counter()

        t = threading.Thread(target=call)
        t.start()
        start.wait()
        stamps = []
        count = 0
        while t.is_alive():
            count += 1
            if count % 200 == 0:
                stamps.append(time.perf_counter())
        t.join()
        duration = span["t1"] - span["t0"]
        if duration >= 0.3:
            break
    inside = [s for s in stamps if span["t0"] <= s <= span["t1"]]
    gaps = np.diff([span["t0"]] + inside + [span["t1"]])
    assert len(inside) > 10, f"the counting thread ran {len(inside)} times during a {duration:.2f} s forward"
    assert gaps.max() < 0.5 * duration, f"longest pause {gaps.max():.3f} s of a {duration:.2f} s call: GIL held?"


def test_gil_released_during_generate(models):
    """The same for generate (steps of step_tokens tokens without the GIL)."""
    target = models["parallel"]
    prompt = np.arange(1, 20, dtype=np.int32)
    done = threading.Event()
    span: dict[str, float] = {}

    def call() -> None:
        t0 = time.perf_counter()
        target.generate(prompt, 3000, cache=CACHES["streaming"], speculative=None, step_tokens=3000)
        span["t0"], span["t1"] = t0, time.perf_counter()
        done.set()

    t = threading.Thread(target=call)
    t.start()
    count = 0
    while not done.is_set():
        count += 1
    t.join()
    rate = count / (span["t1"] - span["t0"])
    assert rate > 1e4, f"the other thread made only {rate:.0f} increments/s during generate: GIL held?"


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_short_lived_threads_do_not_leak(models):
    """A server that runs each request on a new thread must not grow."""
    target = models["parallel"]
    ids = np.arange(64, dtype=np.int32)

    def run_threads(n: int) -> None:
        for _ in range(n):
            t = threading.Thread(target=target.forward, args=(ids,))
            t.start()
            t.join()

    run_threads(20)  # warm-up: allocator arenas, OpenMP pools
    gc.collect()
    before = rss_bytes()
    run_threads(60)
    gc.collect()
    grown = rss_bytes() - before
    assert grown < 4 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over 60 short-lived threads"


def test_busy_check_and_set_is_atomic(models):
    """A step whose size argument runs Python code (an __index__ that
    sleeps; a GC finalizer can do the same) lets a second thread past the
    busy check: both steps run on one generator at once and the stream is
    corrupted. The second step must raise instead."""
    target = models["parallel"]
    kwargs = dict(max_new_tokens=1200, cache=CACHES["streaming"], speculative=None)
    stream = target.stream(np.arange(1, 10, dtype=np.int32), **kwargs)
    gen = stream._gen
    gen.step(1)

    class SlowIndex:
        def __index__(self) -> int:
            time.sleep(0.2)  # the GIL is released here, after claim() passed
            return 500

    out: dict[str, object] = {}

    def first() -> None:
        out["a"] = gen.step(SlowIndex())

    def second() -> None:
        time.sleep(0.05)
        try:
            out["b"] = gen.step(500)
        except RuntimeError as e:
            out["b"] = e

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(out["b"], RuntimeError), "a second step ran while the first was inside the generator"


def _while_stepping(gen, n: int, call) -> tuple[list[str], np.ndarray]:
    """Calls call() over and over while another thread runs gen.step(n);
    returns the RuntimeError messages it raised and the step's tokens."""
    inside = threading.Event()
    result: dict[str, np.ndarray] = {}

    def long_step() -> None:
        inside.set()
        result["tokens"] = gen.step(n)

    t = threading.Thread(target=long_step)
    t.start()
    inside.wait()
    errors = []
    while t.is_alive():
        try:
            call()
        except RuntimeError as e:
            errors.append(str(e))
        time.sleep(0.0005)
    t.join()
    return errors, result["tokens"]


def test_reading_a_stream_while_another_thread_steps_it_raises(models):
    """stats(), done and target_cache_bytes (so TokenStream.stats,
    cache_bytes and iteration) read the generator that a running step is
    writing: while a step runs they raise the same RuntimeError as a second
    step, and the stream goes on unharmed."""
    target = models["parallel"]
    prompt = np.arange(1, 12, dtype=np.int32)
    kwargs = dict(max_new_tokens=2500, cache=CACHES["streaming"], speculative=None)
    reference = target.generate(prompt, step_tokens=4096, **kwargs).tokens
    stream = target.stream(prompt, **kwargs)
    gen = stream._gen
    parts = [gen.step(1)]
    readers = {
        "stats()": gen.stats,
        "done": lambda: gen.done,
        "target_cache_bytes": lambda: gen.target_cache_bytes,
        "TokenStream.stats": lambda: stream.stats,
        "TokenStream.cache_bytes": lambda: stream.cache_bytes,
        "iteration": lambda: next(iter(stream)),
    }
    for name, read in readers.items():
        if name == "iteration":
            continue  # would take tokens from the stream whenever the step is over
        errors, tokens = _while_stepping(gen, 400, read)
        parts.append(tokens)
        assert errors, f"{name} never raised while another thread was stepping the stream"
        assert all("in use by another thread" in e for e in errors), (name, errors[:2])
    rest = np.array(list(stream), dtype=np.int32)
    np.testing.assert_array_equal(np.concatenate(parts + [rest]), reference)
    assert stream.stats.new_tokens == len(reference)


def test_reinitialising_a_generator_while_it_steps_raises(models, monkeypatch):
    """Generator.__init__ on a generator another thread is stepping would
    free it under the step (a use after free): it must raise instead."""
    target = models["parallel"]
    prompt = np.arange(1, 12, dtype=np.int32)
    kwargs = dict(max_new_tokens=2500, cache=CACHES["streaming"], speculative=None)
    captured = {}

    class Capture:  # records the arguments Model.stream gives the core's Generator
        def __init__(self, *args):
            captured["args"] = args

    with monkeypatch.context() as m:
        m.setattr(specstream.model._core, "Generator", Capture)
        target.stream(prompt, **kwargs)
    gen = target.stream(prompt, **kwargs)._gen
    gen.step(1)
    # A re-initialisation that gets in before the step begins or after it
    # ends is legitimate; the ones during it must be refused.
    errors, tokens = _while_stepping(gen, 2000, lambda: gen.__init__(*captured["args"]))
    assert errors, "re-initialising a generator another thread was stepping never raised"
    assert all("in use by another thread" in e for e in errors), errors[:2]
    assert len(tokens) == 2000 and tokens.min() >= 0 and tokens.max() < target.vocab_size
