"""Filling a Trajectory a step at a time, in memory or streamed to a folder, readable at any moment.

    writer = TrajectoryWriter(("prev_sample", "pred_original_sample"), meta, store="disk", path=folder)
    writer.start(rows=20, columns=("timesteps", "stages", "noise_std"), sample_columns=("clip_fraction",))
    writer.allocate({"prev_sample": (B, C, H, W), "pred_original_sample": (B, C, H, W)}, batch=B)
    writer.append(frames, numbers)                # per step: {field: [B, C, H, W]}, {column: its value}
    writer.commit()                               # per chunk of steps: on disk, fsync'd, then counted in meta.json
    writer.close(complete=True)
    writer.trajectory                             # the Trajectory being filled (what `ppddpm.record` yields)

`source`: an object whose `sync()` brings steps still on their way (a recorder's device chunks) to
the writer; reading `writer.trajectory` calls it first, until `close`. Whoever appends owns the
vocabulary of nothing: frames arrive under the fields' own names (`ppddpm.storage.format.FIELDS`),
numbers under their columns' (`ppddpm.core.columns`): a number per step, or per sample of the batch
for a `sample_columns` one; `stages` a stage's name.
"""
from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Optional

import numpy as np

from ppddpm.errors import BadValue, Exists, file_kind
from ppddpm.storage.format import DTYPES, STORES, stage_code, stage_names, step_columns
from ppddpm.storage.stream import StreamWriter
from ppddpm.storage.trajectory import Trajectory


def check_destination(store: str, dtype, path) -> Optional[Path]:
    """`path` as a Path (None in memory) if `store`, `dtype` and `path` make a place to record to:
    a streamed trajectory needs a fresh (absent or empty) folder."""
    if store not in STORES:
        raise BadValue(f"store must be one of {STORES}, got {store!r}")
    if str(dtype) not in DTYPES:
        raise BadValue(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if store != "disk":
        return None
    if path is None:
        raise BadValue('store="disk" needs path= (a directory to stream the frames into)')
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    if not stat.S_ISDIR(mode):                   # a link is refused, not followed: the stream stays where it is named
        raise Exists(f"{path} exists and is {file_kind(mode)}; streamed trajectories need a fresh directory")
    if any(path.iterdir()):
        raise Exists(f"{path} exists and is not empty; streamed trajectories need a fresh directory")
    return path


class MemoryFrames:
    """Frames of one field in a preallocated array."""

    def __init__(self, n: int, shape: tuple, dtype: str):
        self.data, self.count = np.empty((n,) + tuple(shape), np.dtype(dtype)), 0

    def append(self, frame):
        self.data[self.count] = frame
        self.count += 1

    def array(self) -> np.ndarray:
        return self.data[: self.count]


class TrajectoryWriter:
    """Fills `trajectory` step by step (module docstring): frames in memory (`store="memory"`) or
    streamed to `path` (`"disk"`, `ppddpm.storage.stream`), as `dtype` (float32 or float16)."""

    def __init__(self, fields, meta: Optional[dict] = None, store: str = "memory", dtype: str = "float32",
                 path=None, source=None):
        self.path = check_destination(store, dtype, path)
        self.fields, self.store, self.dtype, self.source = tuple(fields), store, str(dtype), source
        self.rows, self.count, self.failed, self.batch = 0, 0, False, 0
        self.columns, self.sample_columns = (), ()
        self.frames = {}                # field (and column kept per sample) → MemoryFrames or stream.NpyFrames
        self.numbers = None             # column → one value per step (`stages` as its stage code)
        self.stream: Optional[StreamWriter] = None
        self.trajectory = _Filling(self, meta or {})

    def start(self, rows: int, columns=("timesteps", "stages"), sample_columns=()):
        """At most `rows` steps will be appended, each with a number per `columns` (by name; `timesteps`
        among them) and a number per sample per `sample_columns`; on disk the folder, meta.json and
        steps.npy are made."""
        self.rows, self.columns, self.sample_columns = rows, tuple(columns), tuple(sample_columns)
        self.numbers = {name: np.zeros(rows, np.int8) if name == "stages" else np.full(rows, np.nan)
                        for name in self.columns}
        if self.store == "disk":
            self.stream = StreamWriter(self.path, rows, self.trajectory.meta, self.fields, self.columns,
                                       self.sample_columns)

    def allocate(self, shapes: dict, batch: int):
        """Room for each field's frames: {field: the shape of one frame}, and for each column kept per
        sample of the `batch` (at the first step)."""
        self.batch = batch
        shapes = dict(shapes, **{name: (batch,) for name in self.sample_columns})
        for name, shape in shapes.items():
            dtype = self.dtype if name in self.fields else "float64"
            self.frames[name] = self.stream.open_field(name, shape, dtype) if self.stream is not None \
                else MemoryFrames(self.rows, shape, dtype)

    def append(self, frames: dict, numbers: dict):
        """One step: `frames` holds a host array per field, `numbers` a value per column. On disk the
        step is written to every file before it counts; an OSError (a full disk) marks the writer
        failed — meta.json then counts the steps written whole — and nothing more is appended."""
        if self.failed:
            return
        try:
            for name in self.fields:
                self.frames[name].append(frames[name])
            for name in self.sample_columns:       # a number: the same for every sample (0.0: nothing clipped)
                self.frames[name].append(np.broadcast_to(np.asarray(numbers[name], np.float64), (self.batch,)))
            if self.stream is not None:
                self.stream.append_step(numbers)
        except OSError:
            self._fail()
            raise
        for name, values in self.numbers.items():
            values[self.count] = stage_code(numbers[name]) if name == "stages" else numbers[name]
        self.count += 1

    def commit(self):
        """On disk: every file fsync'd, then meta.json counts the steps appended so far."""
        if self.stream is None or self.failed or self.count == self.stream.steps_on_disk:
            return
        try:
            self.stream.commit(self.count)
        except OSError:
            self._fail()
            raise

    def _fail(self):
        self.failed = True
        if self.stream is not None:
            with contextlib.suppress(OSError):      # count the steps fully written, if meta.json still fits
                self.stream.write_meta(complete=False, on_disk=self.count)

    @property
    def steps_on_disk(self) -> int:
        """Streamed steps fsync'd and counted in meta.json (0 in memory)."""
        return self.stream.steps_on_disk if self.stream is not None else 0

    @property
    def steps_kept(self) -> int:
        """The steps that stay: on disk those counted in meta.json, in memory all appended."""
        return self.steps_on_disk if self.store == "disk" else self.count

    def sync(self):
        if self.source is not None:
            self.source.sync()

    def close(self, complete: bool):
        """The run ended: the trajectory stops asking `source`; its metadata says whether the run is
        `complete` and how many steps were kept; on disk every file is closed and meta.json written
        a last time (a full disk failing it leaves the last chunk's meta.json: complete=false)."""
        self.source = None
        self.trajectory.meta.update(complete=complete, steps_recorded=self.steps_kept)
        if self.stream is not None:
            self.stream.close()
            with contextlib.suppress(OSError):
                self.stream.write_meta(complete, self.stream.steps_on_disk)

    # ---- what the trajectory reads
    def frames_of(self, name: str) -> np.ndarray:
        self.sync()
        frames = self.frames.get(name)
        return frames.array()[: self.count] if frames is not None else np.empty((0,), np.float32)

    def step_columns(self) -> dict:
        """The columns of the steps appended so far, by name."""
        self.sync()
        columns = {name: stage_names(values[: self.count]) if name == "stages" else values[: self.count]
                   for name, values in (self.numbers or {}).items()}
        columns.update({name: self.frames[name].array()[: self.count] for name in self.sample_columns
                        if name in self.frames})
        return step_columns(columns)


class _Filling(Trajectory):
    """The Trajectory a TrajectoryWriter fills: its arrays are the steps appended so far."""

    def __init__(self, writer: TrajectoryWriter, meta: dict):
        super().__init__([], {}, meta=meta)
        self._writer = writer

    @property
    def fields(self) -> tuple:
        return self._writer.fields

    def _field_array(self, name):
        return self._writer.frames_of(name)

    def _step_columns(self) -> dict:
        return self._writer.step_columns()
