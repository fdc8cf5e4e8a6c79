"""Trajectory: the recorded steps of one run as arrays.

Its files: a `.npz` (`Trajectory.save` / `load`; `ppddpm.storage.npz`) or a folder streamed step
by step by `ppddpm.record(store="disk")` (`ppddpm.storage.stream`), which loads complete or cut
short. What fills a Trajectory while a run goes is `ppddpm.storage.writer.TrajectoryWriter`;
what the fields and numbers are, `ppddpm.storage.format`. Files written by ppddpm 0.1 load too.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ppddpm._moved import moved_names
from ppddpm.errors import BadValue, Unknown
from ppddpm.storage.format import DECODED_SUFFIX, FIELDS, GUIDANCE_FIELDS, known_field, step_numbers
from ppddpm.storage.format import DEFAULT_FIELDS, TrajectoryError  # noqa: F401  (ppddpm.DEFAULT_FIELDS, ppddpm.TrajectoryError)
from ppddpm.storage.npz import read_npz, write_npz
from ppddpm.storage.stream import read_stream


def to_pil(x: np.ndarray):
    """[B, C, H, W] in [-1, 1] → PIL images, exactly as `DDPMPipeline` post-processes its output."""
    from ppdiffusers import DiffusionPipeline

    x = np.clip(x / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    return DiffusionPipeline.numpy_to_pil(x)


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
        self._numbers = step_numbers(timesteps, sigma, clip_fraction, stages)
        self._fields = dict(fields)
        self.meta = dict(meta)
        self._images = images

    def _numbers_array(self, key):      # a Trajectory being filled reads its writer's (ppddpm.storage.writer)
        return self._numbers[key]

    timesteps = property(lambda self: self._numbers_array("timesteps"), doc="[N] the t of each recorded step")
    sigma = property(lambda self: self._numbers_array("sigma"), doc="[N] σ_t, the std of the noise the step added")
    clip_fraction = property(lambda self: self._numbers_array("clip_fraction"),
                             doc="[N] share of x̂_0's values outside the clipping range, before clipping")
    stages = property(lambda self: self._numbers_array("stages"), doc="[N] the stage of each step (\"\" for one call)")

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
        numbers = {"timesteps": self.timesteps, "sigma": self.sigma, "clip_fraction": self.clip_fraction,
                   "stages": self.stages}
        write_npz(path, numbers, {name: self.field(name) for name in self.fields}, self.meta)
        return path

    @classmethod
    def load(cls, path) -> "Trajectory":
        """Load a `.npz` written by `save`, or a folder streamed by `record(store="disk")`."""
        path = Path(path)
        return cls(**(read_stream(path) if os.path.isdir(path) else read_npz(path)))   # isdir: False on any OSError


# 0.3 names that live elsewhere now (ppddpm/_moved.py): answered with a DeprecationWarning
__getattr__ = moved_names(__name__)
