"""What a trajectory holds, whichever file it is in: the step fields, the per-step numbers, the
format's name and version, and the checks every reader makes before it trusts a file.

One vocabulary from the step to the file: a field is named as `scheduler.step` names its output
(`prev_sample`, `pred_original_sample`), and so are `ppddpm.core.records.StepRecord`'s attributes,
the Trajectory's arrays and the files' members.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ppddpm.errors import BadValue

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
NUMBERS = ("timesteps", "sigma", "clip_fraction")      # one per recorded step, beside the frames (and `stages`)

FORMAT = "ppddpm.trajectory"       # the format name in every file since 0.1 (not a module path: files stay)
FORMAT_VERSION = 1
STORES = ("memory", "disk")
DTYPES = ("float32", "float16")
STAGES = ("", "predictor", "corrector", "prk1", "prk2", "prk3", "prk4", "plms")   # codes in streamed steps.npy


class TrajectoryError(BadValue):
    """A file that is not a ppddpm trajectory, or a truncated / corrupt one."""


def known_field(name: str) -> bool:
    """A step field, a guidance field, or either decoded to pixels (NAME_decoded)."""
    base = name[: -len(DECODED_SUFFIX)] if name.endswith(DECODED_SUFFIX) else name
    return base in FIELDS or base in GUIDANCE_FIELDS


def timestep_value(t):
    """One timestep as a Python int (DDPM, DDIM, …) or float (Euler-type schedulers); `t` may be a
    number, a numpy scalar or a 0-d tensor."""
    value = t.item() if hasattr(t, "item") else t
    return int(value) if float(value).is_integer() else float(value)


def timestep_array(timesteps) -> np.ndarray:
    """int64 when every t is a whole number (DDPM, DDIM, …), float64 otherwise (Euler-type)."""
    t = np.asarray(timesteps, np.float64)
    return t.astype(np.int64) if np.all(t == np.round(t)) else t


def step_numbers(timesteps, sigma, clip_fraction, stages=None) -> dict:
    """The per-step arrays as a Trajectory holds them: `timesteps` (`timestep_array`), `sigma` float64,
    `clip_fraction` float32, `stages` names ("" for each step where not given)."""
    t = timestep_array(timesteps)
    return {"timesteps": t, "sigma": np.asarray(sigma, np.float64),
            "clip_fraction": np.asarray(clip_fraction, np.float32),
            "stages": np.asarray([""] * len(t) if stages is None else stages, str)}


def stage_code(stage: str) -> int:
    """A stage's code in a streamed `steps.npy` (-1: a stage this version does not know)."""
    return STAGES.index(stage) if stage in STAGES else -1


def stage_names(codes) -> np.ndarray:
    """Codes back to names; "?" for a code outside `STAGES`."""
    return np.asarray([STAGES[int(c)] if 0 <= c < len(STAGES) else "?" for c in codes], str)


def field_names(path, meta: dict) -> list:
    """The recorded fields a file's metadata lists, each one a known field."""
    names = meta.get("fields", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and known_field(n) for n in names):
        raise TrajectoryError(f"{path}: its metadata's fields must be a list of {', '.join(FIELDS)}, "
                              f"{', '.join(GUIDANCE_FIELDS)} or NAME{DECODED_SUFFIX}, got {names!r}")
    return names


def check_shapes(path, timesteps, per_step: list, fields: dict):
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
