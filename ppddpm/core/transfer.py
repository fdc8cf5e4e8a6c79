"""Recorded frames travel device → host a chunk at a time, not with a host read per step.

Every read of a device tensor from the host (`numpy()`, `item()`, `bool()`, `float()`, `int()`)
makes the host wait for the device: on a GPU, a synchronisation. A recorder that read each step's
frames, its t, noise std, clipped share and NaN check would add ~8 of them per step to the ~3 that
ppdiffusers' own loop makes. `DeviceChunks` keeps them on the device instead:

    chunks = DeviceChunks(sink=write)             # sink(frames: {name: ndarray [k, …]}, values: [{name: …}])
    chunks.add(frames={"prev_sample": x, …}, values={"timesteps": t, "finite": finite, …})   # per call, no read
    chunks.drain()                                # at the end (or to look mid-run): the rest

- the frames of a chunk are copied into a preallocated device buffer ([chunk, *frame shape] per
  field, two of them: one fills while the other is on its way to the host);
- per-call values, by name (device tensors — 0-d, or [B] for one value per sample — or plain
  numbers and strings, which stay on the host), have their tensors packed into one float64 vector;
- when `chunk` steps have been added, that buffer's copy to host memory starts — asynchronous
  into pinned memory on a GPU or XPU (`Tensor.pin_memory(blocking=False)`), nothing to do on a
  CPU — and the chunk before is handed to `sink` as numpy arrays: one read per field and one for
  the numbers, per chunk.

The copies are exact (the same float32 bits as `frame.numpy()` per step). `chunk_for` picks the
chunk from the frame size so that the two device buffers stay within a memory budget.
"""
from __future__ import annotations

import collections
import contextlib
import traceback
from typing import Callable, Dict, List, Optional

import numpy as np

MEMORY_BUDGET = 32 << 20      # bytes of device memory the two chunk buffers may take together
MAX_CHUNK = 64                # steps per transfer at most: bounds how late a NaN is reported


def chunk_for(bytes_per_step: int, budget: int = MEMORY_BUDGET, cap: int = MAX_CHUNK) -> int:
    """Steps per chunk: as many as fit `budget` in two buffers, between 1 and `cap`."""
    return int(max(1, min(cap, budget // max(1, 2 * bytes_per_step))))


def start_copy(tensor):
    """Begin moving `tensor` to host memory: a non-blocking copy into pinned memory on a GPU or XPU;
    on a CPU the tensor already is in host memory."""
    place = tensor.place
    if place.is_gpu_place() or (hasattr(place, "is_xpu_place") and place.is_xpu_place()):
        return tensor.pin_memory(blocking=False)
    return tensor


class _Chunk:
    """One device buffer per field, filled row by row, plus the chunk's numbers."""

    def __init__(self, shapes: Dict[str, tuple], dtypes: Dict[str, str], rows: int):
        import paddle

        self.buffers = {name: paddle.empty((rows,) + tuple(shape), dtype=dtypes[name])
                        for name, shape in shapes.items()}
        self.rows, self.values, self.in_flight = 0, [], None

    def add(self, frames: dict, values: dict):
        for name, buf in self.buffers.items():
            value = frames.get(name)
            if value is None:
                buf[self.rows] = 0.0
            else:
                buf[self.rows] = value            # a device-side copy: the pipeline may reuse its tensor
        self.rows += 1
        self.values.append(values)

    def start(self):
        """Start every buffer's copy to the host, and the numbers' (packed into one vector)."""
        self.in_flight = ({name: start_copy(buf) for name, buf in self.buffers.items()}, self.rows,
                          _pack(self.values))

    def finish(self):
        """The chunk as numpy: frames [rows, …] per field, and each call's values by name (a tensor's as a
        float, or an array of its shape)."""
        copies, rows, packed = self.in_flight
        frames = {name: copy.numpy()[:rows] for name, copy in copies.items()}
        self.rows, self.values, self.in_flight = 0, [], None
        return frames, _unpack(packed)


def _pack(rows: List[dict]):
    """Start moving the tensors among `rows` (dicts of values by name) to the host as one float64 vector:
    flattened and joined by dtype (a handful of device ops per chunk, not a few per value)."""
    import paddle

    by_dtype: Dict[str, list] = {}
    for k, row in enumerate(rows):
        for name, v in row.items():
            if hasattr(v, "place"):
                by_dtype.setdefault(str(v.dtype), []).append((k, name))
    if not by_dtype:
        return rows, None, []
    order = [(k, name, tuple(rows[k][name].shape)) for keys in by_dtype.values() for k, name in keys]
    flat = lambda v: v.reshape([-1]) if len(v.shape) != 1 else v      # noqa: E731  (1-d already: no op)
    parts = [paddle.concat([flat(rows[k][name]) for k, name in keys]).astype("float64")
             for keys in by_dtype.values()]
    return rows, start_copy(paddle.concat(parts) if len(parts) > 1 else parts[0]), order


def _unpack(packed) -> List[dict]:
    rows, copy, order = packed
    rows = [dict(row) for row in rows]
    if copy is not None:
        numbers, at = copy.numpy(), 0
        for k, name, shape in order:
            size = int(np.prod(shape))
            rows[k][name] = float(numbers[at]) if not shape else numbers[at: at + size].reshape(shape)
            at += size
    return rows


def to_host(rows: List[dict]) -> List[dict]:
    """Rows of values by name with their tensors as host floats (0-d) or arrays, in one host read."""
    return _unpack(_pack(rows))


class DeviceChunks:
    """Frames and numbers of a recording, moved to the host a chunk of steps at a time (module docstring).

    `add(frames, values)`: one call of the step; `frames` is a dict of device tensors (None: a zero
    frame) when the call is recorded, else None; `values` a dict of its numbers by name (tensors, or
    host numbers and strings). A chunk is sent after `chunk` calls. `sink(frames, rows)` receives the
    chunks in order, `rows` the calls' values; `drain()` sends what is pending (call it before reading
    the host copies, and at the end of the run).
    """

    def __init__(self, sink: Callable[[dict, list], None], chunk: Optional[int] = None):
        self.chunk, self.sink = chunk, sink
        self.current: Optional[_Chunk] = None
        self.previous: Optional[_Chunk] = None
        self.calls = 0
        self._loose: List = []              # values added before the first frame (no buffers yet)

    def allocate(self, shapes: Dict[str, tuple], dtypes: Dict[str, str], itemsize: Dict[str, int]):
        """The buffers, at the first recorded step; `chunk=None` is chosen here from the frame sizes."""
        if self.chunk is None:
            self.chunk = chunk_for(sum(int(np.prod(shape)) * itemsize[name] for name, shape in shapes.items()))
        self.current = _Chunk(shapes, dtypes, self.chunk)
        self.previous = _Chunk(shapes, dtypes, self.chunk)
        self.current.values.extend(self._loose)
        self._loose = []

    @property
    def allocated(self) -> bool:
        return self.current is not None

    def add(self, frames: Optional[dict], values: dict):
        if self.current is None:            # calls before the first recorded step (every > 1)
            self._loose.append(values)
        elif frames is None:
            self.current.values.append(values)
        else:
            self.current.add(frames, values)
        self.calls += 1
        if self.current is not None and self.calls % self.chunk == 0:
            self._send()

    def _send(self):
        """Start the current chunk's copy; hand the previous one (its copy has had a chunk's time) to sink."""
        self.current.start()
        self.current, self.previous = self.previous, self.current
        if self.current.in_flight is not None:
            self.sink(*self.current.finish())

    def drain(self):
        """Hand everything added so far to `sink`, in order."""
        if self.current is None:
            if self._loose:
                loose, self._loose = self._loose, []
                self.sink({}, to_host(loose))
            return
        if self.previous.in_flight is not None:
            self.sink(*self.previous.finish())
        if self.current.rows or self.current.values:
            self.current.start()
            self.sink(*self.current.finish())


HOST_READS = ("numpy", "item", "__bool__", "__float__", "__int__")


@contextlib.contextmanager
def host_reads():
    """Count host reads of paddle tensors in the block: a Counter keyed by (method, "file:line" of
    the caller). The five methods of `paddle.Tensor` that wait for the device are wrapped; a read
    made inside another (`item()` through `numpy()`) counts once. A diagnostic: how often does a
    loop synchronise with the device?"""
    import paddle

    counts, depth = collections.Counter(), [0]
    originals = {name: getattr(paddle.Tensor, name) for name in HOST_READS}

    def counting(name, method):
        def read(self, *args, **kwargs):
            if depth[0] == 0:
                caller = traceback.extract_stack(limit=2)[0]
                counts[(name, f"{caller.filename.rsplit('/', 2)[-1]}:{caller.lineno}")] += 1
            depth[0] += 1
            try:
                return method(self, *args, **kwargs)
            finally:
                depth[0] -= 1
        return read

    for name, method in originals.items():
        setattr(paddle.Tensor, name, counting(name, method))
    try:
        yield counts
    finally:
        for name, method in originals.items():
            setattr(paddle.Tensor, name, method)
