"""Recording every step of a real `DDPMPipeline` run, by observing `scheduler.step`.

    traj = ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=1000, every=50)
    traj.prev_sample            # [N, B, C, H, W]  x_{t-1} after each recorded step
    traj.pred_original_sample   # [N, B, C, H, W]  x̂_0 (eq. 15, after clipping) as the step used it

    with ppddpm.record(pipe, every=50) as traj:          # the low-level form
        pipe(generator=paddle.Generator().manual_seed(777))

The recorder is an observer layer (`ppddpm.stepping`) on that scheduler instance only, so
it records whatever formula is in force (stock or a `patch_step` variant), and leaves the
scheduler as it found it when the block ends, exceptions included.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from . import _rng
from ._io import atomic_path
from .samplers import adapter_for, clipped_share, scheduler_of
from .steps import StepObserver, StepRecord, observe
from .stepping import formula_in_force
from .errors import BadType, BadValue, Exists, NotFound, Unknown, WriteFailed, check_int

FIELDS = {
    "prev_sample": "x_{t-1}: the step's output (Algorithm 2: μ + σ_t z)",
    "pred_original_sample": "x̂_0 as the step used it (eq. 15, then clip/threshold)",
    "sample": "x_t: the step's input",
    "model_output": "ε̂ = ε_θ(x_t, t): the UNet's output",
    "pred_original_sample_unclipped": "x̂_0 by eq. (15) before clip/threshold",
    "noise": "z ~ N(0, I) the step drew (zeros at the last step, which adds none)",
}
DEFAULT_FIELDS = ("prev_sample", "pred_original_sample")
FORMAT = "ppddpm.trajectory"
FORMAT_VERSION = 1
META_KEY = "__ppddpm_meta__"
STORES = ("memory", "disk")
DTYPES = ("float32", "float16")


class TrajectoryError(BadValue):
    """A file that is not a ppddpm trajectory, or a truncated / corrupt one."""


class NonFiniteWarning(RuntimeWarning):
    pass


# --------------------------------------------------------------------------- validation

def check_every(every) -> int:
    return check_int("every", every, hint=" (1 records every step, 50 every 50th)")


def check_fields(fields) -> tuple:
    if fields == "all":
        return tuple(FIELDS)
    if isinstance(fields, str):
        fields = (fields,)
    fields = tuple(fields)
    unknown = [f for f in fields if f not in FIELDS]
    if unknown or not fields:
        raise BadValue(f"unknown field(s) {unknown or fields!r}; choose from {', '.join(FIELDS)} or 'all'")
    return tuple(dict.fromkeys(fields))


def kept_steps(n_steps: int, every: int) -> np.ndarray:
    """Indices (0-based, in sampling order) of the steps `every` keeps: the every-th,
    2·every-th, … step, and always the last one. 1000 steps, every=50 → 20 steps, t = 950 … 0."""
    idx = np.arange(every - 1, n_steps, every)
    if n_steps and (len(idx) == 0 or idx[-1] != n_steps - 1):
        idx = np.append(idx, n_steps - 1)
    return idx.astype(np.int64)


def _timestep_array(timesteps) -> np.ndarray:
    """int64 when every t is a whole number (DDPM, DDIM, …), float64 otherwise (Euler-type)."""
    t = np.asarray(timesteps, np.float64)
    return t.astype(np.int64) if np.all(t == np.round(t)) else t


def versions() -> dict:
    import paddle
    import ppdiffusers

    from . import __version__

    return {"ppddpm": __version__, "ppdiffusers": ppdiffusers.__version__, "paddle": paddle.__version__}


def _jsonable(obj):
    return json.loads(json.dumps(dict(obj), default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def to_pil(x: np.ndarray):
    """[B, C, H, W] in [-1, 1] → PIL images, exactly as `DDPMPipeline` post-processes its output."""
    from ppdiffusers import DiffusionPipeline

    x = np.clip(x / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    return DiffusionPipeline.numpy_to_pil(x)


# --------------------------------------------------------------------------- storage

class _Buffer:
    """Frames of one field: preallocated in memory, or streamed to a `.npy` file."""

    def __init__(self, n: int, shape: tuple, dtype: str, path: Optional[Path] = None):
        self.n, self.shape, self.dtype, self.path, self.count = n, shape, np.dtype(dtype), path, 0
        if path is None:
            self.data = np.empty((n,) + shape, self.dtype)
            self.file = None
        else:
            self.file = open(path, "wb")
            np.lib.format.write_array_header_1_0(
                self.file, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                            "shape": (n,) + shape})
            self.offset = self.file.tell()

    def append(self, frame: np.ndarray):
        frame = np.ascontiguousarray(frame, dtype=self.dtype)
        if self.file is None:
            self.data[self.count] = frame
        else:
            self.file.write(frame.tobytes())
        self.count += 1

    def close(self):
        if self.file is not None and not self.file.closed:
            self.file.flush()
            self.file.close()

    def array(self) -> np.ndarray:
        if self.file is None:
            return self.data[: self.count]
        if not self.file.closed:
            self.file.flush()
        if self.count == 0:
            return np.empty((0,) + self.shape, self.dtype)
        return np.memmap(self.path, self.dtype, "r", offset=self.offset, shape=(self.count,) + self.shape)


class Trajectory:
    """The recorded steps of one sampling run (B samples), oldest first.

    Arrays: `timesteps` [N] (the t of each recorded step: integers, or floats for Euler-type
    schedulers), `sigma` [N] (std of the noise the step added), `clip_fraction` [N] (share of
    x̂_0's values outside the clipping range, measured before clipping), `stages` [N] ("" or,
    where a scheduler calls the model more than once per timestep, "predictor"/"corrector",
    "prk1"…"plms"), and each recorded field [N, B, C, H, W] (see `ppddpm.FIELDS`).
    `meta["scheduler"]` and `meta["scheduler_config"]` name the sampler that ran.
    `images` is the pipeline's final output (PIL list) when the last step was recorded.
    """

    def __init__(self, timesteps, fields: dict, sigma, clip_fraction, meta: dict, images=None, stages=None):
        self._timesteps = _timestep_array(timesteps)
        self._fields = dict(fields)
        self._sigma = np.asarray(sigma, np.float64)
        self._clip = np.asarray(clip_fraction, np.float32)
        self._stages = np.asarray([""] * len(self._timesteps) if stages is None else stages, str)
        self.meta = dict(meta)
        self._images = images

    # live recordings override these three
    @property
    def timesteps(self) -> np.ndarray:
        return self._timesteps

    @property
    def sigma(self) -> np.ndarray:
        return self._sigma

    @property
    def clip_fraction(self) -> np.ndarray:
        return self._clip

    @property
    def stages(self) -> np.ndarray:
        return self._stages

    @property
    def scheduler(self) -> str:
        """Class name of the scheduler that ran (DDPMScheduler for files written by ppddpm 0.1)."""
        return self.meta.get("scheduler", "DDPMScheduler")

    def field(self, name: str) -> np.ndarray:
        if name not in FIELDS:
            raise BadValue(f"unknown field {name!r}; choose from {', '.join(FIELDS)}")
        if name not in self.fields:
            raise Unknown(f"field {name!r} was not recorded (recorded: {', '.join(self.fields) or 'none'}); "
                          f"record it with fields=({name!r}, ...) or fields='all'")
        return self._field_array(name)

    def _field_array(self, name):
        return self._fields[name]

    prev_sample = property(lambda self: self.field("prev_sample"))
    pred_original_sample = property(lambda self: self.field("pred_original_sample"))
    sample = property(lambda self: self.field("sample"))
    model_output = property(lambda self: self.field("model_output"))
    pred_original_sample_unclipped = property(lambda self: self.field("pred_original_sample_unclipped"))
    noise = property(lambda self: self.field("noise"))

    @property
    def fields(self) -> tuple:
        return tuple(self._fields)

    def __len__(self):
        return len(self.timesteps)

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete", False))

    @property
    def images(self):
        """The final images: the pipeline's own output, or rebuilt from the last x_{t-1}
        exactly as the pipeline post-processes it."""
        if self._images is None and self.complete and "prev_sample" in self.fields and len(self):
            self._images = to_pil(np.asarray(self.prev_sample[-1], np.float32))
        return self._images

    @images.setter
    def images(self, value):
        self._images = value

    def to_pil(self, field: str = "prev_sample") -> list:
        """Per recorded step, a list of B PIL images of `field` (the article's `output[1]` / `output[2]`)."""
        arr = self.field(field)
        return [to_pil(np.asarray(arr[i], np.float32)) for i in range(len(arr))]

    def index_of(self, t: int) -> int:
        hits = np.nonzero(self.timesteps == t)[0]
        if not len(hits):
            raise Unknown(f"t={t} was not recorded; recorded t: {self.timesteps.tolist()}")
        return int(hits[0])

    def first_nonfinite(self):
        """(index, t) of the first recorded step with a NaN/Inf in any field, or None."""
        for i in range(len(self)):
            for name in self.fields:
                if not np.isfinite(self.field(name)[i]).all():
                    return i, int(self.timesteps[i])
        return None

    def __repr__(self):
        shape = self.field(self.fields[0]).shape if self.fields else ()
        return (f"Trajectory({len(self)} steps, t={self.timesteps[:1].tolist()}…{self.timesteps[-1:].tolist()}, "
                f"fields={list(self.fields)}, shape={tuple(shape)}, complete={self.complete})")

    # ---- persistence
    def save(self, path) -> Path:
        """Write one `.npz` (arrays + JSON metadata) atomically: no half-written file is ever
        left under `path`."""
        path = Path(path)
        if path.suffix != ".npz":
            raise BadValue(f"trajectory files end in .npz, got {path.name!r}")
        arrays = {"timesteps": self.timesteps, "sigma": self.sigma, "clip_fraction": self.clip_fraction,
                  "stages": self.stages}
        arrays.update({name: np.asarray(self.field(name)) for name in self.fields})
        meta = dict(self.meta, format=FORMAT, format_version=FORMAT_VERSION, fields=list(self.fields))
        arrays[META_KEY] = np.array(json.dumps(meta, default=str))
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)
        return path

    @classmethod
    def load(cls, path) -> "Trajectory":
        """Load a `.npz` written by `save`, or a directory streamed by `record(store="disk")`."""
        path = Path(path)
        if path.is_dir():
            return _load_stream(path)
        if not path.exists():
            raise NotFound(f"no trajectory at {path}")
        import zipfile

        try:
            with np.load(path, allow_pickle=False) as npz:
                if META_KEY not in npz.files:
                    raise TrajectoryError(f"{path} is not a ppddpm trajectory (no {META_KEY} entry; "
                                          f"write one with Trajectory.save or `ppddpm sample`)")
                meta = json.loads(str(npz[META_KEY]))
                data = {k: npz[k] for k in npz.files if k != META_KEY}
        except TrajectoryError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise TrajectoryError(f"{path} is truncated or corrupt, not a readable trajectory "
                                  f"({type(exc).__name__}: {exc})") from None
        if meta.get("format") != FORMAT:
            raise TrajectoryError(f"{path} is not a ppddpm trajectory (format={meta.get('format')!r})")
        missing = [k for k in ["timesteps", "sigma", "clip_fraction"] + meta.get("fields", []) if k not in data]
        if missing:
            raise TrajectoryError(f"{path} is truncated: missing arrays {missing}")
        fields = {k: data[k] for k in meta["fields"]}
        return cls(data["timesteps"], fields, data["sigma"], data["clip_fraction"], meta, stages=data.get("stages"))


def _read_frames(path: Path) -> np.ndarray:
    """The complete frames of a streamed `.npy` (its header announces the planned count)."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = header(fh)
        offset = fh.tell()
    dtype = np.dtype(dtype)
    frame = int(np.prod(shape[1:])) * dtype.itemsize
    n = min(shape[0], (path.stat().st_size - offset) // frame) if frame else 0
    if n == 0:
        return np.empty((0,) + tuple(shape[1:]), dtype)
    return np.memmap(path, dtype, "r", offset=offset, shape=(n,) + tuple(shape[1:]))


def _load_stream(path: Path) -> Trajectory:
    """A folder written by `record(store="disk")`: complete or cut short, it loads."""
    meta_file = path / "meta.json"
    if not meta_file.exists():
        raise TrajectoryError(f"{path} is not a streamed ppddpm trajectory (no meta.json)")
    try:
        meta = json.loads(meta_file.read_text())
        steps = _read_frames(path / "steps.npy")               # rows of (t, σ_t, clipped fraction)
        fields = {name: _read_frames(path / f"{name}.npy") for name in meta["fields"]}
    except (OSError, ValueError, KeyError) as exc:
        raise TrajectoryError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    n = min([len(steps)] + [len(a) for a in fields.values()])
    meta["complete"] = bool(meta.get("complete")) and n == meta.get("steps_recorded", -1)
    stages = [STAGES[int(c)] if 0 <= c < len(STAGES) else "?" for c in steps[:n, 3]] if steps.shape[1] > 3 else None
    return Trajectory(steps[:n, 0], {k: a[:n] for k, a in fields.items()}, steps[:n, 1], steps[:n, 2], meta,
                      stages=stages)


class _LiveTrajectory(Trajectory):
    """What `record` yields: a Trajectory that fills as the pipeline runs."""

    def __init__(self, fields, meta):
        super().__init__([], {}, [], [], meta)
        self._wanted = fields
        self._buffers = {}
        self._steps = None          # per-step arrays over the whole run, -1 / nan = not recorded

    @property
    def fields(self):
        return self._wanted

    def _field_array(self, name):
        buf = self._buffers.get(name)
        return buf.array() if buf is not None else np.empty((0,), np.float32)

    def _n(self):
        return next(iter(self._buffers.values())).count if self._buffers else 0

    @property
    def timesteps(self):
        return _timestep_array(self._rows("timesteps"))

    @property
    def stages(self):
        return np.asarray([STAGES[c] if c >= 0 else "?" for c in self._rows("stage").astype(int)], str)

    @property
    def sigma(self):
        return self._rows("sigma")

    @property
    def clip_fraction(self):
        return self._rows("clip_fraction").astype(np.float32)

    def _rows(self, key):
        if self._steps is None:
            return np.empty((0,))
        return self._steps[key][~np.isnan(self._steps["timesteps"])][: self._n()]


# --------------------------------------------------------------------------- the recorder

STAGES = ("", "predictor", "corrector", "prk1", "prk2", "prk3", "prk4", "plms")   # codes in streamed steps.npy


class _Recorder:
    """Consumes the StepRecords of one run (`ppddpm.steps.StepObserver`) into a Trajectory."""

    def __init__(self, scheduler, every, fields, store, dtype, path, on_nonfinite, meta):
        self.scheduler, self.every, self.store, self.dtype, self.path = scheduler, every, store, dtype, path
        self.on_nonfinite = on_nonfinite
        self.traj = _LiveTrajectory(fields, meta)
        self.kept = None
        self.n_steps = None
        self.first_bad = None
        self.observer = StepObserver(self.consume, want_noise="noise" in fields, keep=self.keep,
                                     every_call=self.check_finite)

    @property
    def calls(self):
        return self.observer.calls

    def keep(self, i) -> bool:
        if self.kept is None:                 # the first call: the pipeline has set the timesteps by now
            self._start()
        elif i >= self.n_steps:
            raise RuntimeError("one ppddpm.record block holds one sampling run; "
                               "use a new `with ppddpm.record(...)` for each run")
        return i in self.kept

    def _start(self):
        sched = self.scheduler
        self.n_steps = len(sched.timesteps)   # calls of step in one run (Heun: two per timestep but the last)
        self.kept = set(kept_steps(self.n_steps, self.every).tolist())
        n = len(self.kept)
        self.traj._steps = {"timesteps": np.full(n, np.nan), "sigma": np.full(n, np.nan),
                            "clip_fraction": np.full(n, np.nan), "stage": np.zeros(n, np.int8)}
        self.traj.meta.update(num_inference_steps=self.n_steps, scheduler=type(sched).__name__,
                              sampler=adapter_for(sched).family, scheduler_config=_jsonable(sched.config),
                              variant=formula_in_force(sched)[0])
        if self.store == "disk":
            self.path.mkdir(parents=True, exist_ok=True)
            self._write_meta(complete=False)
            self.step_rows = _Buffer(n, (4,), "float64", self.path / "steps.npy")

    def _write_meta(self, complete):
        meta = dict(self.traj.meta, format=FORMAT, format_version=FORMAT_VERSION, fields=list(self.traj._wanted),
                    complete=complete)
        with atomic_path(self.path / "meta.json") as tmp:
            tmp.write_text(json.dumps(meta, default=str, indent=1))

    def check_finite(self, i, timestep, out):
        import paddle

        if self.first_bad is None and not bool(paddle.isfinite(out.prev_sample).all()):
            t = _number(timestep)
            self.first_bad = (i, t)
            msg = f"non-finite values (NaN/Inf) in prev_sample first at step {i} (t={t})"
            if self.on_nonfinite == "raise":
                raise FloatingPointError(msg)
            if self.on_nonfinite == "warn":
                warnings.warn(msg, NonFiniteWarning, stacklevel=2)

    def consume(self, rec: StepRecord):
        traj = self.traj
        frame = {"prev_sample": rec.prev, "pred_original_sample": rec.x0, "sample": rec.sample,
                 "model_output": rec.model_output, "pred_original_sample_unclipped": rec.x0_raw,
                 "noise": rec.noise}
        if not traj._buffers:
            self._allocate(frame)
        t = _number(rec.t)
        row = traj._n()
        clipped = clipped_share(self.scheduler, rec.x0_raw)
        stage = STAGES.index(rec.stage) if rec.stage in STAGES else -1
        try:
            for name in traj._wanted:
                value = frame[name]
                traj._buffers[name].append(np.zeros(traj._buffers[name].shape, np.float32) if value is None
                                           else value.numpy())
            if self.store == "disk":
                self.step_rows.append(np.array([t, rec.sigma, clipped, stage]))
        except OSError as exc:
            raise WriteFailed(exc.errno, f"streaming the trajectory to {self.path} failed at step {rec.i} (t={t}): "
                                     f"{exc.strerror or exc}; the {row} steps written before are kept and "
                                     f"meta.json marks the recording incomplete") from exc
        steps = traj._steps
        steps["sigma"][row] = rec.sigma
        steps["clip_fraction"][row] = clipped
        steps["stage"][row] = stage
        steps["timesteps"][row] = t            # written last: marks the row as complete

    def _allocate(self, frame):
        n = len(self.kept)
        shape = tuple(frame["prev_sample"].shape)
        for name in self.traj._wanted:
            value = frame[name]
            file = self.path / f"{name}.npy" if self.store == "disk" else None
            self.traj._buffers[name] = _Buffer(n, shape if value is None else tuple(value.shape), self.dtype, file)
        self.traj.meta.update(batch_size=int(shape[0]))

    def finish(self, ok: bool):
        traj = self.traj
        complete = ok and self.n_steps is not None and self.calls == self.n_steps
        traj.meta.update(complete=complete, steps_run=self.calls, steps_recorded=traj._n(),
                         first_nonfinite=list(self.first_bad) if self.first_bad else None)
        buffers = list(traj._buffers.values()) + ([self.step_rows] if hasattr(self, "step_rows") else [])
        for buf in buffers:
            try:
                buf.close()
            except OSError:          # a full disk can fail the final flush too; the frames before stay
                pass
        if self.store == "disk" and traj._steps is not None:
            try:
                self._write_meta(complete)
            except OSError:
                pass                 # meta.json from the start still says complete=false


def _number(t):
    """A timestep as a Python int (DDPM, DDIM, …) or float (Euler-type schedulers)."""
    value = t.item() if hasattr(t, "item") else t
    return int(value) if float(value).is_integer() else float(value)


@contextlib.contextmanager
def record(pipe_or_scheduler, every: int = 1, fields: Iterable[str] = DEFAULT_FIELDS, store: str = "memory",
           dtype: str = "float32", path=None, on_nonfinite: str = "warn", meta: Optional[dict] = None):
    """Record the steps of the next sampling run of this pipeline (or scheduler instance).

    every         keep every k-th step and always the last (k=1: all steps).
    fields        what to keep per recorded step (`ppddpm.FIELDS`; default x_{t-1} and x̂_0);
                  t, σ_t and the clipped fraction of x̂_0 are always kept (one number each).
    store/dtype   "memory" as float32 or float16 (half the memory), or "disk": frames are
                  streamed to `.npy` files under `path` as they come, so an interrupted run
                  leaves a loadable partial trajectory (`Trajectory.load(path)`).
    on_nonfinite  "warn" (default), "raise" or "ignore" when x_{t-1} first holds NaN/Inf.

    Only that scheduler instance is touched; it gets its own `step` back on exit, also when
    the block raises — and the steps recorded so far stay in the yielded Trajectory.
    """
    scheduler = scheduler_of(pipe_or_scheduler, "ppddpm.record")
    if isinstance(scheduler, type):
        raise BadType("ppddpm.record records one scheduler instance; pass a pipeline or a scheduler, not a class")
    every = check_every(every)
    fields = check_fields(fields)
    if store not in STORES:
        raise BadValue(f"store must be one of {STORES}, got {store!r}")
    if str(dtype) not in DTYPES:
        raise BadValue(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if on_nonfinite not in ("warn", "raise", "ignore"):
        raise BadValue(f"on_nonfinite must be 'warn', 'raise' or 'ignore', got {on_nonfinite!r}")
    if store == "disk":
        if path is None:
            raise BadValue('store="disk" needs path= (a directory to stream the frames into)')
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise Exists(f"{path} exists and is not empty; streamed trajectories need a fresh directory")
    info = {"every": every, "model": _model_id(pipe_or_scheduler), "versions": versions(), "store": store,
            "dtype": str(dtype)}
    info.update(meta or {})
    rec = _Recorder(scheduler, every, fields, store, str(dtype), path, on_nonfinite, info)
    ok = False
    try:
        with observe(scheduler, rec.observer, "record"):
            yield rec.traj
        ok = True
    finally:
        rec.finish(ok)


def _model_id(obj):
    config = getattr(obj, "config", None)
    name = getattr(obj, "name_or_path", None) or (config.get("_name_or_path") if hasattr(config, "get") else None)
    return str(name) if name else None


def sample_trajectory(pipe, seed: int = 777, num_inference_steps: int = 1000, batch_size: int = 1,
                      every: int = 1, fields: Iterable[str] = DEFAULT_FIELDS, progress: Optional[bool] = None,
                      pipe_kwargs: Optional[dict] = None, **record_kwargs) -> Trajectory:
    """Run `pipe` (a `DDPMPipeline`, `DDIMPipeline`, or one whose scheduler was swapped) once with
    `paddle.Generator().manual_seed(seed)` and return its recorded trajectory; `traj.images` is
    the pipeline's own output for this seed. `pipe_kwargs` go to the pipeline's call
    (`{"eta": 1.0}` for a DDIMPipeline). `progress`: a bar over the steps (default: where someone
    is watching — a terminal or a notebook — and not under tests; PPDDPM_PROGRESS=0 turns it off)."""
    check_int("seed", seed, low=0)
    check_int("num_inference_steps", num_inference_steps)
    check_int("batch_size", batch_size)
    generator = _rng.make_generator(seed)
    from ._progress import wanted

    pipe.set_progress_bar_config(disable=not wanted(progress))
    try:
        meta = dict(record_kwargs.pop("meta", None) or {}, seed=int(seed))
        with record(pipe, every=every, fields=fields, meta=meta, **record_kwargs) as traj:
            out = pipe(batch_size=batch_size, generator=generator, num_inference_steps=num_inference_steps,
                       **(pipe_kwargs or {}))
        if isinstance(out, tuple):         # RecordingDDPMPipeline returns the article's triple
            out = out[0]
    finally:
        _rng.release_generator(generator)
    traj.images = out.images
    return traj
