"""Trajectory: the recorded steps of one run as arrays.

Its files: a `.npz` (`Trajectory.save` / `load`; `ppddpm.storage.npz`) or a folder streamed step
by step by `ppddpm.record(store="disk")` (`ppddpm.storage.stream`), which loads complete or cut
short. What fills a Trajectory while a run goes is `ppddpm.storage.writer.TrajectoryWriter`;
what the fields are, `ppddpm.storage.format`; what the per-step columns are, `ppddpm.core.columns`.
Files written by ppddpm 0.1–0.4 load too (`ppddpm.storage.legacy`).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ppddpm._moved import moved_names
from ppddpm.errors import BadValue, Unknown
from ppddpm.storage.format import DECODED_SUFFIX, FIELDS, GUIDANCE_FIELDS, known_field, step_columns
from ppddpm.storage.format import DEFAULT_FIELDS, TrajectoryError  # noqa: F401  (ppddpm.DEFAULT_FIELDS, ppddpm.TrajectoryError)
from ppddpm.storage.legacy import old_file_columns
from ppddpm.storage.npz import read_npz, write_npz
from ppddpm.storage.stream import read_stream


def to_pil(x: np.ndarray):
    """[B, C, H, W] in [-1, 1] → PIL images, exactly as `DDPMPipeline` post-processes its output
    (`DiffusionPipeline.numpy_to_pil`: ×255, rounded, uint8; one channel as mode "L")."""
    from PIL import Image

    x = (np.clip(x / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1) * 255).round().astype("uint8")
    return [Image.fromarray(im.squeeze(), mode="L") if im.shape[-1] == 1 else Image.fromarray(im) for im in x]


class Trajectory:
    """The recorded steps of one sampling run (B samples), oldest first.

    Per-step columns, by name (`columns`, `column(name)`; `ppddpm.core.columns` says what each is):
    `timesteps` [N] (the t of each recorded step: integers, or floats for Euler-type schedulers),
    `stages` [N] ("" or, where a scheduler calls the model more than once per timestep,
    "predictor"/"corrector", "prk1"…"plms"), `noise_std` [N] (std of the noise the step added),
    `clip_fraction` [N, B] (share of each sample's x̂_0 values the step's clipping or thresholding
    changed, measured before it), and the call index, ᾱ_t or σ_t, … that the run's sampler knows;
    each recorded field [N, B, C, H, W] (see `ppddpm.FIELDS`). `meta["scheduler"]` and
    `meta["scheduler_config"]` name the sampler that ran. `images` is the pipeline's final output
    (PIL list) when the last step was recorded.
    """

    def __init__(self, timesteps, fields: dict, noise_std=None, clip_fraction=None, meta: dict = None,
                 images=None, stages=None, columns: dict = None):
        given = dict(columns or {}, timesteps=timesteps)
        given.update({name: values for name, values in (("noise_std", noise_std), ("clip_fraction", clip_fraction),
                                                        ("stages", stages)) if values is not None})
        self.meta = dict(meta or {})
        if "call" not in given:       # built by hand, as in 0.4: `call` and the rest derived as for a file of then
            given = old_file_columns(given, self.meta)
        self._columns = step_columns(given)
        self._fields = dict(fields)
        self._images = images

    def _step_columns(self) -> dict:      # a Trajectory being filled reads its writer's (ppddpm.storage.writer)
        return self._columns

    @property
    def columns(self) -> tuple:
        """The names of the per-step columns this trajectory holds."""
        return tuple(self._step_columns())

    def column(self, name: str) -> np.ndarray:
        """The per-step column `name`: [N], or [N, B] for one kept per sample."""
        columns = self._step_columns()
        if name not in columns:
            raise Unknown(f"column {name!r} is not in this trajectory (it has: {', '.join(columns)}); runs "
                          f"recorded by ppddpm 0.5 or later keep it where their sampler has it")
        return columns[name]

    timesteps = property(lambda self: self.column("timesteps"), doc="[N] the t of each recorded step")
    noise_std = property(lambda self: self.column("noise_std"), doc="[N] the std of the noise each step added")
    clip_fraction = property(lambda self: self.column("clip_fraction"),
                             doc="[N, B] share of each sample's x̂_0 values the step's clipping changed")
    stages = property(lambda self: self.column("stages"), doc="[N] the stage of each step (\"\" for one call)")

    @property
    def sigma(self) -> np.ndarray:
        """Deprecated: `noise_std` (the std of the noise each step added; "σ_t" of Algorithm 2)."""
        warnings.warn("Trajectory.sigma is Trajectory.noise_std, the std of the noise each step added (σ_t of "
                      "Algorithm 2); the old name goes in a later release", DeprecationWarning, stacklevel=2)
        return self.noise_std

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

    def _field_array(self, name):      # a Trajectory being filled reads its writer's
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

    def check_recorded(self):
        """BadValue, said plainly, if the trajectory holds 0 steps — as a streamed run stopped before its
        first recorded step reached the disk loads — for whatever needs at least one step."""
        if not len(self):
            stopped = "" if self.complete else " (its run stopped before its first recorded step reached the disk)"
            raise BadValue(f"the trajectory holds 0 recorded steps{stopped}; there is nothing to show")

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
        """Write one `.npz` (arrays + JSON metadata, `ppddpm.storage.npz`) atomically: no half-written
        file is ever left under `path`."""
        path = Path(path)
        if path.suffix != ".npz":
            raise BadValue(f"trajectory files end in .npz, got {path.name!r}")
        write_npz(path, self._step_columns(), {name: self.field(name) for name in self.fields}, self.meta)
        return path

    @classmethod
    def load(cls, path) -> "Trajectory":
        """Load a `.npz` written by `save`, or a folder streamed by `record(store="disk")` (those of
        ppddpm 0.1–0.4 too: their columns named as today, those they lack derived where their
        metadata allows, `ppddpm.storage.legacy`)."""
        path = Path(path)
        parts = read_stream(path) if os.path.isdir(path) else read_npz(path)     # isdir: False on any OSError
        columns, meta = parts["columns"], parts["meta"]
        if "step_columns" not in meta:
            columns = old_file_columns(columns, meta)
        return cls(columns["timesteps"], parts["fields"], meta=meta, columns=columns)

    def with_fields(self, fields: dict, meta: dict) -> "Trajectory":
        """The same steps (columns, images) with other `fields` and `meta`: a view of this run, such as
        its latents decoded to pixels."""
        return Trajectory(self.timesteps, fields, meta=meta, images=self.images, columns=self._step_columns())


# 0.3 names that live elsewhere now (ppddpm/_moved.py): answered with a DeprecationWarning
__getattr__ = moved_names(__name__)
