"""Hold a recorded run against the paper: replay every recorded step through the float64 reference.

    report = ppddpm.verify(traj)            # a Trajectory, or the path of a .npz / streamed folder
    print(report.table()); report.ok; report.first_departure; report.unchecked

Each recorded step's inputs — x_t, the model output ε̂ and the noise z it added, as recorded —
go through the float64 reference of the run's sampler (`ppddpm.reference`, written from the
papers and independent of ppdiffusers), and its x̂_0 (as used and before clipping) and x_{t−1}
are compared with the recorded ones, and so is σ_t, the std of the noise the step added. The
scheduler's config and the step's arguments (η, …)
come from the trajectory's metadata, so this checks whatever ran: another device, float16, a
patched step formula (`ppddpm.patch_step`), a new ppdiffusers release.

What the run is comes first (`ppddpm.analysis.provenance`): the sampler is derived from the
scheduler's class, the rounding from the frames' dtype, "complete" from the schedule; each
recorded x_t must be the x_{t−1} of the call before it (where both are recorded), no value may
be NaN or infinite, and the noise must be N(0, I). A claim of the metadata that the arrays
contradict is a finding (`findings`, the run fails); what could not be checked — a field not
recorded, steps between recorded ones, x_T, a class or step formula ppddpm does not know — is
said (`unchecked`; `ok_strict` fails on it), never passed silently.

Bound, per element. The recorded step computed in float32 from float32 tables; the reference computes the
same real numbers in float64. As in `ppddpm.analysis.ab`, a step rounds ~10 times and its coefficients
are consistent only up to a rounding of ᾱ_t, which 1/(1 − ᾱ_t) amplifies where 1 − ᾱ_t cancels
(small t); and ppdiffusers' ᾱ_t is a float32 product of t + 1 factors, whose relative error d_t
(the largest for s ≤ t, measured on numpy's float32 product of the same betas: ~11u for the linear
schedule) every coefficient inherits. With u the unit roundoff of the stored frames (2⁻²⁴ for float32,
2⁻¹¹ for float16), at each element e:
    |Δ_e| ≤ (K · u + 4 · d_t) / (1 − ᾱ_t) · a_e,   a_e = |x_t|_e + s_t · |ε̂|_e + σ_t · |z|_e + 1,   K = K_ROUNDINGS,
s_t = σ_t^EDM = √((1−ᾱ_t)/ᾱ_t) for the σ-space samplers (x̂_0 = x − σ·ε scales ε̂ by it), else 1.
Each rounding of a step is relative to the terms it combines, and every sampler's step combines,
at element e, only values at element e: x_t, ε̂, z of the call, and, for the multistep samplers,
those of earlier calls at the same element (LMS's last derivatives, PLMS's ε of a Runge–Kutta
call up to HISTORY_CALLS calls back, DPM-Solver's kept x̂_0, Heun's and KDPM2's predictor state),
so a_e is the largest a_e over the call and those HISTORY_CALLS before it. The one exception is
dynamic thresholding (Imagen): its threshold s ≥ 1 is a quantile of the sample's |x̂_0|, so an
error δs moves every element of x̂_0 / s by at most δs, which carries the rounding of the
quantile's elements: with `thresholding` on, a_e gains the largest a over its sample. So one
element's size — an ε̂ pixel at 1e30 — widens the bound at that element (and, with thresholding,
in its sample) only: it cannot buy room elsewhere, as a bound on the global max|ε̂| did.
The x̂_0 gaps are held against the same bound divided by √ᾱ_t in the variance-preserving samplers
(eq. 15 divides by √ᾱ_t) and against it as it is in σ-space (x̂_0 = x − σ·ε, already in x's
units). A step "holds" when every element of the three is within its bound (and the checks above pass);
`ratio` is the largest gap over its bound, `gaps`/`bounds` the gap and bound at that element.
NaN or ∞ is never within a bound. Measured on honest runs of every family (tests/test_verify.py's
tiny UNet at 2, 3, 4, 7, 20 and 50 steps, several seeds; docs/verify_findings.py's bundled model at
50): the worst step stays at or below 0.41 of its bound. The one exception known is DPM-Solver-3
singlestep at 2 steps (4.4x at its second call, which steps from t = 999 to the end at once; 15x
under 0.4's global bound): a step that long amplifies the float32 rounding of σ near t = 0, which
1 − ᾱ_t at the call's own t does not see.

x_T. The first recorded input (when call 0 was recorded) must spread like init_noise_sigma · z:
its standard deviation over n values is held against the reference's init_noise_sigma within
5 standard errors of a sample standard deviation (1/√(2n) relative): a statistical check, which
tells an unscaled σ-space start (1.2–2.6x off) from a right one at a batch of 8x8 images or more.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ppddpm._io import atomic_path
from ppddpm._moved import moved_names
from ppddpm.analysis.ab import K_ROUNDINGS
from ppddpm.analysis.provenance import (ROUNDOFF, chain_gap, completeness, noise_test, nonfinite, sampler_of,
                                        storage_roundoff)
from ppddpm.core.adapters import in_sigma_space
from ppddpm.core.recorder import kept_steps
from ppddpm.errors import BadValue, Unsupported
from ppddpm.reference import reference_for
from ppddpm.reference.schedules import betas_from_config
from ppddpm.storage.legacy import set_timesteps_of
from ppddpm.storage.meta import check_meta
from ppddpm.storage.trajectory import Trajectory

UNIT_ROUNDOFF_FLOAT16 = ROUNDOFF["float16"]
X_T_STANDARD_ERRORS = 5.0
DRIFT_MARGIN = 4.0         # on the float32 ᾱ's measured drift (see _check)
SIGMA_RTOL = 2e-4          # σ's relative tolerance (see _check); measured ≤ 8.3e-5 over every family
# calls back whose values a step combines at one element: PNDM's first PLMS call uses the ε of the first
# Runge–Kutta call, 12 calls before; LMS's order 4 reaches 3 back, DPM-Solver / UniPC / DEIS 2, Heun / KDPM2 1
HISTORY_CALLS = 12


# what a replay compares, named as StepRecord, the Trajectory and the reference's step name them
CHECKED = ("prev_sample", "pred_original_sample", "pred_original_sample_unclipped", "noise_std")


@dataclass
class StepCheck:
    """One recorded step replayed: per quantity of `CHECKED`, |recorded − reference| at the element where it is
    largest against its bound (`gaps`; NaN where the field was not recorded, ∞ where it is not finite) and that
    element's bound (`bounds`: x_{t−1}'s float32 bound; x̂_0's, that / √ᾱ_t in the variance-preserving samplers;
    σ's, relative to σ). `nonfinite`: the fields and numbers of the step holding NaN/∞; `chain`: max |x_t − the
    x_{t−1} of the call before| (None where that call was not recorded); `noise`: the N(0, I) test of the z of
    a step that adds noise (`ppddpm.analysis.provenance.noise_test`; None where it adds none)."""
    row: int                  # index in the trajectory
    call: int                 # index of the step call in the run
    t: float
    stage: str
    gaps: Dict[str, float]
    bounds: Dict[str, float]
    nonfinite: List[str] = field(default_factory=list)
    chain: Optional[float] = None
    noise: Optional[dict] = None

    @property
    def ratio(self) -> float:
        return max((g / self.bounds[name] for name, g in self.gaps.items() if not math.isnan(g)), default=0.0)

    @property
    def holds(self) -> bool:
        return self.ratio <= 1.0 and not self.nonfinite and (self.chain is None or self.chain == 0.0) and \
            (self.noise is None or self.noise["holds"])

    def why(self) -> str:
        """Why the step departs (the first reason), or "" when it holds."""
        if self.nonfinite:
            return f"non-finite values (NaN/Inf) in {', '.join(self.nonfinite)}"
        if self.ratio > 1.0:
            return f"{self.ratio:.3g}x its float32 bound"
        if self.chain is not None and self.chain != 0.0:
            return (f"its x_t is not the x_{{t−1}} of the call before (max |Δ| {self.chain:.3g}): the steps are "
                    f"not one run's")
        if self.noise is not None and not self.noise["holds"]:
            return (f"its noise z is not N(0, I) (mean {self.noise['mean']:.3g}, mean square "
                    f"{self.noise['mean_square']:.3g}, p = {self.noise['p']:.2g})")
        return ""


@dataclass
class VerifyReport:
    family: str
    scheduler: str
    variant: str
    steps: List[StepCheck]
    x_T: Optional[dict] = None           # {"std", "init_noise_sigma", "tolerance", "holds"} when call 0 was recorded
    meta: dict = field(default_factory=dict)
    findings: List[str] = field(default_factory=list)     # what the metadata claims and the arrays contradict
    unchecked: List[str] = field(default_factory=list)    # what could not be checked, said instead of passed
    noise: Optional[dict] = None         # the noise test pooled over every step that adds noise (noise_test)

    @property
    def ok(self) -> bool:
        return all(s.holds for s in self.steps) and (self.x_T is None or self.x_T["holds"]) and \
            not self.findings and (self.noise is None or self.noise["holds"])

    @property
    def ok_strict(self) -> bool:
        """`ok`, and nothing left unchecked."""
        return self.ok and not self.unchecked

    @property
    def first_departure(self) -> Optional[StepCheck]:
        return next((s for s in self.steps if not s.holds), None)

    def summary(self) -> str:
        head = f"{self.scheduler} ({self.family}, step formula {self.variant!r}): {len(self.steps)} recorded steps"
        tail = f"; {len(self.unchecked)} thing(s) not checked ({self.unchecked[0]})" if self.unchecked else ""
        return head + self._verdict() + tail

    def _verdict(self) -> str:
        if self.findings:
            more = f" (and {len(self.findings) - 1} more)" if len(self.findings) > 1 else ""
            return f"; the run is not what its file says: {self.findings[0]}{more}"
        if self.x_T is not None and not self.x_T["holds"]:
            return (f"; x_T departs: std {self.x_T['std']:.4g}, the reference starts from init_noise_sigma "
                    f"{self.x_T['init_noise_sigma']:.4g} (tolerance ±{self.x_T['tolerance']:.0%})")
        bad = self.first_departure
        if bad is not None:
            n_bad = sum(not s.holds for s in self.steps)
            return (f"; {n_bad} depart from the float64 reference, first at step {bad.call} (t={bad.t:g}"
                    f"{', ' + bad.stage if bad.stage else ''}): {bad.why()}")
        if self.noise is not None and not self.noise["holds"]:
            noise = self.noise
            return (f"; the noise of its {noise['steps']} noisy steps is not N(0, I): mean {noise['mean']:.3g}, "
                    f"mean square {noise['mean_square']:.3g} (p = {noise['p']:.2g})")
        worst = max((s.ratio for s in self.steps), default=0.0)
        return f" hold against the float64 reference (worst step at {worst:.2g} of its float32 bound)"

    def table(self, limit: int = 12) -> str:
        """The summary, the findings and what was not checked, then per step the gaps and bounds (the first
        `limit` rows and every departing one)."""
        lines = [self.summary()] + [f"finding: {f}" for f in self.findings] + \
            [f"not checked: {u}" for u in self.unchecked]
        if self.x_T is not None:
            lines.append(f"x_T: std {self.x_T['std']:.4g} vs init_noise_sigma {self.x_T['init_noise_sigma']:.4g} "
                         f"(±{self.x_T['tolerance']:.0%}): {'holds' if self.x_T['holds'] else 'DEPARTS'}")
        if self.noise is not None:
            lines.append(f"noise: {self.noise['steps']} steps add some; pooled mean {self.noise['mean']:.3g}, mean "
                         f"square {self.noise['mean_square']:.3g} vs N(0, 1), p = {self.noise['p']:.2g} (fails below "
                         f"{self.noise['per_test_threshold']:.2g}): {'holds' if self.noise['holds'] else 'DEPARTS'}")
        lines.append(f"{'step':>5} {'t':>8} {'stage':>9} {'|Δx_t-1|':>10} {'bound':>9} {'|Δx̂_0|':>10} "
                     f"{'|Δx̂_0 raw|':>11} {'bound':>9}  {'ratio':>7}")
        shown = [s for k, s in enumerate(self.steps) if k < limit or not s.holds]
        for s in shown:
            g, b = s.gaps, s.bounds
            lines.append(f"{s.call:>5} {s.t:>8g} {s.stage:>9} {_num(g['prev_sample']):>10} {b['prev_sample']:>9.2e} "
                         f"{_num(g['pred_original_sample']):>10} {_num(g['pred_original_sample_unclipped']):>11} "
                         f"{b['pred_original_sample']:>9.2e}  {s.ratio:>7.3g}"
                         f"{'' if s.holds else '  DEPARTS: ' + s.why()}")
        if len(shown) < len(self.steps):
            lines.append(f"… {len(self.steps) - len(shown)} more steps, all within their bound")
        return "\n".join(lines)

    def to_json(self) -> dict:
        first = self.first_departure
        return {"ok": self.ok, "ok_strict": self.ok_strict, "family": self.family, "scheduler": self.scheduler,
                "variant": self.variant, "findings": self.findings, "unchecked": self.unchecked,
                "first_departure": None if first is None else {"step": first.call, "t": first.t, "stage": first.stage,
                                                               "why": first.why()},
                "x_T": _json_dict(self.x_T), "noise": _json_dict(self.noise), "summary": self.summary(),
                "tolerance": {"unit_roundoff": self.meta.get("unit_roundoff"), "K": K_ROUNDINGS,
                              "history_calls": HISTORY_CALLS,
                              "bound": "per element: (K·u + 4·d_t)/(1−ᾱ_t)·(|x_t| + s_t·|ε̂| + σ_t·|z| + 1), the "
                                       "largest over the call and HISTORY_CALLS before it (multistep samplers), plus "
                                       "its sample's largest (thresholding); x̂_0: that / √ᾱ_t (VP samplers)"},
                "steps": [{"step": s.call, "t": s.t, "stage": s.stage,
                           "gaps": {name: _json_num(g) for name, g in s.gaps.items()}, "bounds": s.bounds,
                           "ratio": _json_num(s.ratio), "holds": s.holds, "nonfinite": s.nonfinite,
                           "chain": None if s.chain is None else _json_num(s.chain), "noise": _json_dict(s.noise)}
                          for s in self.steps]}


def _num(x) -> str:
    return "—" if math.isnan(x) else f"{x:.2e}"


def _json_num(x):
    """A number for strict JSON: NaN (not recorded) and ∞ (not finite) have no JSON form, so None."""
    return x if math.isfinite(x) else None


def _json_dict(d: Optional[dict]):
    return None if d is None else {k: _json_num(v) if isinstance(v, float) else v for k, v in d.items()}


def verify(traj) -> VerifyReport:
    """Replay every recorded step of `traj` (a Trajectory or a path) through the float64 reference
    of its sampler and report, per step, the gaps of x̂_0 and x_{t−1} against their float32 bound,
    after checking what the run is (module docstring)."""
    if isinstance(traj, (str, Path)):
        traj = Trajectory.load(traj)
    else:                                     # files are checked by their readers; a Trajectory made in memory here
        check_meta("the trajectory", traj.meta, required=())
    sampler = sampler_of(traj)
    _check_fields(traj)
    ref = _reference(traj, sampler.family, traj.meta["scheduler_config"])
    if ref.stochastic and "noise" not in traj.fields:
        raise BadValue(f"{ref.family} adds noise: record the 'noise' field too (fields='all') to verify it")
    calls, kept = _recorded_calls(traj, ref)
    u, stored = storage_roundoff(traj)
    length, unfinished = completeness(traj, kept)
    with np.errstate(all="ignore"):          # NaN and ∞ in a file are findings, not warnings
        if ref.multistep:
            rows = _replay_all(traj, ref, calls)
        else:
            rows = [ref.step(i, *_inputs(traj, r)) for r, i in enumerate(calls)]
        steps = _check_all(traj, ref, calls, rows, sampler.family, u)
    noise = _check_noise(traj, steps, rows)
    return VerifyReport(family=sampler.family, scheduler=traj.scheduler,
                        variant=str(traj.meta.get("variant") or "ppdiffusers"), steps=steps,
                        x_T=_check_x_T(traj, ref, calls), meta={"unit_roundoff": u},
                        findings=sampler.findings + stored + length, noise=noise,
                        unchecked=sampler.unchecked + unfinished + _not_checked(traj, calls))


def _check_fields(traj):
    missing = [f for f in ("sample", "model_output", "prev_sample") if f not in traj.fields]
    if missing:
        raise BadValue(f"verify replays each step from its recorded inputs, and this run lacks {', '.join(missing)}: "
                       f"record with fields='all' (CLI: ppddpm sample --all-fields)")
    if len(traj) == 0:
        raise BadValue("this trajectory holds no recorded step")


def _not_checked(traj, calls) -> List[str]:
    """What this recording leaves out of the checks: x̂_0 not recorded, x_T, the chain across unrecorded calls."""
    out = [f"{name} is not recorded, so that x̂_0 is not compared" for name in CHECKED[1:3] if name not in traj.fields]
    if calls[0] != 0:
        out.append("x_T (the first call's input) is not recorded, so the start is not checked")
    gaps = int(np.sum(np.diff(calls) != 1))
    if gaps:
        out.append(f"the run kept one step call in {traj.meta.get('every')} (every): whether each recorded x_t follows "
                   f"from the recorded step before is not checked across the {gaps} gap(s) between them")
    return out


def _reference(traj, family, config):
    n = set_timesteps_of(traj.meta, family)
    if n is None:
        raise BadValue("this run was recorded before ppddpm 0.3, which did not keep the number of timesteps asked "
                       "for (a PNDM run's steps do not tell it); record it again to verify it")
    arguments = dict(traj.meta.get("step_arguments") or {})
    try:
        return reference_for(family, config, int(n), **arguments)
    except NotImplementedError as exc:
        raise Unsupported(f"the float64 reference of {family} does not cover this run: {exc}") from None
    except ValueError as exc:                 # a step argument the formula does not take, or a grid it cannot make
        raise BadValue(f"the float64 reference of {family} cannot replay this run: {exc}") from None


def _recorded_calls(traj, ref) -> tuple:
    """(the call index of each recorded row, how many rows the whole run records): `every` keeps calls
    every−1, 2·every−1, … and the last of the reference's calls."""
    n_calls = int(traj.meta.get("num_inference_steps", len(ref.timesteps)))
    if n_calls != len(ref.timesteps):
        raise BadValue(f"the run made {n_calls} step calls, but the reference of its sampler makes "
                       f"{len(ref.timesteps)} for the same config: not a run of this scheduler's own loop")
    kept = kept_steps(n_calls, int(traj.meta.get("every", 1)))
    if len(traj) > len(kept):
        raise BadValue(f"the file holds {len(traj)} recorded steps, more than the {len(kept)} its schedule makes "
                       f"with every={traj.meta.get('every', 1)}: not one run")
    calls = kept[: len(traj)]
    recorded_t = np.asarray(traj.timesteps, np.float64)
    expected_t = np.asarray(ref.timesteps, np.float64)[calls]
    close = np.isclose(recorded_t, expected_t, rtol=0, atol=1e-3)
    if not close.all():
        k = int(np.argmax(~close))
        raise BadValue(f"recorded timestep {recorded_t[k]:g} at step {calls[k]} is not the reference's "
                       f"{expected_t[k]:g}: the run's schedule is not the one its config describes")
    return calls, len(kept)


def _inputs(traj, r):
    """(model output, x_t, z) of recorded row r, in float64; z None where it was not recorded (a step that
    adds none records zeros, and the reference multiplies z by its own σ, 0 there)."""
    noise = traj.noise[r] if "noise" in traj.fields else None
    return (np.asarray(traj.model_output[r], np.float64), np.asarray(traj.sample[r], np.float64),
            None if noise is None else np.asarray(noise, np.float64))


def _replay_all(traj, ref, calls):
    if not np.array_equal(calls, np.arange(len(calls))):
        raise BadValue(f"verify replays {ref.family} call by call (each step uses the ones before it): record "
                       f"with every=1 (this run kept every {traj.meta.get('every')})")
    return [ref.step(r, *_inputs(traj, r)) for r in range(len(calls))]


def _alpha_bar_at(config, timesteps):
    """(ᾱ, drift) at each call's t, linear in t between the integer training steps: ᾱ in float64, and
    the relative error of ᾱ_s for s ≤ t when it is a float32 product, as ppdiffusers computes it (redone
    here in numpy: its size, not its bits)."""
    betas = betas_from_config(config)
    ab = np.cumprod(1.0 - betas)
    ab32 = np.cumprod((1.0 - betas).astype(np.float32), dtype=np.float32).astype(np.float64)
    drift = np.maximum.accumulate(np.abs(ab32 / ab - 1.0))
    t, grid = np.asarray(timesteps, np.float64), np.arange(len(ab))
    return np.interp(t, grid, ab), np.interp(t, grid, drift)


def _check_all(traj, ref, calls, rows, family, u) -> List[StepCheck]:
    """Every recorded row checked, each element's bound from its own terms (module docstring): the terms a_e
    of the last HISTORY_CALLS rows are kept for the multistep samplers (whose rows are then consecutive calls)."""
    ab, drift = _alpha_bar_at(traj.meta["scheduler_config"], ref.timesteps)
    ab_to = np.append(ab[1:], 1.0)          # where each call's step lands: the next call's t, the clean end
    history = HISTORY_CALLS if ref.multistep else 0
    thresholding = bool(ref.config.get("thresholding", False))
    recent, steps = [], []
    for r, call in enumerate(calls):
        terms = _terms(traj, r, rows[r], ab[call], family)
        recent = (recent + [(terms, ab[call])])[-(history + 1):]
        scales = [_reach(recent, ab_to[call], family), terms]
        if thresholding:                    # the quantile's error reaches every element of its sample
            scales = [a + a.reshape(len(a), -1).max(axis=1).reshape((-1,) + (1,) * (a.ndim - 1)) for a in scales]
        step = _check(traj, r, call, rows[r], ab[call], drift[call], family, u, *scales)
        step.nonfinite, step.chain = nonfinite(traj, r), chain_gap(traj, r, calls)
        steps.append(step)
    return steps


def _reach(recent: list, ab_to: float, family: str) -> np.ndarray:
    """The terms x_{t−1} carries at each element: the largest a_e of the recent calls k (this one last). In the
    variance-preserving samplers call k's x̂_0 = (x_k − σ_k ε̂_k)/α_k, rounded relative to a_e/α_k, lands in
    x_{t−1} with a coefficient of the order of the α it steps to (√ᾱ_prev x̂_0 in eq. 7 and 12; α_t D in
    DPM-Solver), so a_e counts √(ᾱ_to/ᾱ_k) ≥ 1 times; in σ-space x̂_0 = x − σ·ε is in x's own units."""
    def grown(terms, ab_k):
        return terms if in_sigma_space(family) else terms * max(1.0, math.sqrt(ab_to / ab_k))
    return np.maximum.reduce([grown(*k) for k in recent]) if len(recent) > 1 else grown(*recent[0])


def _terms(traj, r, ref_step, ab, family) -> np.ndarray:
    """a_e = |x_t| + s_t·|ε̂| + σ_t·|z| + 1 at each element of recorded row r (module docstring)."""
    x_t, eps = np.abs(np.asarray(traj.sample[r], np.float64)), np.abs(np.asarray(traj.model_output[r], np.float64))
    sigma = float(ref_step.noise_std or 0.0)
    s_eps = math.sqrt((1.0 - ab) / ab) if in_sigma_space(family) else 1.0
    a = x_t + s_eps * eps[:, : x_t.shape[1]] + 1.0            # a learned variance's extra channels are not ε̂
    if sigma > 0 and "noise" in traj.fields:
        a = a + sigma * np.abs(np.asarray(traj.noise[r], np.float64))
    return a


def _check(traj, r, call, ref_step, ab, drift, family, u, scale_prev, scale_x0) -> StepCheck:
    sigma = float(ref_step.noise_std or 0.0)
    # σ from float32 tables: ᾱ by a float32 product of up to T factors is off by up to T·u relative
    # (6e-5 at T = 1000), and a σ_up combines two such σ; 2e-4 covers both, plus the cancellation term
    bound_sigma = (SIGMA_RTOL + K_ROUNDINGS * u / (1.0 - ab)) * sigma + 1e-12
    # the step's own roundings and the float32 ᾱ's drift (× DRIFT_MARGIN: paddle may multiply in another
    # order than numpy), both amplified where 1 − ᾱ_t cancels
    per_unit = (K_ROUNDINGS * u + DRIFT_MARGIN * drift) / (1.0 - ab)
    bound_x0 = per_unit * scale_x0 * (1.0 if in_sigma_space(family) else 1.0 / math.sqrt(ab))
    gaps, bounds = {}, {}
    for name, b in zip(CHECKED[:-1], (per_unit * scale_prev, bound_x0, bound_x0)):
        if name in traj.fields:
            gaps[name], bounds[name] = _worst(traj.field(name)[r], getattr(ref_step, name), b)
        else:
            gaps[name], bounds[name] = math.nan, float(b.max())
    gap_sigma = abs(float(traj.noise_std[r]) - sigma)
    gaps["noise_std"], bounds["noise_std"] = (gap_sigma if math.isfinite(gap_sigma) else math.inf), float(bound_sigma)
    return StepCheck(row=r, call=int(call), t=float(traj.timesteps[r]), stage=str(traj.stages[r]), gaps=gaps,
                     bounds=bounds)


def _worst(recorded, expected, bound: np.ndarray) -> tuple:
    """(|recorded − expected|, bound) at the element where their ratio is largest; (∞, the largest finite
    bound) where a value or a bound is not finite — NaN is never within a bound."""
    gap = np.abs(np.asarray(recorded, np.float64) - expected)
    ratio = gap / bound
    finite = np.isfinite(bound)
    if not np.isfinite(ratio).all() or not finite.all():
        return math.inf, float(bound[finite].max()) if finite.any() else 1.0
    k = int(np.argmax(ratio))
    return float(gap.flat[k]), float(bound.flat[k])


def _check_noise(traj, steps: List[StepCheck], rows) -> Optional[dict]:
    """The recorded z of every step whose reference σ is > 0, tested against N(0, I) (`noise_test`): each
    such step gets its own result, and the pooled one is returned."""
    noisy = [r for r, row in enumerate(rows) if float(row.noise_std or 0.0) > 0] if "noise" in traj.fields else []
    per_step, pooled = noise_test([traj.noise[r] for r in noisy])
    for r, result in zip(noisy, per_step):
        steps[r].noise = {k: result[k] for k in ("mean", "mean_square", "p", "holds")}
    return pooled


def _check_x_T(traj, ref, calls) -> Optional[dict]:
    if len(calls) == 0 or calls[0] != 0:
        return None
    x_T = np.asarray(traj.sample[0], np.float64)
    std, expected = float(x_T.std()), float(ref.init_noise_sigma)
    tolerance = X_T_STANDARD_ERRORS / math.sqrt(2 * x_T.size)
    return {"std": std, "init_noise_sigma": expected, "tolerance": tolerance,
            "holds": abs(std / expected - 1.0) <= tolerance}


def save_json(report: VerifyReport, path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report.to_json(), indent=1))
    return path


# 0.3 names that live elsewhere now (ppddpm/_moved.py): answered with a DeprecationWarning
__getattr__ = moved_names(__name__)
