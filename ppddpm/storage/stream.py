"""The streamed folder: a trajectory written step by step as a run goes, and read back complete or cut short.

    run/
      meta.json          the metadata, `fields`, `step_columns`, `sample_columns`, `complete` and
                         `steps_on_disk` (replaced atomically)
      steps.npy          one row per recorded step: its columns in the order `step_columns` lists them
                         (t, call, stage code, …; ppddpm 0.1–0.4: t, σ_t, clipped share[, stage code])
      clip_fraction.npy  [N, B] per column kept per sample (`sample_columns`)
      prev_sample.npy    [N, B, C, H, W] per recorded field, N the planned count (the header says it)
      …

Crash consistency: the folder appears (a rename) with meta.json in it, counting 0 steps; each
`.npy` is created with its header written out; each step is written to every file as it is
appended; a chunk of steps is then fsync'd and only then counted in meta.json (`steps_on_disk`),
which is replaced atomically. So a run killed at any moment after its folder exists — SIGKILL
included — leaves a folder whose first `steps_on_disk` steps load (0 steps, before the first chunk
reached the disk: a `.npy` not yet made, or made but empty, then holds no frame), and after a
failed write (a full disk) meta.json counts the steps written whole. Files are created with
O_EXCL | O_NOFOLLOW: nothing is written through a link.

Hostile input: every `.npy` header is checked before anything is mapped — a numeric dtype (an object
`|O` header mapped as pointers would crash the reader), C order, the expected dimensions, and a
regular file (a FIFO would block the read) — and no more frames are mapped than the file holds.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np

from ppddpm._io import atomic_path, fresh_folder
from ppddpm.errors import parse_json, regular_file
from ppddpm.storage.format import (DECODED_SUFFIX, FORMAT, FORMAT_VERSION, LEGACY_COLUMNS, TrajectoryError,
                                   check_shapes, column_names, field_names, stage_code, stage_names)
from ppddpm.storage.meta import check_meta

META = "meta.json"
STEPS = "steps.npy"


# --------------------------------------------------------------------------- writing

class NpyFrames:
    """Frames of one field streamed to a `.npy` file whose header announces `n` of them.

    The file is created — never through a link (O_EXCL | O_NOFOLLOW) — with its header written out
    at once: from then on a SIGKILL leaves a file whose header reads, holding 0 or more frames."""

    def __init__(self, path: Path, n: int, shape: tuple, dtype: str):
        self.path, self.shape, self.dtype, self.count = path, tuple(shape), np.dtype(dtype), 0
        self.file = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666), "wb")
        np.lib.format.write_array_header_1_0(
            self.file, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                        "shape": (n,) + self.shape})
        self.file.flush()
        self.offset = self.file.tell()

    def append(self, frame):
        self.file.write(np.ascontiguousarray(frame, dtype=self.dtype).tobytes())
        self.count += 1

    def flush(self, sync: bool = True):
        """Everything appended so far written to the file (a SIGKILL no longer loses it) and, with
        `sync`, fsync'd (nor does a power cut)."""
        if not self.file.closed:
            self.file.flush()
            if sync:
                os.fsync(self.file.fileno())

    def close(self):
        if not self.file.closed:
            try:
                self.file.flush()
            finally:
                self.file.close()

    def array(self) -> np.ndarray:
        """The frames appended so far, mapped read-only from the file."""
        if not self.file.closed:
            self.file.flush()
        if self.count == 0:
            return np.empty((0,) + self.shape, self.dtype)
        return np.memmap(self.path, self.dtype, "r", offset=self.offset, shape=(self.count,) + self.shape)


class StreamWriter:
    """A streamed folder being written: `open_field` per field, `append` per step, `commit` per chunk.

    `meta` is the trajectory's metadata dict, read each time meta.json is written (so what the
    recorder adds to it as the run goes lands in the file); `fields` are the names meta.json lists;
    `columns` the per-step columns of steps.npy, in order, and `sample_columns` those kept per sample
    (each a file of its own, opened with `open_field` like a field's).
    """

    def __init__(self, path, rows: int, meta: dict, fields: tuple, columns: tuple, sample_columns: tuple = ()):
        self.path, self.rows, self.meta, self.fields = Path(path), rows, meta, tuple(fields)
        self.columns, self.sample_columns = tuple(columns), tuple(sample_columns)
        with fresh_folder(self.path) as staging:        # the folder appears with its meta.json (0 steps) in it
            _write_synced(staging / META, self._meta_text(complete=False, on_disk=0))
        self.steps_on_disk = 0
        self.steps = NpyFrames(self.path / STEPS, rows, (len(self.columns),), "float64")
        self.files = [self.steps]

    def open_field(self, name: str, shape: tuple, dtype: str) -> NpyFrames:
        frames = NpyFrames(self.path / f"{name}.npy", self.rows, shape, dtype)
        self.files.append(frames)
        return frames

    def append_step(self, numbers: dict):
        """The step's row of `numbers` (by column name; `stages` a stage's name), after its frames: then
        every file is flushed (written whole, not yet fsync'd)."""
        row = [stage_code(numbers[name]) if name == "stages" else numbers[name] for name in self.columns]
        self.steps.append(np.array(row, np.float64))
        for frames in self.files:
            frames.flush(sync=False)

    def commit(self, count: int):
        """Every file fsync'd, then meta.json counts `count` steps as on disk."""
        for frames in self.files:
            frames.flush()
        self.write_meta(complete=False, on_disk=count)

    def write_meta(self, complete: bool, on_disk: int):
        """meta.json, replaced atomically (a reader sees the old file or the new, whole)."""
        with atomic_path(self.path / META) as tmp:
            _write_synced(tmp, self._meta_text(complete, on_disk))
        self.steps_on_disk = on_disk

    def _meta_text(self, complete: bool, on_disk: int) -> str:
        return json.dumps(dict(self.meta, format=FORMAT, format_version=FORMAT_VERSION, fields=list(self.fields),
                               step_columns=list(self.columns), sample_columns=list(self.sample_columns),
                               complete=complete, steps_on_disk=on_disk), default=str, indent=1)

    def close(self):
        """Every file closed; a full disk failing a final flush loses nothing counted before."""
        for frames in self.files:
            try:
                frames.close()
            except OSError:
                pass


def _write_synced(path: Path, text: str):
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------- reading

def read_frames(path: Path, ndim: int, columns: Optional[tuple] = None,
                unwritten: bool = False) -> Optional[np.ndarray]:
    """The complete frames of a streamed `.npy` (its header announces the planned count), the header
    checked before anything is mapped (module docstring); `columns`: the allowed sizes of the last
    dimension. A file that ends before its header does is None if it may be `unwritten` (created by
    a writer killed before it wrote anything: the metadata counts no step), else a TrajectoryError."""
    path = regular_file(path, "streamed array")
    header = _header(path)
    if header is None:
        if unwritten:
            return None
        raise TrajectoryError(f"{path} ends before its .npy header does; the stream is truncated or corrupt")
    shape, fortran, dtype, offset = header
    if dtype.kind != "f" or dtype.hasobject or fortran or len(shape) != ndim or \
            (columns is not None and shape[-1] not in columns):
        raise TrajectoryError(f"{path} is not a ppddpm stream array: {dtype.str} of shape {shape}"
                              f"{' (Fortran order)' if fortran else ''}; expected floats with {ndim} dimensions")
    frame = math.prod(shape[1:]) * dtype.itemsize                        # Python ints: no overflow
    n = min(shape[0], (path.stat().st_size - offset) // frame) if frame else 0
    if n == 0:
        return np.empty((0,) + tuple(shape[1:]), dtype)
    return np.memmap(path, dtype, "r", offset=offset, shape=(n,) + tuple(shape[1:]))


def _header(path: Path):
    """(shape, Fortran order, dtype, offset of the data) of a `.npy`; None if the file ends before the
    header its first bytes announce (the magic string, the version, the header's length)."""
    with open(path, "rb") as fh:
        lead = fh.read(12)
        size = os.fstat(fh.fileno()).st_size
        length = 10 + int.from_bytes(lead[8:10], "little") if lead[6:7] == b"\x01" else \
            12 + int.from_bytes(lead[8:12], "little")
        if len(lead) < 12 or size < length:
            return None
        fh.seek(0)
        version = np.lib.format.read_magic(fh)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = header(fh)
        return shape, fortran, np.dtype(dtype), fh.tell()


def _read_field(path: Path, name: str, unwritten: bool, ndim: int = 5) -> Optional[np.ndarray]:
    """A field's streamed frames (or a column's kept per sample: `ndim` 2); None where the run stopped
    before its first recorded step reached the disk (`unwritten`: the field's file is made with that
    step, and may be absent or empty)."""
    file = path / f"{name}.npy"
    return None if unwritten and not os.path.lexists(file) else read_frames(file, ndim, unwritten=unwritten)


def _step_columns(path: Path, meta: dict) -> tuple:
    """(the columns of steps.npy in order, those kept per sample in files of their own); a folder of
    0.1–0.4 lists none: its steps.npy holds t, σ_t, clipped share (0.1) and the stage code."""
    if "step_columns" in meta:
        return tuple(column_names(path, meta, "step_columns")), tuple(column_names(path, meta, "sample_columns"))
    return LEGACY_COLUMNS + ("stages",), ()


def _read_parts(path: Path):
    """(meta, steps rows, {column: [n, B]}, {field: frames}) of a folder, each file checked as it is read."""
    meta_file = path / META
    if not meta_file.exists():
        raise TrajectoryError(f"{path} is not a streamed ppddpm trajectory (no {META})")
    try:
        meta = parse_json(regular_file(meta_file, "metadata").read_bytes(), f"{meta_file}", TrajectoryError)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise TrajectoryError(f"{meta_file} is not a ppddpm trajectory's metadata (no format {FORMAT!r})")
        check_meta(meta_file, meta)
        unwritten = type(meta.get("steps_on_disk")) is int and meta["steps_on_disk"] == 0     # no step counted yet
        names, per_sample = _step_columns(path, meta)
        widths = (3, 4) if "step_columns" not in meta else (len(names),)      # 0.1 streams had no stage column
        steps = None if unwritten and not os.path.lexists(path / STEPS) else \
            read_frames(path / STEPS, 2, columns=widths, unwritten=unwritten)
        samples = {name: _read_field(path, name, unwritten, 2) for name in per_sample}
        fields = {name: _read_field(path, name, unwritten) for name in field_names(path, meta)}
    except TrajectoryError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise TrajectoryError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    if "timesteps" not in names:
        raise TrajectoryError(f"{path}: its steps.npy has no timesteps column (step_columns {list(names)})")
    steps = np.empty((0, len(names))) if steps is None else steps         # None: no steps.npy yet
    return meta, {name: steps[:, k] for k, name in enumerate(names[: steps.shape[1]])}, samples, fields


def read_stream(path) -> dict:
    """A folder written by `StreamWriter`, complete or cut short: {"columns", "fields", "meta"} of its
    first `steps_on_disk` steps (a folder of 0.1–0.4: its columns under their names of then)."""
    path = Path(path)
    meta, steps, samples, fields = _read_parts(path)
    written = {name: a for name, a in fields.items() if a is not None}
    kinds = {(name.endswith(DECODED_SUFFIX), a.shape[1:]) for name, a in written.items()}
    if len(kinds) > len({decoded for decoded, _ in kinds}):     # one frame shape each: recorded, decoded
        raise TrajectoryError(f"{path}: its fields' frames differ in shape; not one recording")
    kept = [a for a in list(written.values()) + list(samples.values()) if a is not None]
    n = min([len(steps["timesteps"])] + [len(a) for a in kept])
    if isinstance(meta.get("steps_on_disk"), int):      # the writer's count after its last fsync
        n = min(n, max(0, meta["steps_on_disk"]))
    meta["complete"] = bool(meta.get("complete")) and n == meta.get("steps_recorded", -1)
    columns = {name: stage_names(a[:n]) if name == "stages" else a[:n] for name, a in steps.items()}
    columns.update({name: a[:n] for name, a in samples.items() if a is not None})
    check_shapes(path, columns, {k: a[:n] for k, a in written.items()})          # the files written, as they are
    columns.update({name: np.zeros((0, 0)) for name, a in samples.items() if a is None})
    none = np.zeros((0, 0, 0, 0, 0), np.float32)                 # a field whose file was not made yet
    return {"columns": columns, "fields": {k: none if a is None else a[:n] for k, a in fields.items()}, "meta": meta}
