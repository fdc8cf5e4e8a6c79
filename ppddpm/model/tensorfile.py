"""safetensors files, read by ppddpm itself before any library opens them.

The format (github.com/huggingface/safetensors, "Format"): 8 bytes holding N, a little-endian
unsigned 64-bit integer; N bytes of UTF-8 JSON, an object that maps each tensor's name to
`{"dtype", "shape", "data_offsets": [begin, end]}` (byte offsets into the data that follows the
header), plus an optional `"__metadata__"` object of strings; then the data. `read_header` makes
every check the format's own reader makes, and a few stricter ones, before paddle, ppdiffusers,
paddlenlp's own parser or the safetensors library see the file: the header length within the file
and at most 100 MB, the header a JSON object starting with `{` with no key twice, every dtype known,
every shape a list of non-negative integers, shape × item size = end − begin, and the tensors tiling
the data area exactly (none overlapping, no gap, none past the end). A crafted file is one line
naming what is wrong, never a traceback from a loader or an allocation the file's size does not back.

`check_finite` then reads the float tensors (a memory map, a chunk at a time) and names the first
one holding NaN or ±inf. `check_matches` compares a header with the tensors a model has.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from ppddpm.errors import BadValue, regular_file

MAX_HEADER = 100_000_000         # bytes; the safetensors library's own limit
# dtype → (numpy dtype of its bytes, item size); None: no numpy dtype (8-bit floats, not weights here)
DTYPES = {"BOOL": ("?", 1), "U8": ("u1", 1), "I8": ("i1", 1), "F8_E5M2": (None, 1), "F8_E4M3": (None, 1),
          "I16": ("<i2", 2), "U16": ("<u2", 2), "F16": ("<f2", 2), "BF16": ("<u2", 2), "I32": ("<i4", 4),
          "U32": ("<u4", 4), "F32": ("<f4", 4), "I64": ("<i8", 8), "U64": ("<u8", 8), "F64": ("<f8", 8)}
FLOATS = ("F16", "BF16", "F32", "F64")     # what a float weight, moment or EMA may be stored as
INTEGERS = ("U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64")
CHUNK = 1 << 22                  # elements per finiteness test: bounds the temporary boolean array


@dataclass(frozen=True)
class Tensor:
    """One header entry: dtype, shape and its bytes [begin, end) in the data area."""
    name: str
    dtype: str
    shape: Tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class TensorFile:
    """A checked safetensors header: the file, where its data area starts, its metadata and tensors."""
    path: Path
    data_start: int
    metadata: Dict[str, str]
    tensors: Dict[str, Tensor]


def _no_repeats(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"the key {next(k for k in keys if keys.count(k) > 1)!r} appears twice")
    return dict(pairs)


def read_header(path, what: str = "safetensors file") -> TensorFile:
    """The checked header of the safetensors file at `path` (module docstring), or BadValue in one
    line: "PATH is not a readable WHAT: <what is wrong>"."""
    path = regular_file(path, what)
    size = path.stat().st_size

    def bad(reason):
        return BadValue(f"{path} is not a readable {what}: {reason}")

    if size < 8:
        raise bad(f"it is {size} bytes, shorter than the 8-byte header length a safetensors file starts with")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8 or n > MAX_HEADER:
            raise bad(f"its header length {n} exceeds the file ({size} bytes) or {MAX_HEADER} bytes")
        raw = f.read(n)
    if len(raw) != n or not raw.startswith(b"{"):
        raise bad("its header does not start with a JSON object")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_repeats)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"its header is not JSON ({type(exc).__name__}: {str(exc)[:80]})") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("its __metadata__ is not an object of strings")
    tensors = {name: _entry(name, spec, bad) for name, spec in header.items()}
    _check_tiling(tensors.values(), size - 8 - n, bad)
    return TensorFile(path, 8 + n, metadata, tensors)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(name: str, spec, bad) -> Tensor:
    """One tensor's entry, checked on its own: known dtype, shape, offsets, and bytes = shape × item size."""
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        raise bad(f"tensor {name!r} is not an object of exactly dtype, shape and data_offsets")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise bad(f"tensor {name!r} has dtype {dtype!r}; safetensors' dtypes are {', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise bad(f"tensor {name!r} has shape {shape!r}; a shape is a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
        raise bad(f"tensor {name!r} has data_offsets {offsets!r}; they are two integers [begin, end]")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise bad(f"tensor {name!r} has data_offsets [{begin}, {end}]; they must satisfy 0 ≤ begin ≤ end")
    nbytes = int(np.prod(shape, dtype=object)) * DTYPES[dtype][1]
    if nbytes != end - begin:
        raise bad(f"tensor {name!r} of shape {shape} and dtype {dtype} is {nbytes} bytes, but its data_offsets "
                  f"[{begin}, {end}] give it {end - begin}")
    return Tensor(name, dtype, tuple(shape), begin, end)


def _check_tiling(tensors, data_size: int, bad) -> None:
    """The tensors' byte ranges cover the data area exactly, in order: no overlap, no gap, nothing past its end."""
    start, previous = 0, None
    for t in sorted(tensors, key=lambda t: (t.begin, t.end)):
        if t.end > data_size:
            raise bad(f"tensor {t.name!r} ends at byte {t.end} of the data, past its end ({data_size} bytes)")
        if t.begin < start:
            raise bad(f"tensor {t.name!r} overlaps tensor {previous!r} (bytes {t.begin}–{start} of the data)")
        if t.begin > start:
            raise bad(f"the data has a gap before tensor {t.name!r} (bytes {start}–{t.begin} belong to no tensor)")
        start, previous = t.end, t.name
    if start != data_size:
        raise bad(f"its last {data_size - start} bytes belong to no tensor")


def _nonfinite(values: np.ndarray, dtype: str) -> bool:
    """Whether a float tensor's values (numpy's view of its bytes) hold a NaN or ±inf."""
    for i in range(0, values.size, CHUNK):
        chunk = values[i:i + CHUNK]
        if dtype == "BF16":        # bfloat16: the high half of a float32; all-ones exponent = inf or NaN
            if np.any((chunk & 0x7F80) == 0x7F80):
                return True
        elif not np.isfinite(chunk).all():
            return True
    return False


def check_finite(tf: TensorFile, names=None, what: Optional[str] = None) -> None:
    """BadValue naming the first float tensor (of `names`, default all) that holds NaN or ±inf."""
    chosen = [tf.tensors[n] for n in (tf.tensors if names is None else names) if tf.tensors[n].dtype in FLOATS]
    chosen = [t for t in chosen if t.end > t.begin]
    if not chosen:
        return
    data = np.memmap(tf.path, dtype=np.uint8, mode="r", offset=tf.data_start)
    try:
        for t in sorted(chosen, key=lambda t: t.begin):
            if _nonfinite(data[t.begin:t.end].view(DTYPES[t.dtype][0]), t.dtype):
                raise BadValue(f"{what or tf.path}: tensor {t.name!r} holds NaN or infinite values; "
                               f"the file is damaged, or its weights diverged")
    finally:
        del data


def kind_of_dtype(dtype: str) -> str:
    """"float", "int" or "bool" for a safetensors dtype or a paddle / numpy dtype's name."""
    name = str(dtype).replace("paddle.", "").lower()
    if name in ("bool", "?"):
        return "bool"
    if name.startswith(("f", "bf")):
        return "float"
    return "int" if name.startswith(("i", "u")) else name


def check_matches(tf: TensorFile, expected: Mapping[str, Tuple[tuple, str]], what: str, model: str) -> None:
    """The header holds exactly the tensors `expected` lists (name → (shape, dtype of the model's
    tensor)), with the same shapes, and each float tensor stored as a float (an integer dtype of the
    same byte size would load silently as other numbers): BadValue in one line otherwise. `model`
    says where the expectation comes from ("the UNet2DModel unet/config.json describes")."""
    missing = [k for k in expected if k not in tf.tensors]
    extra = [k for k in tf.tensors if k not in expected]
    if missing:
        raise BadValue(f"{what} lacks {len(missing)} of the {len(expected)} tensors of {model} "
                       f"(e.g. {missing[0]!r}); it holds another model's weights")
    if extra:
        raise BadValue(f"{what} holds {len(extra)} tensors {model} does not have (e.g. {extra[0]!r}); "
                       f"it holds another model's weights")
    for name, (shape, dtype) in expected.items():
        t = tf.tensors[name]
        if tuple(t.shape) != tuple(shape):
            raise BadValue(f"{what}: tensor {name!r} has shape {list(t.shape)}, {model} has "
                           f"{list(shape)} there; the weights and the config disagree")
        wanted = kind_of_dtype(dtype)
        if wanted == "float" and t.dtype not in FLOATS or wanted != "float" and kind_of_dtype(t.dtype) != wanted:
            accepted = ", ".join(FLOATS) if wanted == "float" else f"an {wanted} dtype"
            raise BadValue(f"{what}: tensor {name!r} is stored as {t.dtype}, but it is a {wanted} tensor of "
                           f"{model} ({accepted})")
