"""The `.npz` file: one finished trajectory, its arrays and its metadata (JSON) in one zip, written atomically.

Members: `timesteps`, `sigma`, `clip_fraction`, `stages`, one [N, B, C, H, W] array per recorded field,
and `__ppddpm_meta__` (the metadata as a JSON string, with `format`, `format_version` and `fields`).
Files written by ppddpm 0.1 (no `stages`, no scheduler name) load too. Reading checks each member's
header against the bytes it holds before numpy allocates anything: a header announcing 10¹² frames is
a corrupt file, not a 233 TiB allocation.
"""
from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np

from ppddpm._io import atomic_path
from ppddpm.errors import regular_file
from ppddpm.storage.format import FORMAT, FORMAT_VERSION, NUMBERS, TrajectoryError, check_shapes, field_names
from ppddpm.storage.meta import check_meta

META_KEY = "__ppddpm_meta__"
ZIP_MAGIC = b"PK\x03\x04"


def write_npz(path: Path, numbers: dict, fields: dict, meta: dict):
    """`numbers` (timesteps, sigma, clip_fraction, stages) and `fields` ({name: [N, …]}) with `meta`
    into `path` atomically: no half-written file is ever left under `path`."""
    arrays = dict(numbers)
    arrays.update({name: np.asarray(frames) for name, frames in fields.items()})
    meta = dict(meta, format=FORMAT, format_version=FORMAT_VERSION, fields=list(fields))
    arrays[META_KEY] = np.array(json.dumps(meta, default=str))
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def read_npz(path) -> dict:
    """A `.npz` written by `write_npz`: the Trajectory's arguments (timesteps, fields, sigma,
    clip_fraction, meta, stages), or one TrajectoryError saying what is wrong with the file."""
    path = regular_file(path, "trajectory")
    with open(path, "rb") as fh:
        if fh.read(4) != ZIP_MAGIC:
            raise TrajectoryError(f"{path} is not a ppddpm trajectory: not a .npz (zip) archive; give a file "
                                  f"written by Trajectory.save or `ppddpm sample`, or a streamed folder")
    meta, data = _read_members(path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TrajectoryError(f"{path} is not a ppddpm trajectory (its metadata is not a ppddpm one: "
                              f"format={meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r})")
    check_meta(path, meta)
    names = field_names(path, meta)
    missing = [k for k in list(NUMBERS) + names if k not in data]
    if missing:
        raise TrajectoryError(f"{path} is truncated: missing arrays {missing}")
    fields = {k: data[k] for k in names}
    check_shapes(path, data["timesteps"], [data["sigma"], data["clip_fraction"]], fields)
    stages = data.get("stages")
    if stages is not None and (stages.dtype.kind != "U" or stages.shape != data["timesteps"].shape):
        raise TrajectoryError(f"{path}: stages is {stages.dtype} of shape {stages.shape}, not one name per step")
    return {"timesteps": data["timesteps"], "fields": fields, "sigma": data["sigma"],
            "clip_fraction": data["clip_fraction"], "meta": meta, "stages": stages}


def _read_members(path: Path):
    """(metadata, {member: array}) of the zip, each member's header checked before it is read."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if META_KEY not in npz.files:
                raise TrajectoryError(f"{path} is not a ppddpm trajectory (no {META_KEY} entry; "
                                      f"write one with Trajectory.save or `ppddpm sample`)")
            _check_members(path, npz)
            meta = json.loads(str(npz[META_KEY]))
            return meta, {k: npz[k] for k in npz.files if k != META_KEY}
    except TrajectoryError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, MemoryError) as exc:
        raise TrajectoryError(f"{path} is truncated or corrupt, not a readable trajectory "
                              f"({type(exc).__name__}: {exc})") from None


def _check_members(path, npz):
    """Each array's header against the bytes its zip member holds, before numpy allocates it."""
    for name in npz.files:
        info = npz.zip.getinfo(name + ".npy")
        with npz.zip.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = header(fh)
        if math.prod(shape) * np.dtype(dtype).itemsize > info.file_size:
            raise TrajectoryError(f"{path}: its array {name!r} announces {shape} of {np.dtype(dtype).str}, more "
                                  f"than the {info.file_size} bytes it holds; the file is corrupt")
