"""Trajectory: the recorded steps of one run as arrays, and its file formats.

A `.npz` (`Trajectory.save` / `load`: arrays plus JSON metadata, written atomically) or a folder
streamed step by step by `ppddpm.record(store="disk")` (`.npy` per field, `steps.npy` rows of
(t, σ, clipped share, stage), `meta.json`), which loads complete or cut short. Each chunk of
steps is written and fsync'd as it arrives and only then counted in `meta.json` (replaced
atomically, `steps_on_disk`), so a run killed at any moment — SIGKILL included — leaves a folder
whose first `steps_on_disk` steps load. Files written by
ppddpm 0.1 load too. Recording lives in `ppddpm.core.recorder`; this module only stores.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np

from ppddpm._io import atomic_path
from ppddpm.errors import BadValue, Unknown, regular_file

FIELDS = {
    "prev_sample": "x_{t-1}: the step's output (Algorithm 2: μ + σ_t z)",
    "pred_original_sample": "x̂_0 as the step used it (eq. 15, then clip/threshold)",
    "sample": "x_t: the step's input",
    "model_output": "ε̂ = ε_θ(x_t, t): the UNet's output",
    "pred_original_sample_unclipped": "x̂_0 by eq. (15) before clip/threshold",
    "noise": "z ~ N(0, I) the step drew (zeros at the last step, which adds none)",
}
DEFAULT_FIELDS = ("prev_sample", "pred_original_sample")
# Fields that only some runs have (never part of fields="all"): the guidance halves of a
# classifier-free-guided latent pipeline, and any field decoded to pixels (`ppddpm.pipelines.latent`).
GUIDANCE_FIELDS = {
    "model_output_uncond": "ε̂(z_t, t, ∅): the denoiser's unconditional output (classifier-free guidance)",
    "model_output_cond": "ε̂(z_t, t, c): the denoiser's conditional output (prompt or class label)",
    "pred_original_sample_uncond": "x̂_0 of the unconditional output (the step's formula, before clipping)",
    "pred_original_sample_cond": "x̂_0 of the conditional output (the step's formula, before clipping)",
}
DECODED_SUFFIX = "_decoded"


def known_field(name: str) -> bool:
    """A step field, a guidance field, or either decoded to pixels (NAME_decoded)."""
    base = name[: -len(DECODED_SUFFIX)] if name.endswith(DECODED_SUFFIX) else name
    return base in FIELDS or base in GUIDANCE_FIELDS
FORMAT = "ppddpm.storage.trajectory"
FORMAT_VERSION = 1
META_KEY = "__ppddpm_meta__"
STORES = ("memory", "disk")
DTYPES = ("float32", "float16")
STAGES = ("", "predictor", "corrector", "prk1", "prk2", "prk3", "prk4", "plms")   # codes in streamed steps.npy


class TrajectoryError(BadValue):
    """A file that is not a ppddpm trajectory, or a truncated / corrupt one."""


def _timestep_array(timesteps) -> np.ndarray:
    """int64 when every t is a whole number (DDPM, DDIM, …), float64 otherwise (Euler-type)."""
    t = np.asarray(timesteps, np.float64)
    return t.astype(np.int64) if np.all(t == np.round(t)) else t


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

    def flush(self, sync: bool = True):
        """Everything appended so far written to the file (a SIGKILL no longer loses it) and, with
        `sync`, fsync'd (nor does a power cut)."""
        if self.file is not None and not self.file.closed:
            self.file.flush()
            if sync:
                os.fsync(self.file.fileno())

    def close(self):
        if self.file is not None and not self.file.closed:
            try:
                self.file.flush()
            finally:
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

    # live recordings override these four
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
        if not known_field(name):
            raise BadValue(f"unknown field {name!r}; choose from {', '.join(FIELDS)} (latent runs: also "
                           f"{', '.join(GUIDANCE_FIELDS)}, and NAME{DECODED_SUFFIX})")
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
        if self._images is None and self.complete and "prev_sample" in self.fields and len(self) and \
                self.meta.get("space") != "latent":                 # latents: the pipeline's VAE makes images
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
        path = regular_file(path, "trajectory")
        import zipfile

        with open(path, "rb") as fh:
            if fh.read(4) != b"PK\x03\x04":
                raise TrajectoryError(f"{path} is not a ppddpm trajectory: not a .npz (zip) archive; give a file "
                                      f"written by Trajectory.save or `ppddpm sample`, or a streamed folder")
        try:
            with np.load(path, allow_pickle=False) as npz:
                if META_KEY not in npz.files:
                    raise TrajectoryError(f"{path} is not a ppddpm trajectory (no {META_KEY} entry; "
                                          f"write one with Trajectory.save or `ppddpm sample`)")
                _check_members(path, npz)
                meta = json.loads(str(npz[META_KEY]))
                data = {k: npz[k] for k in npz.files if k != META_KEY}
        except TrajectoryError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, MemoryError) as exc:
            raise TrajectoryError(f"{path} is truncated or corrupt, not a readable trajectory "
                                  f"({type(exc).__name__}: {exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise TrajectoryError(f"{path} is not a ppddpm trajectory (its metadata is not a ppddpm one: "
                                  f"format={meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r})")
        names = _field_names(path, meta)
        missing = [k for k in ["timesteps", "sigma", "clip_fraction"] + names if k not in data]
        if missing:
            raise TrajectoryError(f"{path} is truncated: missing arrays {missing}")
        fields = {k: data[k] for k in names}
        _check_shapes(path, data["timesteps"], [data["sigma"], data["clip_fraction"]], fields)
        stages = data.get("stages")
        if stages is not None and (stages.dtype.kind != "U" or stages.shape != data["timesteps"].shape):
            raise TrajectoryError(f"{path}: stages is {stages.dtype} of shape {stages.shape}, not one name per step")
        return cls(data["timesteps"], fields, data["sigma"], data["clip_fraction"], meta, stages=stages)


def _check_members(path, npz):
    """Each array's header against the bytes its zip member holds, before numpy allocates it: a
    header announcing 10¹² frames is a corrupt file, not a 233 TiB allocation."""
    import math

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


def _field_names(path, meta: dict) -> list:
    names = meta.get("fields", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and known_field(n) for n in names):
        raise TrajectoryError(f"{path}: its metadata's fields must be a list of {', '.join(FIELDS)}, "
                              f"{', '.join(GUIDANCE_FIELDS)} or NAME{DECODED_SUFFIX}, got {names!r}")
    return names


def _check_shapes(path, timesteps, per_step: list, fields: dict):
    """Numbers are numeric 1-D arrays of one length N, frames numeric [N, B, C, H, W] of one shape."""
    problem = _shape_problem(timesteps, per_step, fields)
    if problem:
        raise TrajectoryError(f"{path} is not a well-formed ppddpm trajectory: {problem}")


def _shape_problem(timesteps, per_step: list, fields: dict) -> Optional[str]:
    for name, a in [("timesteps", timesteps)] + [(f"per-step array {i}", a) for i, a in enumerate(per_step)]:
        if a.dtype.kind not in "fiu" or a.ndim != 1 or len(a) != len(timesteps):
            return f"{name} is {a.dtype} of shape {a.shape}, not numbers, one per recorded step"
    # the recorded fields share one shape, and the fields decoded to pixels (NAME_decoded) another
    shapes = {name.endswith(DECODED_SUFFIX): a.shape for name, a in fields.items()}
    kinds = {(name.endswith(DECODED_SUFFIX), a.shape) for name, a in fields.items()}
    for name, a in fields.items():
        if a.dtype.kind != "f" or a.ndim != 5 or len(a) != len(timesteps) or len(kinds) > len(shapes) or \
                len({shape[:2] for shape in shapes.values()}) > 1:
            return (f"field {name} is {a.dtype} of shape {a.shape}; frames are floats [N, B, C, H, W] with "
                    f"N = {len(timesteps)} recorded steps, the same shape for every field (decoded ones: "
                    f"the same N and B)")
    return None


def _read_frames(path: Path, ndim: int, columns: Optional[tuple] = None) -> np.ndarray:
    """The complete frames of a streamed `.npy` (its header announces the planned count).

    The header is checked before anything is mapped: a numeric dtype (an object `|O` header
    mapped as pointers would crash the reader), C order, `ndim` dimensions (`columns`: the allowed
    sizes of the last), and a regular file (a FIFO would block the read)."""
    path = regular_file(path, "streamed array")
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = header(fh)
        offset = fh.tell()
    dtype = np.dtype(dtype)
    if dtype.kind != "f" or dtype.hasobject or fortran or len(shape) != ndim or \
            (columns is not None and shape[-1] not in columns):
        raise TrajectoryError(f"{path} is not a ppddpm stream array: {dtype.str} of shape {shape}"
                              f"{' (Fortran order)' if fortran else ''}; expected floats with {ndim} dimensions")
    frame = math.prod(shape[1:]) * dtype.itemsize                        # Python ints: no overflow
    n = min(shape[0], (path.stat().st_size - offset) // frame) if frame else 0
    if n == 0:
        return np.empty((0,) + tuple(shape[1:]), dtype)
    return np.memmap(path, dtype, "r", offset=offset, shape=(n,) + tuple(shape[1:]))


def _read_field(path: Path, name: str, meta: dict) -> np.ndarray:
    """A field's streamed frames; none yet where the run stopped before its first recorded step (the
    field's file is made with that step's frames, meta.json and steps.npy when the run starts)."""
    file = path / f"{name}.npy"
    if not file.exists() and not meta.get("steps_on_disk"):
        return np.zeros((0, 0, 0, 0, 0), np.float32)
    return _read_frames(file, 5)


def _load_stream(path: Path) -> Trajectory:
    """A folder written by `record(store="disk")`: complete or cut short, it loads."""
    meta_file = path / "meta.json"
    if not meta_file.exists():
        raise TrajectoryError(f"{path} is not a streamed ppddpm trajectory (no meta.json)")
    try:
        meta = json.loads(regular_file(meta_file, "metadata").read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise TrajectoryError(f"{meta_file} is not a ppddpm trajectory's metadata (no format {FORMAT!r})")
        steps = _read_frames(path / "steps.npy", 2, columns=(3, 4))      # rows of (t, σ_t, clipped fraction, stage)
        fields = {name: _read_field(path, name, meta) for name in _field_names(path, meta)}
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, TrajectoryError):
            raise
        raise TrajectoryError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    kinds = {(name.endswith(DECODED_SUFFIX), a.shape[1:]) for name, a in fields.items()}
    if len(kinds) > len({decoded for decoded, _ in kinds}):     # one frame shape each: recorded, decoded
        raise TrajectoryError(f"{path}: its fields' frames differ in shape; not one recording")
    n = min([len(steps)] + [len(a) for a in fields.values()])
    if isinstance(meta.get("steps_on_disk"), int):      # the recorder's count after its last fsync
        n = min(n, max(0, meta["steps_on_disk"]))
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
        self._sync = None           # while recording: brings the steps still on the device to the host

    def _synced(self):
        if self._sync is not None:
            self._sync()

    @property
    def fields(self):
        return self._wanted

    def _field_array(self, name):
        self._synced()
        buf = self._buffers.get(name)
        return buf.array() if buf is not None else np.empty((0,), np.float32)

    def _n(self):            # steps on the host (a recorder's own count: no sync)
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
        self._synced()
        if self._steps is None:
            return np.empty((0,))
        return self._steps[key][~np.isnan(self._steps["timesteps"])][: self._n()]
