"""A careful reader and writer for the safetensors file format.

File layout (all integers little-endian)::

    [8 bytes]  N, unsigned 64-bit: length of the JSON header in bytes
    [N bytes]  UTF-8 JSON object:
                 {"<tensor name>": {"dtype": "F32", "shape": [rows, cols],
                                    "data_offsets": [begin, end]},
                  ...,
                  "__metadata__": {"<str>": "<str>", ...}}        (optional)
    [rest]     the data buffer; offsets are relative to its first byte

Files are untrusted input: :func:`read_header` checks every field, offset and
size before anything is mapped, and every problem raises
:class:`SafetensorsError` (a ``ValueError``) whose message names the file and,
where one is at fault, the tensor.

Arrays returned by :func:`load` are read-only, zero-copy views into a
memory map of the file. NumPy has no bfloat16 dtype, so ``BF16`` tensors are
returned as ``uint16`` arrays holding the raw bit patterns; convert them with
:func:`bf16_to_f32` (and back with :func:`f32_to_bf16`).

Sharded Hugging Face checkpoints (``model.safetensors.index.json`` plus
``model-0000i-of-0000n.safetensors`` files) are read by
:func:`load_dir_tensors`.
"""

from __future__ import annotations

import json
import math
import mmap
import weakref
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Union

import numpy as np

from ._atomic import atomic_open

__all__ = [
    "SafetensorsError",
    "TensorInfo",
    "SafetensorsHeader",
    "LazyTensor",
    "DTYPE_TO_NUMPY",
    "MAX_HEADER_BYTES",
    "SINGLE_FILE",
    "INDEX_FILE",
    "read_header",
    "load",
    "save",
    "save_lazy",
    "bf16_to_f32",
    "f32_to_bf16",
    "find_model_files",
    "read_dir_headers",
    "load_dir_tensors",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Largest JSON header accepted; real headers are a few hundred kilobytes.
MAX_HEADER_BYTES = 100 * 1024 * 1024

# Limits of the arrays NumPy can make (NPY_MAXDIMS was 32 before NumPy 2).
_MAX_NDIM = 64 if int(np.__version__.split(".")[0]) >= 2 else 32
_MAX_INTP = int(np.iinfo(np.intp).max)

#: File names used by Hugging Face ``save_pretrained``.
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

#: safetensors dtype name -> NumPy dtype of the returned array (little-endian).
#: BF16 maps to uint16: the raw bits, see :func:`bf16_to_f32`.
DTYPE_TO_NUMPY: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

# NumPy dtype kind+size -> safetensors dtype name, for writing. uint16 maps to
# U16 unless the caller asks for BF16 explicitly.
_NUMPY_TO_DTYPE: dict[str, str] = {
    "f8": "F64",
    "f4": "F32",
    "f2": "F16",
    "i8": "I64",
    "i4": "I32",
    "i2": "I16",
    "i1": "I8",
    "u8": "U64",
    "u4": "U32",
    "u2": "U16",
    "u1": "U8",
    "b1": "BOOL",
}


class SafetensorsError(ValueError):
    """A safetensors file (or sharded checkpoint) is malformed or inconsistent."""


@dataclass(frozen=True)
class TensorInfo:
    """One header entry. ``begin``/``end`` are byte offsets into the data buffer."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        return self.end - self.begin

    @property
    def numpy_dtype(self) -> np.dtype:
        """The NumPy dtype :func:`load` returns (uint16 for BF16)."""
        return DTYPE_TO_NUMPY[self.dtype]


@dataclass(frozen=True)
class SafetensorsHeader:
    """The validated header of one file.

    ``data_start`` is the absolute file offset of the data buffer (8 + N), so
    tensor ``t`` occupies bytes ``[data_start + t.begin, data_start + t.end)``.
    """

    tensors: dict[str, TensorInfo]
    data_start: int
    file_size: int
    metadata: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------- reading


def _fail(path: PathLike, msg: str, name: str | None = None) -> SafetensorsError:
    where = f"{os.fspath(path)}"
    if name is not None:
        where += f": tensor {name!r}"
    return SafetensorsError(f"{where}: {msg}")


def _is_int(x: Any) -> bool:
    # JSON true/false decode to bool, which is an int subclass: reject them.
    return isinstance(x, int) and not isinstance(x, bool)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _parse_json_object(path: PathLike, raw: bytes, what: str) -> dict[str, Any]:
    """Decodes strict UTF-8 JSON, rejecting duplicate keys and non-objects."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _fail(path, f"{what} is not valid UTF-8 ({e})") from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as e:
        raise _fail(path, f"{what} has the key {e.key!r} more than once (duplicate name)") from None
    except RecursionError:
        raise _fail(path, f"{what} is nested too deeply") from None
    except ValueError as e:
        raise _fail(path, f"{what} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise _fail(path, f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def _check_entry(path: PathLike, name: str, entry: Any, data_size: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise _fail(path, f"header entry must be an object, got {type(entry).__name__}", name)
    for key in ("dtype", "shape", "data_offsets"):
        if key not in entry:
            raise _fail(path, f"header entry lacks the field {key!r}", name)
    extra = set(entry) - {"dtype", "shape", "data_offsets"}
    if extra:
        raise _fail(path, f"header entry has unknown fields {sorted(extra)}", name)

    dtype = entry["dtype"]
    if not isinstance(dtype, str):
        raise _fail(path, f"dtype must be a string, got {dtype!r}", name)
    if dtype not in DTYPE_TO_NUMPY:
        raise _fail(path, f"unknown dtype {dtype!r} (supported: {', '.join(DTYPE_TO_NUMPY)})", name)

    shape = entry["shape"]
    if not isinstance(shape, list):
        raise _fail(path, f"shape must be a list of integers, got {shape!r}", name)
    if len(shape) > _MAX_NDIM:
        raise _fail(path, f"shape has {len(shape)} dimensions; NumPy holds at most {_MAX_NDIM}", name)
    for dim in shape:
        if not _is_int(dim) or dim < 0:
            raise _fail(path, f"shape must hold non-negative integers, got {shape!r}", name)
    # NumPy refuses a shape whose extent, counting empty dimensions as 1,
    # overflows its index type, even when the tensor holds no bytes.
    if math.prod(max(d, 1) for d in shape) * DTYPE_TO_NUMPY[dtype].itemsize > _MAX_INTP:
        raise _fail(path, f"shape {shape} is too large for a NumPy array", name)

    offsets = entry["data_offsets"]
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise _fail(path, f"data_offsets must be [begin, end] integers, got {offsets!r}", name)
    begin, end = offsets
    if begin < 0 or end < 0:
        raise _fail(path, f"data_offsets {offsets} are negative", name)
    if begin > end:
        raise _fail(path, f"data_offsets begin {begin} > end {end}", name)
    if end > data_size:
        raise _fail(
            path,
            f"data_offsets end {end} is beyond the data buffer ({data_size} bytes; "
            "the file is truncated or the offset is wrong)",
            name,
        )

    expected = math.prod(shape) * DTYPE_TO_NUMPY[dtype].itemsize
    if end - begin != expected:
        raise _fail(
            path,
            f"holds {end - begin} bytes but shape {shape} of {dtype} needs {expected}",
            name,
        )
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), begin=begin, end=end)


def read_header(path: PathLike) -> SafetensorsHeader:
    """Reads and validates the header of a safetensors file.

    Raises :class:`SafetensorsError` for any malformed or inconsistent
    header, and ``OSError`` if the file cannot be opened.
    """
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        if file_size < 8:
            raise _fail(path, f"file is {file_size} bytes, shorter than the 8-byte header length")
        n = int.from_bytes(f.read(8), "little")
        if n > MAX_HEADER_BYTES:
            raise _fail(path, f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
        if 8 + n > file_size:
            raise _fail(path, f"header length {n} runs past the end of the {file_size}-byte file")
        raw = f.read(n)
    if len(raw) != n:  # the file shrank under us
        raise _fail(path, "file changed while reading the header")

    obj = _parse_json_object(path, raw, "header")
    data_start = 8 + n
    data_size = file_size - data_start

    metadata: dict[str, str] = {}
    if "__metadata__" in obj:
        meta = obj.pop("__metadata__")
        if not isinstance(meta, dict):
            raise _fail(path, f"__metadata__ must be an object, got {type(meta).__name__}")
        for k, v in meta.items():
            if not isinstance(v, str):
                raise _fail(path, f"__metadata__[{k!r}] must be a string, got {v!r}")
        metadata = dict(meta)

    tensors: dict[str, TensorInfo] = {}
    for name, entry in obj.items():
        tensors[name] = _check_entry(path, name, entry, data_size)

    # No two tensors may share bytes. Empty tensors occupy nothing.
    spans = sorted((t.begin, t.end, t.name) for t in tensors.values() if t.end > t.begin)
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise _fail(path, f"bytes [{b1}, {e1}) overlap tensor {n0!r} at [{b0}, {e0})", n1)

    return SafetensorsHeader(
        tensors=tensors, data_start=data_start, file_size=file_size, metadata=metadata
    )


def load(path: PathLike, header: SafetensorsHeader | None = None, mmap_file: bool = True) -> dict[str, np.ndarray]:
    """Maps a safetensors file and returns its tensors as read-only arrays.

    The arrays are zero-copy views into one read-only memory map; they keep
    the map (and so the file) alive. BF16 tensors come back as ``uint16``
    bit patterns (see :func:`bf16_to_f32`). A view may be unaligned for its
    dtype if the file's offsets are; NumPy handles that transparently.
    ``header`` skips re-reading the header when the caller already has it.
    ``mmap_file=False`` reads the data into memory instead, so that later
    changes to the file cannot affect the arrays.

    A mapped file that is truncated or rewritten in place while its arrays
    are in use no longer backs them: reading a page past the file's new end
    would kill the process with SIGBUS. The core watches the map while it is
    alive and turns such a fault during a call into OSError (as it happens
    for the model's weights).
    """
    if header is None:
        header = read_header(path)
    out: dict[str, np.ndarray] = {}
    if header.file_size > header.data_start and not mmap_file:
        with open(path, "rb") as f:
            data = np.fromfile(f, dtype=np.uint8, count=header.file_size)
        if len(data) != header.file_size:
            raise _fail(path, "file changed size after its header was read")
        data = data[header.data_start :]
    elif header.file_size > header.data_start:
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if len(mm) != header.file_size:
            mm.close()
            raise _fail(path, "file changed size after its header was read")
        _watch(mm, path)
        # The views keep the map alive through their base (a memoryview of mm).
        data = np.frombuffer(mm, dtype=np.uint8)[header.data_start :]
    else:
        data = np.zeros(0, dtype=np.uint8)
    for name, t in header.tensors.items():
        arr = data[t.begin : t.end].view(t.numpy_dtype).reshape(t.shape)
        arr.flags.writeable = False
        out[name] = arr
    return out


def _watch(mm: mmap.mmap, path: PathLike) -> None:
    """Has the core watch a weights map for as long as it lives."""
    from . import _core  # the format module itself needs no extension

    address = np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data
    watch_id = _core.watch_mapping(address, len(mm), str(path))
    weakref.finalize(mm, _core.unwatch_mapping, watch_id)


def release_pages(arr: np.ndarray) -> None:
    """Drops the pages of a tensor returned by :func:`load` from this
    process's resident memory, for tensors the engine has copied (converted
    or quantized) and will not read again. The map stays valid: reading the
    tensor later faults the pages back in from the page cache. Without this,
    every page touched while converting counts in the RSS for as long as any
    tensor of the file is alive. Arrays not backed by a map are left alone.
    """
    root = arr
    while isinstance(root, np.ndarray) and root.base is not None:
        root = root.base
    if not (isinstance(root, memoryview) and isinstance(root.obj, mmap.mmap)) or arr.nbytes == 0:
        return
    mm = root.obj
    offset = arr.__array_interface__["data"][0] - np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data
    first = -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE  # only pages that lie wholly inside the tensor
    last = (offset + arr.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        mm.madvise(mmap.MADV_DONTNEED, first, last - first)


# --------------------------------------------------------------------- bf16


def bf16_to_f32(u16: np.ndarray) -> np.ndarray:
    """Widens bfloat16 bit patterns (``uint16``) to float32 exactly."""
    u16 = np.asarray(u16)
    if u16.dtype != np.uint16:
        raise TypeError(f"bf16_to_f32 expects a uint16 array of bf16 bits, got {u16.dtype}")
    return (u16.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(f32: np.ndarray) -> np.ndarray:
    """Rounds float32 values to bfloat16 bit patterns (``uint16``), same shape.

    Round-to-nearest-even; values beyond the bf16 range round to infinity as
    in IEEE arithmetic; NaNs stay NaN (the quiet bit is set so that a NaN
    whose payload sits in the dropped low bits does not become infinity).
    Works in chunks, so converting a large tensor needs little extra memory.
    """
    x = np.asarray(f32, dtype=np.float32)
    flat = _c_contiguous(x).reshape(-1)
    out = np.empty(flat.shape, dtype=np.uint16)
    step = 1 << 22
    for i in range(0, flat.size, step):
        out[i : i + step] = _f32_to_bf16_chunk(flat[i : i + step])
    return out.reshape(x.shape)


def _f32_to_bf16_chunk(x: np.ndarray) -> np.ndarray:
    bits = x.view(np.uint32)
    is_nan = np.isnan(x)
    # For non-NaN inputs, bits + 0x7FFF + lsb never exceeds 0xFF80_7FFF: no overflow.
    safe = np.where(is_nan, np.uint32(0), bits)
    lsb = (safe >> np.uint32(16)) & np.uint32(1)
    rounded = (safe + np.uint32(0x7FFF) + lsb) >> np.uint32(16)
    nan_bits = (bits >> np.uint32(16)) | np.uint32(0x0040)
    return np.where(is_nan, nan_bits, rounded).astype(np.uint16)


# --------------------------------------------------------------------- writing


@dataclass(frozen=True)
class LazyTensor:
    """A tensor to be written by :func:`save_lazy`, produced on demand.

    ``make()`` is called once, when the tensor's turn to be written comes,
    and must return an array of exactly ``shape`` whose dtype is the
    NumPy dtype of ``dtype`` (uint16 bits for BF16). This lets a writer
    generate or convert a large checkpoint holding one tensor in memory.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    make: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        """Bytes the tensor takes in the file."""
        return math.prod(self.shape) * DTYPE_TO_NUMPY[self.dtype].itemsize


def _st_dtype_of(name: str, arr: np.ndarray, requested: str | None) -> str:
    natural = _NUMPY_TO_DTYPE.get(f"{arr.dtype.kind}{arr.dtype.itemsize}")
    if requested is None:
        if natural is None:
            raise SafetensorsError(f"tensor {name!r}: NumPy dtype {arr.dtype} has no safetensors equivalent")
        return natural
    if requested not in DTYPE_TO_NUMPY:
        raise SafetensorsError(f"tensor {name!r}: unknown safetensors dtype {requested!r}")
    if requested == "BF16" and arr.dtype == np.uint16:
        return "BF16"
    if requested in ("F32", "F16", "F64", "BF16") and arr.dtype.kind == "f":
        return requested  # float -> float conversion on write
    if natural != requested:
        raise SafetensorsError(f"tensor {name!r}: cannot store a {arr.dtype} array as {requested}")
    return requested


def _as_stored(arr: np.ndarray, dtype: str) -> np.ndarray:
    """Converts ``arr`` to the little-endian in-file representation of ``dtype``."""
    if dtype == "BF16" and arr.dtype != np.uint16:
        return f32_to_bf16(arr.astype(np.float32, copy=False))
    return _c_contiguous(np.asarray(arr, dtype=DTYPE_TO_NUMPY[dtype]))


def _c_contiguous(a: np.ndarray) -> np.ndarray:
    """``a`` itself or a C-ordered copy (unlike np.ascontiguousarray, keeps 0-d arrays 0-d)."""
    return a if a.flags.c_contiguous else a.copy(order="C")


def save(
    tensors: Mapping[str, np.ndarray],
    path: PathLike,
    dtypes: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Writes arrays to a safetensors file, atomically.

    Each array is stored with the dtype matching its NumPy dtype (float32 ->
    F32, float16 -> F16, ...). ``dtypes`` overrides that per tensor name:
    ``"BF16"`` stores a uint16 array as raw bf16 bits or rounds a float array
    to bf16; ``"F16"``/``"F32"`` convert float arrays. Tensors are written
    one at a time, each converted just before it is written.
    """
    dtypes = dict(dtypes or {})
    unknown = set(dtypes) - set(tensors)
    if unknown:
        raise SafetensorsError(f"dtypes names tensors that are not being saved: {sorted(unknown)}")
    entries = []
    for name, value in tensors.items():
        arr = np.asarray(value)
        st = _st_dtype_of(name, arr, dtypes.get(name))
        entries.append(LazyTensor(name, st, tuple(arr.shape), lambda a=arr, d=st: _as_stored(a, d)))
    save_lazy(entries, path, metadata=metadata)


def _build_header(entries: list[LazyTensor], metadata: Mapping[str, str] | None) -> bytes:
    header: dict[str, Any] = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise SafetensorsError(f"metadata must map str to str, got {k!r}: {v!r}")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for e in entries:
        if not isinstance(e.name, str) or e.name == "__metadata__":
            raise SafetensorsError(f"invalid tensor name {e.name!r}")
        if e.name in header:
            raise SafetensorsError(f"tensor {e.name!r} appears twice")
        if e.dtype not in DTYPE_TO_NUMPY:
            raise SafetensorsError(f"tensor {e.name!r}: unknown dtype {e.dtype!r}")
        header[e.name] = {
            "dtype": e.dtype,
            "shape": [int(d) for d in e.shape],
            "data_offsets": [offset, offset + e.nbytes],
        }
        offset += e.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad with spaces so that the data buffer starts 8-byte aligned.
    raw += b" " * (-(8 + len(raw)) % 8)
    return raw


def save_lazy(
    entries: Iterable[LazyTensor],
    path: PathLike,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Writes lazily produced tensors to a safetensors file, atomically.

    Data is laid out contiguously in the given order with no gaps (as the
    reference implementation requires); to keep every tensor aligned to its
    item size, entries are written in order of decreasing item size, ties
    keeping their given order. The file appears at ``path`` only once
    complete (temporary file in the same directory, then ``os.replace``).
    """
    entries = list(entries)
    for e in entries:
        if e.dtype not in DTYPE_TO_NUMPY:
            raise SafetensorsError(f"tensor {e.name!r}: unknown dtype {e.dtype!r}")
    entries.sort(key=lambda e: -DTYPE_TO_NUMPY[e.dtype].itemsize)
    raw = _build_header(entries, metadata)
    with atomic_open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for e in entries:
            arr = np.asarray(e.make())
            want = DTYPE_TO_NUMPY[e.dtype]
            if arr.dtype.kind != want.kind or arr.dtype.itemsize != want.itemsize:
                raise SafetensorsError(
                    f"tensor {e.name!r}: producer returned {arr.dtype}, expected {want} for {e.dtype}"
                )
            if tuple(arr.shape) != tuple(e.shape):
                raise SafetensorsError(
                    f"tensor {e.name!r}: producer returned shape {arr.shape}, expected {e.shape}"
                )
            arr = _c_contiguous(arr.astype(want, copy=False))
            if arr.size:
                f.write(memoryview(arr.reshape(-1)).cast("B"))
            del arr


# --------------------------------------------------------------------- directories


def find_model_files(directory: PathLike) -> tuple[list[Path], dict[str, str] | None]:
    """Finds the safetensors file(s) of a Hugging Face model directory.

    Returns ``(files, weight_map)``: ``[dir/model.safetensors]`` and ``None``
    for a single-file checkpoint, or the shard paths (sorted, unique) and the
    index's ``{tensor name: shard file name}`` map for a sharded one. A
    single file wins when both exist.
    """
    d = Path(directory)
    if not d.is_dir():
        raise SafetensorsError(f"{d}: not a directory")
    single = d / SINGLE_FILE
    if single.is_file():
        return [single], None
    index = d / INDEX_FILE
    if not index.is_file():
        raise SafetensorsError(f"{d}: contains neither {SINGLE_FILE} nor {INDEX_FILE}")
    obj = _parse_json_object(index, index.read_bytes(), "index")
    weight_map = obj.get("weight_map")
    if not isinstance(weight_map, dict):
        raise _fail(index, "lacks a 'weight_map' object")
    shards: dict[str, Path] = {}
    for name, fname in weight_map.items():
        if not isinstance(fname, str) or not fname:
            raise _fail(index, f"weight_map entry must be a file name, got {fname!r}", name)
        if fname in shards:
            continue
        # Shards must be plain files inside the directory: no paths, no escapes.
        if os.path.basename(fname) != fname or fname in (".", "..") or "\\" in fname:
            raise _fail(index, f"shard name {fname!r} must be a plain file name in {d}", name)
        shard = d / fname
        if not shard.is_file():
            raise _fail(index, f"shard {fname!r} is missing", name)
        shards[fname] = shard
    if not shards:
        raise _fail(index, "weight_map is empty")
    return [shards[k] for k in sorted(shards)], dict(weight_map)


def read_dir_headers(directory: PathLike) -> dict[str, tuple[Path, TensorInfo, SafetensorsHeader]]:
    """Validates a model directory's checkpoint without loading data.

    Returns ``{tensor name: (file, info, that file's header)}``. For sharded
    checkpoints, checks that every tensor of the index is in the shard it is
    listed in, that no tensor appears in two shards, and that no shard holds
    a tensor the index does not list.
    """
    files, weight_map = find_model_files(directory)
    out: dict[str, tuple[Path, TensorInfo, SafetensorsHeader]] = {}
    for file in files:
        header = read_header(file)
        for name, info in header.tensors.items():
            if name in out:
                raise _fail(file, f"also present in shard {out[name][0].name!r} (tensor in two shards)", name)
            if weight_map is not None and weight_map.get(name) != file.name:
                listed = weight_map.get(name)
                where = f"listed in {listed!r}" if listed else "not listed in the index"
                raise _fail(file, f"found in shard {file.name!r} but {where}", name)
            out[name] = (file, info, header)
    if weight_map is not None:
        for name, fname in weight_map.items():
            if name not in out:
                raise _fail(Path(directory) / fname, "listed in the index but absent from its shard", name)
    return out


def load_dir_tensors(directory: PathLike) -> dict[str, np.ndarray]:
    """Loads all tensors of a model directory (single file or sharded).

    Arrays are read-only memory-mapped views as in :func:`load`.
    """
    entries = read_dir_headers(directory)
    by_file: dict[Path, SafetensorsHeader] = {}
    for file, _info, header in entries.values():
        by_file[file] = header
    out: dict[str, np.ndarray] = {}
    for file, header in by_file.items():
        out.update(load(file, header=header))
    return {name: out[name] for name in entries}
