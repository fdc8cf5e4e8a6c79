"""The `.npz` file: one finished trajectory, its arrays and its metadata (JSON) in one zip, written atomically.

Members: one array per per-step column (`timesteps`, `stages`, `noise_std`, …: [N], or [N, B] for a column
kept per sample), one [N, B, C, H, W] array per recorded field, and `__ppddpm_meta__` (the metadata as a
JSON string, with `format`, `format_version`, `fields` and the columns' names: `step_columns`, and
`sample_columns` for those kept per sample). Files of ppddpm 0.1–0.4 (the columns `timesteps`, `sigma`,
`clip_fraction`, and `stages` from 0.2; no column list) load too (`ppddpm.storage.legacy`).

Reading a file someone handed you decompresses no array data before the file's structure is known
to be a trajectory's and to fit in memory, in this order:
1. the zip's directory: every `.npy` member stored or deflated (what `np.savez` and
   `np.savez_compressed` write) and not encrypted; a stored member's declared size equal to its bytes
   in the file, a deflated one's at most DEFLATE_MAX_RATIO times them (more is a lie: DEFLATE cannot
   expand further);
2. every member's `.npy` header (a few hundred bytes decompressed each): no object dtype, no
   negative dimension, and exactly the size its member declares;
3. the declared sizes together within the memory available now (`available_memory`);
4. the metadata (JSON), then the arrays' dtypes and shapes, read from the headers alone: one
   trajectory (N steps, frames of one shape).
Only then are the arrays read, each at most its declared size (zipfile stops there, and checks the
CRC). So a header announcing 10¹² frames, or a deflate bomb (1 MB declaring 1 GB of frames that do
not fit the file's own shape), is refused before it is decompressed, in one TrajectoryError.
"""
from __future__ import annotations

import contextlib
import json
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppddpm._io import atomic_path
from ppddpm.errors import available_memory, parse_json, regular_file
from ppddpm.storage.format import (FORMAT, FORMAT_VERSION, LEGACY_COLUMNS, TrajectoryError, check_shapes,
                                   column_names, field_names)
from ppddpm.storage.meta import check_meta

META_KEY = "__ppddpm_meta__"
ZIP_MAGIC = b"PK\x03\x04"
READ_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}    # np.savez, np.savez_compressed
DEFLATE_MAX_RATIO = 1032      # DEFLATE's largest expansion: a 258-byte match coded in ~2 bits (zlib's tech notes)
REFUSED_FLAGS = {0x1: "encrypted", 0x20: "compressed patched data", 0x40: "strongly encrypted"}   # zip flag bits


def write_npz(path: Path, columns: dict, fields: dict, meta: dict):
    """`columns` ({name: [N] or [N, B]}) and `fields` ({name: [N, …]}) with `meta` into `path` atomically:
    no half-written file is ever left under `path`."""
    arrays = {name: np.asarray(values) for name, values in columns.items()}
    arrays.update({name: np.asarray(frames) for name, frames in fields.items()})
    meta = dict(meta, format=FORMAT, format_version=FORMAT_VERSION, fields=list(fields),
                step_columns=[name for name, a in arrays.items() if name in columns and a.ndim == 1],
                sample_columns=[name for name, a in arrays.items() if name in columns and a.ndim == 2])
    arrays[META_KEY] = np.array(json.dumps(meta, default=str))
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def read_npz(path) -> dict:
    """A `.npz` written by `write_npz`: {"columns", "fields", "meta"} (a file of 0.1–0.4: its columns under
    their names of then), or one TrajectoryError saying what is wrong with the file. What is checked before
    any array is decompressed: the module docstring."""
    path = regular_file(path, "trajectory")
    with open(path, "rb") as fh:
        if fh.read(4) != ZIP_MAGIC:
            raise TrajectoryError(f"{path} is not a ppddpm trajectory: not a .npz (zip) archive; give a file "
                                  f"written by Trajectory.save or `ppddpm sample`, or a streamed folder")
    with _corrupt_in_one_line(path), zipfile.ZipFile(path) as archive:
        members = _read_members(path, archive)
        meta = _read_meta(path, archive, members)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise TrajectoryError(f"{path} is not a ppddpm trajectory (its metadata is not a ppddpm one: "
                                  f"format={meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r})")
        check_meta(path, meta)
        names, columns = field_names(path, meta), _column_names(path, meta, members)
        missing = [k for k in columns + names if k not in members]
        if missing:
            raise TrajectoryError(f"{path} is truncated: missing arrays {missing}")
        shells = {k: member.shell() for k, member in members.items()}           # the headers' dtypes and shapes
        check_shapes(path, {k: shells[k] for k in columns}, {k: shells[k] for k in names})
        data = {k: members[k].read(archive) for k in columns + names}
    return {"columns": {k: data[k] for k in columns}, "fields": {k: data[k] for k in names}, "meta": meta}


def _column_names(path, meta: dict, members) -> list:
    """The per-step columns the file holds, `timesteps` first: those its metadata lists; a file of 0.1–0.4,
    which lists none, holds `timesteps`, `sigma`, `clip_fraction` (and `stages` from 0.2)."""
    if "step_columns" in meta:
        names = column_names(path, meta, "step_columns") + column_names(path, meta, "sample_columns")
    else:
        names = list(LEGACY_COLUMNS) + (["stages"] if "stages" in members else [])
    return list(dict.fromkeys(["timesteps"] + names))


@contextlib.contextmanager
def _corrupt_in_one_line(path):
    """What zipfile and numpy raise on a broken zip or `.npy` (bad offsets, a bad CRC, a truncated
    stream, a header that does not parse) as one TrajectoryError."""
    try:
        yield
    except TrajectoryError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, struct.error, EOFError, OSError, ValueError,
            KeyError, MemoryError) as exc:
        raise TrajectoryError(f"{path} is truncated or corrupt, not a readable trajectory "
                              f"({type(exc).__name__}: {exc})") from None


@dataclass
class _Member:
    """One `.npy` member of the zip, known from the directory and its header: nothing else read yet."""
    info: zipfile.ZipInfo
    shape: tuple
    dtype: np.dtype

    def shell(self) -> np.ndarray:
        """An array of the member's dtype and shape holding one element (every stride 0): what the
        shape checks read, without the data."""
        return np.lib.stride_tricks.as_strided(np.zeros(1, self.dtype), self.shape, (0,) * len(self.shape),
                                               writeable=False)

    def read(self, archive: zipfile.ZipFile) -> np.ndarray:
        with archive.open(self.info) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)


def _read_members(path: Path, archive: zipfile.ZipFile) -> dict:
    """{name: _Member} of the zip's `.npy` members, each one's directory entry and header checked
    (module docstring, steps 1–3), having decompressed only the headers."""
    members = {}
    for info in archive.infolist():
        if info.filename.endswith(".npy"):
            _check_entry(path, info)
            members[info.filename[:-len(".npy")]] = _member(path, archive, info)
    if META_KEY not in members:
        raise TrajectoryError(f"{path} is not a ppddpm trajectory (no {META_KEY} entry; "
                              f"write one with Trajectory.save or `ppddpm sample`)")
    declared, free = sum(m.info.file_size for m in members.values()), available_memory()
    if free is not None and not declared <= free:
        raise TrajectoryError(f"{path} declares {declared / 2 ** 30:.1f} GB of arrays, more than the "
                              f"{free / 2 ** 30:.1f} GB of memory available; refused before decompressing it")
    return members


def _check_entry(path: Path, info: zipfile.ZipInfo):
    """A member's zip directory entry: a method and flags this reader takes, and a declared size its
    compressed bytes can hold."""
    flags = [name for bit, name in REFUSED_FLAGS.items() if info.flag_bits & bit]
    if flags:
        raise TrajectoryError(f"{path}: its member {info.filename!r} is {' and '.join(flags)}; ppddpm reads "
                              f"plain .npz files (np.savez, np.savez_compressed)")
    if info.compress_type not in READ_METHODS:
        raise TrajectoryError(f"{path}: its member {info.filename!r} is compressed with zip method "
                              f"{info.compress_type}; ppddpm reads stored or deflated members (np.savez, "
                              f"np.savez_compressed)")
    ceiling = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_MAX_RATIO)
    if info.file_size > ceiling or (info.compress_type == zipfile.ZIP_STORED and info.file_size != ceiling):
        raise TrajectoryError(f"{path}: its member {info.filename!r} declares {info.file_size} bytes from "
                              f"{info.compress_size} {READ_METHODS[info.compress_type]} ones, which cannot be; the "
                              f"file is corrupt")


def _member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
    """The member's `.npy` header, read (its first bytes decompressed) and checked against the size the
    zip declares for the member."""
    with archive.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = header(fh)
        offset = fh.tell()
    dtype, shape = np.dtype(dtype), tuple(shape)
    name = info.filename[:-len(".npy")]
    if dtype.hasobject:
        raise TrajectoryError(f"{path}: its array {name!r} holds Python objects ({dtype.str}: a pickle); ppddpm "
                              f"reads numbers and text only")
    if any(d < 0 for d in shape) or offset + math.prod(shape) * dtype.itemsize != info.file_size:
        raise TrajectoryError(f"{path}: its array {name!r} announces {shape} of {dtype.str}, which is not the "
                              f"{info.file_size - offset} bytes its member holds; the file is corrupt")
    return _Member(info, shape, dtype)


def _read_meta(path: Path, archive: zipfile.ZipFile, members: dict):
    """The metadata member: one JSON string (a 0-d unicode array), parsed."""
    member = members[META_KEY]
    if member.dtype.kind != "U" or member.shape != ():
        raise TrajectoryError(f"{path}: its {META_KEY} is {member.dtype.str} of shape {member.shape}, not one "
                              f"JSON string")
    return parse_json(member.read(archive).item(), f"{path}'s metadata", TrajectoryError)
