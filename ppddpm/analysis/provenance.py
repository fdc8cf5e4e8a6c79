"""What a recorded run is, checked before `ppddpm.verify` vouches for it: its sampler, its step formula,
its storage, whether it is whole, whether its steps follow one another, and whether its noise is noise.

A file's metadata is a claim anyone can edit. `verify` replays each step through the float64
reference of a sampler; these checks make sure that the sampler, the rounding and the run it
replays are the ones the arrays show, and say what they could not check instead of passing it:

- the family is derived from the scheduler's class name (`ppddpm.core.adapters.ADAPTERS` know
  their classes); a `sampler` field that disagrees is a finding, and so is a `variant` (step
  formula) registered for another family (`ppddpm.variants.registry`);
- the unit roundoff comes from the frames' dtype, never from `meta["dtype"]`; a disagreement is a finding;
- a file that says `complete` holds every step its schedule records (the reference's calls, `every`);
- the chain: a sampling loop hands each step's x_{t−1} to the next call as its x_t (every family's
  loop does, Heun's and KDPM2's predictor → corrector included, and a latent pipeline's rows of
  its batch), so where two consecutive calls are recorded, x_t of the later is bitwise the x_{t−1}
  of the earlier (both stored in one dtype, they round alike);
- non-finite values fail, naming the step and the field;
- the noise z of each step that adds noise (the reference's σ > 0 — never judged from the file,
  which records zeros or an unused draw where none is added) is tested against N(0, I): see `noise_test`.
  Measured on honest runs of every family that adds noise (DDPM, DDIM η=1, Euler ancestral,
  SDE-DPM-Solver++, KDPM2 ancestral, DPM-Solver-SDE, LCM; 60 seeds each, 10 steps, batch 2 of 8x8,
  4 380 step tests): no run failed; the smallest per-step p was 5.5e-5 against a threshold of ~5e-8,
  and p < 0.01 at 1.7–2.0 % of the steps, p < 0.05 at 8–10 % — what the smaller of two uniform
  p-values gives (2 %, 10 %): the test is calibrated, and its false-alarm rate is NOISE_ALPHA.
"""
from __future__ import annotations

import math
from typing import List, NamedTuple, Optional

import numpy as np

from ppddpm.analysis.ab import UNIT_ROUNDOFF
from ppddpm.core.adapters import ADAPTERS
from ppddpm.errors import BadValue, Unknown, Unsupported
from ppddpm.reference import REFERENCES
from ppddpm.storage.format import FIELDS
from ppddpm.variants.registry import get_variant, parse_spec

ROUNDOFF = {"float16": 2.0 ** -11, "float32": UNIT_ROUNDOFF}
# a step computes in float32 at best: frames stored wider (ppddpm never writes them) carry float32's roundings
COMPUTED_AT_MOST = "float32"
NOISE_ALPHA = 1e-6     # the chance that an honest run (z i.i.d. N(0, 1)) fails the noise test, over all its tests
FAMILY_OF_CLASS = {name: a.family for a in ADAPTERS for name in a.classes}


class Sampler(NamedTuple):
    family: str
    findings: List[str]       # what the metadata claims that the run is not
    unchecked: List[str]      # what the metadata says that could not be checked


def sampler_of(traj) -> Sampler:
    """The run's sampler family, derived from its scheduler's class name; the `sampler` field is only
    believed for a class ppddpm does not know by name (a subclass), and that is said."""
    config = traj.meta.get("scheduler_config")
    if not isinstance(config, dict):
        raise BadValue("this trajectory does not carry its scheduler's config (meta['scheduler_config']); "
                       "verify needs it to rebuild the sampler")
    claimed = traj.meta.get("sampler")
    derived = FAMILY_OF_CLASS.get(traj.scheduler)
    findings, unchecked = [], []
    if derived is None:
        derived = claimed
        if derived in REFERENCES:
            unchecked.append(f"the scheduler class {traj.scheduler} is not one ppddpm knows by name (a subclass?): "
                             f"its family {derived!r} is the file's own `sampler` field")
    elif claimed is not None and claimed != derived:
        findings.append(f"the metadata's sampler {claimed!r} is not the family of its scheduler {traj.scheduler} "
                        f"({derived!r}); replayed as {derived}")
    if derived not in REFERENCES:
        raise Unsupported(f"verify has no float64 reference for {traj.scheduler} (sampler {derived!r}); "
                          f"it has one for {', '.join(REFERENCES)}")
    _check_variant(str(traj.meta.get("variant") or "ppdiffusers"), derived, findings, unchecked)
    return Sampler(derived, findings, unchecked)


def _check_variant(spec: str, family: str, findings: list, unchecked: list):
    """A step formula `spec` registered for other families than `family` is a finding; one not registered
    here (a function of the recording session's own) is said to be unchecked."""
    try:
        families = get_variant(parse_spec(spec)[0]).families
    except (BadValue, Unknown):
        unchecked.append(f"the step formula {spec!r} is not a registered variant here: which samplers it belongs "
                         f"to is not checked (its steps are replayed as {family}'s)")
        return
    if families is not None and family not in families:
        findings.append(f"the metadata's variant {spec!r} is a step formula of {', '.join(families)}, not of "
                        f"{family}: it cannot have run on this scheduler")


def storage_roundoff(traj) -> tuple:
    """(unit roundoff, findings): the coarsest dtype the frames are stored in, read from the arrays;
    the metadata's `dtype` that says otherwise is a finding."""
    stored = sorted({np.dtype(traj.field(name).dtype).name for name in traj.fields}, key=_roundoff)
    coarsest = stored[-1] if stored else COMPUTED_AT_MOST
    findings = []
    claimed = traj.meta.get("dtype")
    if claimed is not None and [claimed] != stored:
        findings.append(f"the metadata says the frames are stored as {claimed}, but they are {', '.join(stored)}")
    return _roundoff(coarsest), findings


def _roundoff(dtype: str) -> float:
    return ROUNDOFF.get(dtype, ROUNDOFF[COMPUTED_AT_MOST])


def completeness(traj, kept: int) -> tuple:
    """(findings, unchecked) of the run's length: `kept` rows are what its schedule records with its `every`."""
    if traj.complete and len(traj) != kept:
        return [f"the metadata says the run is complete, but the file holds {len(traj)} of the {kept} recorded "
                f"steps its schedule makes"], []
    if not traj.complete:
        return [], [f"the run is not complete: {len(traj)} of its {kept} recorded steps are in the file, the rest "
                    f"is not checked"]
    return [], []


def nonfinite(traj, r: int) -> List[str]:
    """The fields and per-step columns of recorded row r that hold a NaN or an infinity."""
    bad = [name for name in traj.fields if name in FIELDS and not np.isfinite(traj.field(name)[r]).all()]
    return bad + [name for name in traj.columns if name != "stages" and not np.isfinite(traj.column(name)[r]).all()]


def chain_gap(traj, r: int, calls) -> Optional[float]:
    """max |x_t of row r − x_{t−1} of row r − 1| where the two rows are consecutive calls (None where they are
    not, or r is the first row): 0 in any run of one sampling loop."""
    if r == 0 or calls[r] != calls[r - 1] + 1:
        return None
    x_t, before = traj.sample[r], traj.prev_sample[r - 1]
    if np.array_equal(x_t, before):
        return 0.0
    gap = np.abs(np.asarray(x_t, np.float64) - np.asarray(before, np.float64)).max()
    return float(gap) if np.isfinite(gap) else math.inf


def noise_test(z_rows: list) -> tuple:
    """The recorded noise of the steps that add some, against z ~ N(0, I) i.i.d.: per step and pooled over
    all of them, a two-sided test of the mean (√n·mean(z) ~ N(0, 1)) and of the variance (Σz² ~ χ²_n),
    exact p-values; Bonferroni over the 2·(steps + 1) tests, so an honest run fails with probability at
    most NOISE_ALPHA. Returns ([per step: {"mean", "mean_square", "p", "holds"}], pooled dict or None)."""
    if not z_rows:
        return [], None
    threshold = NOISE_ALPHA / (2 * (len(z_rows) + 1))
    per_step = [_moments(np.asarray(z, np.float64).ravel(), threshold) for z in z_rows]
    n = sum(np.size(z) for z in z_rows)
    pooled = _pooled(per_step, n, threshold)
    pooled.update(test="mean: √n·mean(z) ~ N(0, 1); variance: Σz² ~ χ²_n; both two-sided, per step and pooled",
                  alpha=NOISE_ALPHA, per_test_threshold=threshold, steps=len(z_rows), values=n)
    return per_step, pooled


def _moments(z: np.ndarray, threshold: float) -> dict:
    n = z.size
    if not np.isfinite(z).all():
        return {"mean": math.nan, "mean_square": math.nan, "p": 0.0, "holds": False, "n": n, "sum": math.nan,
                "sum_squares": math.nan}
    total, squares = float(z.sum()), float((z * z).sum())
    p = _p_value(total, squares, n)
    return {"mean": total / n, "mean_square": squares / n, "p": p, "holds": p >= threshold, "n": n,
            "sum": total, "sum_squares": squares}


def _pooled(per_step: list, n: int, threshold: float) -> dict:
    total, squares = sum(s["sum"] for s in per_step), sum(s["sum_squares"] for s in per_step)
    if not (math.isfinite(total) and math.isfinite(squares)):
        return {"mean": math.nan, "mean_square": math.nan, "p": 0.0, "holds": False}
    p = _p_value(total, squares, n)
    return {"mean": total / n, "mean_square": squares / n, "p": p,
            "holds": p >= threshold and all(s["holds"] for s in per_step)}


def _p_value(total: float, squares: float, n: int) -> float:
    """The smaller two-sided p-value of the mean test and of the χ² variance test (times 2 for both sides)."""
    from scipy.special import chdtr, chdtrc

    p_mean = math.erfc(abs(total) / math.sqrt(2.0 * n))
    p_var = 2.0 * min(float(chdtr(n, squares)), float(chdtrc(n, squares)))
    return min(p_mean, p_var, 1.0)
