"""Files written by ppddpm 0.1–0.4: their per-step columns under today's names, and those they lack
derived from their metadata where that is possible without ppdiffusers.

Those files kept three per-step arrays, `timesteps`, `sigma` (the std of the noise each step added:
today's `noise_std`) and `clip_fraction` (the batch's share, not each sample's: kept as [N, 1]), and
from 0.2 `stages`. Today a run also keeps which call each row is (`call`), ᾱ_t and ᾱ_prev of the
variance-preserving samplers and σ_t of the σ-space ones (`ppddpm.core.columns`). For an old file:

- `call` follows from `every` and the number of step calls (the rows `kept_steps` keeps);
- ᾱ_t, ᾱ_prev, σ_t, σ_prev are read off the float64 reference of its sampler (`ppddpm.reference`,
  numpy only) rebuilt from the config the file keeps, where that reference makes the same calls at
  the same timesteps as the file records;
- the others stay missing, and `Trajectory.column` names them when asked.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ppddpm.storage.format import RENAMED
from ppddpm.storage.meta import MAX_STEP_CALLS


def sampler_family(meta: dict) -> Optional[str]:
    """The sampler family of a run (`meta["sampler"]`); files of 0.1, which do not say, ran DDPM."""
    family = meta.get("sampler")
    if family is None and meta.get("scheduler", "DDPMScheduler") == "DDPMScheduler":
        return "ddpm"
    return family if isinstance(family, str) else None


def set_timesteps_of(meta: dict, family: Optional[str]) -> Optional[int]:
    """The n a run passed to `set_timesteps`: kept since 0.3; before, only the number of step calls was,
    which is n for every sampler that calls its step once per timestep (Heun: 2n − 1 calls; PNDM: not
    known, None)."""
    n = meta.get("set_timesteps")
    if n:
        return n
    calls = meta.get("num_inference_steps")
    if not _count(calls) or family == "pndm":
        return None
    return (calls + 1) // 2 if family == "heun" else calls


def old_file_columns(columns: dict, meta: dict) -> dict:
    """The columns of a 0.1–0.4 file (as read: its names of then) under today's names, with those its
    metadata lets one derive (module docstring)."""
    out = {RENAMED.get(name, name): np.asarray(values) for name, values in columns.items()}
    if "clip_fraction" in out and out["clip_fraction"].ndim == 1:
        out["clip_fraction"] = out["clip_fraction"][:, None]       # the batch's share, not per sample
    n_calls, every, rows = meta.get("num_inference_steps"), meta.get("every", 1), len(out["timesteps"])
    if not (_count(n_calls) and isinstance(every, int) and every >= 1 and rows <= n_calls):
        return out
    every = min(every, n_calls)                   # a larger every keeps the last call alone, as n_calls does
    out["call"] = np.minimum(every * np.arange(1, rows + 1) - 1, n_calls - 1)      # `kept_steps`, as a prefix
    out.update(_from_reference(meta, out["call"], out["timesteps"]))
    return out


def _count(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_STEP_CALLS


def _from_reference(meta: dict, calls: np.ndarray, timesteps: np.ndarray) -> dict:
    """ᾱ_t, ᾱ_prev (VP samplers) or σ_t, σ_prev (σ-space samplers) of each recorded call, from the
    run's float64 reference; {} where it cannot be rebuilt or does not make the file's calls."""
    from ppddpm.reference import SigmaReference, VPReference, reference_for  # lazy: for files of 0.1–0.4 only

    family = sampler_family(meta)
    config = meta.get("scheduler_config")
    n = set_timesteps_of(meta, family)
    if not (isinstance(config, dict) and _count(n)):           # the schema (storage.meta) bounds T
        return {}
    try:
        ref = reference_for(family, config, n, **dict(meta.get("step_arguments") or {}))
    except (NotImplementedError, ValueError, TypeError, KeyError):    # a config or sampler it does not cover
        return {}
    steps = len(ref.timesteps)
    if steps != meta["num_inference_steps"] or not np.allclose(np.asarray(ref.timesteps, np.float64)[calls],
                                                              np.asarray(timesteps, np.float64), rtol=0, atol=1e-3):
        return {}
    if isinstance(ref, SigmaReference):
        level = lambda c: ref.model_sigma(int(c)) if c < steps else 0.0       # noqa: E731  (σ = 0: the end)
        return {"noise_level": [level(c) for c in calls], "noise_level_prev": [level(c + 1) for c in calls]}
    if isinstance(ref, VPReference) and len(getattr(ref, "prev_timesteps", ())) == steps:
        return {"alpha_bar": [ref.alpha_bar(ref.timesteps[c]) for c in calls],
                "alpha_bar_prev": [ref.alpha_bar(ref.prev_timesteps[c]) for c in calls]}
    return {}
