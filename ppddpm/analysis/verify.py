"""Hold a recorded run against the paper: replay every recorded step through the float64 reference.

    report = ppddpm.verify(traj)            # a Trajectory, or the path of a .npz / streamed folder
    print(report.table()); report.ok; report.first_departure

Each recorded step's inputs — x_t, the model output ε̂ and the noise z it added, as recorded —
go through the float64 reference of the run's sampler (`ppddpm.reference`, written from the
papers and independent of ppdiffusers), and its x̂_0 (as used and before clipping) and x_{t−1}
are compared with the recorded ones, and so is σ_t, the std of the noise the step added. The
scheduler's config and the step's arguments (η, …)
come from the trajectory's metadata, so this checks whatever ran: another device, float16, a
patched step formula (`ppddpm.patch_step`), a new ppdiffusers release.

Bound. The recorded step computed in float32 from float32 tables; the reference computes the same
real numbers in float64. As in `ppddpm.analysis.ab`, a step rounds ~10 times and its coefficients
are consistent only up to a rounding of ᾱ_t, which 1/(1 − ᾱ_t) amplifies where 1 − ᾱ_t cancels
(small t); and ppdiffusers' ᾱ_t is a float32 product of t + 1 factors, whose relative error d_t
(the largest for s ≤ t, measured on numpy's float32 product of the same betas: ~11u for the linear
schedule) every coefficient inherits. With u the unit roundoff of the stored frames (2⁻²⁴ for float32,
2⁻¹¹ for float16):
    |Δ| ≤ (K · u + 4 · d_t) / (1 − ᾱ_t) · (max|x_t| + s_t · max|ε̂| + σ_t · max|z| + 1),   K = K_ROUNDINGS,
s_t = σ_t^EDM = √((1−ᾱ_t)/ᾱ_t) for the σ-space samplers (x̂_0 = x − σ·ε scales ε̂ by it), else 1.
The x̂_0 gaps are held against the same bound divided by √ᾱ_t in the variance-preserving samplers
(eq. 15 divides by √ᾱ_t) and against it as it is in σ-space (x̂_0 = x − σ·ε, already in x's
units). A step "holds" when all three gaps are within their bound; `ratio` is the largest gap
over its bound.

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
from ppddpm.analysis.ab import K_ROUNDINGS, UNIT_ROUNDOFF
from ppddpm.errors import BadValue, Unsupported
from ppddpm.core.recorder import kept_steps
from ppddpm.reference import REFERENCES, reference_for
from ppddpm.reference.schedules import betas_from_config
from ppddpm.storage.trajectory import Trajectory

SIGMA_SPACE = ("euler", "euler-ancestral", "lms", "heun", "kdpm2", "kdpm2-ancestral", "dpmsolver-sde", "edm-euler")
UNIT_ROUNDOFF_FLOAT16 = 2.0 ** -11
X_T_STANDARD_ERRORS = 5.0
DRIFT_MARGIN = 4.0         # on the float32 ᾱ's measured drift (see _check)
SIGMA_RTOL = 2e-4          # σ's relative tolerance (see _check); measured ≤ 8.3e-5 over every family


# what a replay compares, named as StepRecord, the Trajectory and the reference's step name them
CHECKED = ("prev_sample", "pred_original_sample", "pred_original_sample_unclipped", "sigma")


@dataclass
class StepCheck:
    """One recorded step replayed: per quantity of `CHECKED`, the largest |recorded − reference| (`gaps`;
    NaN where the field was not recorded) and its bound (`bounds`: x_{t−1}'s float32 bound; x̂_0's, that
    / √ᾱ_t in the variance-preserving samplers; σ's, relative to σ)."""
    row: int                  # index in the trajectory
    call: int                 # index of the step call in the run
    t: float
    stage: str
    gaps: Dict[str, float]
    bounds: Dict[str, float]

    @property
    def ratio(self) -> float:
        return max((g / self.bounds[name] for name, g in self.gaps.items() if not math.isnan(g)), default=0.0)

    @property
    def holds(self) -> bool:
        return self.ratio <= 1.0


@dataclass
class VerifyReport:
    family: str
    scheduler: str
    variant: str
    steps: List[StepCheck]
    x_T: Optional[dict] = None           # {"std", "init_noise_sigma", "tolerance", "holds"} when call 0 was recorded
    meta: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(s.holds for s in self.steps) and (self.x_T is None or self.x_T["holds"])

    @property
    def first_departure(self) -> Optional[StepCheck]:
        return next((s for s in self.steps if not s.holds), None)

    def summary(self) -> str:
        head = f"{self.scheduler} ({self.family}, step formula {self.variant!r}): {len(self.steps)} recorded steps"
        if self.x_T is not None and not self.x_T["holds"]:
            return (f"{head}; x_T departs: std {self.x_T['std']:.4g}, the reference starts from init_noise_sigma "
                    f"{self.x_T['init_noise_sigma']:.4g} (tolerance ±{self.x_T['tolerance']:.0%})")
        bad = self.first_departure
        if bad is None:
            worst = max((s.ratio for s in self.steps), default=0.0)
            return f"{head} hold against the float64 reference (worst step at {worst:.2g} of its float32 bound)"
        n_bad = sum(not s.holds for s in self.steps)
        return (f"{head}; {n_bad} depart from the float64 reference, first at step {bad.call} (t={bad.t:g}"
                f"{', ' + bad.stage if bad.stage else ''}): {bad.ratio:.3g}x its float32 bound")

    def table(self, limit: int = 12) -> str:
        """The summary, then per step the gaps and bounds (the first `limit` rows and every departing one)."""
        lines = [self.summary()]
        if self.x_T is not None:
            lines.append(f"x_T: std {self.x_T['std']:.4g} vs init_noise_sigma {self.x_T['init_noise_sigma']:.4g} "
                         f"(±{self.x_T['tolerance']:.0%}): {'holds' if self.x_T['holds'] else 'DEPARTS'}")
        lines.append(f"{'step':>5} {'t':>8} {'stage':>9} {'|Δx_t-1|':>10} {'bound':>9} {'|Δx̂_0|':>10} "
                     f"{'|Δx̂_0 raw|':>11} {'bound':>9}  {'ratio':>7}")
        shown = [s for k, s in enumerate(self.steps) if k < limit or not s.holds]
        for s in shown:
            g, b = s.gaps, s.bounds
            lines.append(f"{s.call:>5} {s.t:>8g} {s.stage:>9} {g['prev_sample']:>10.2e} {b['prev_sample']:>9.2e} "
                         f"{_num(g['pred_original_sample']):>10} {_num(g['pred_original_sample_unclipped']):>11} "
                         f"{b['pred_original_sample']:>9.2e}  {s.ratio:>7.3g}{'' if s.holds else '  DEPARTS'}")
        if len(shown) < len(self.steps):
            lines.append(f"… {len(self.steps) - len(shown)} more steps, all within their bound")
        return "\n".join(lines)

    def to_json(self) -> dict:
        first = self.first_departure
        return {"ok": self.ok, "family": self.family, "scheduler": self.scheduler, "variant": self.variant,
                "first_departure": None if first is None else {"step": first.call, "t": first.t, "stage": first.stage},
                "x_T": self.x_T, "summary": self.summary(),
                "tolerance": {"unit_roundoff": self.meta.get("unit_roundoff"), "K": K_ROUNDINGS,
                              "bound": "(K·u + 4·d_t)/(1−ᾱ_t)·(max|x_t| + s_t·max|ε̂| + σ_t·max|z| + 1); "
                                       "x̂_0: that / √ᾱ_t (VP samplers)"},
                "steps": [{"step": s.call, "t": s.t, "stage": s.stage,
                           "gaps": {name: _json_num(g) for name, g in s.gaps.items()}, "bounds": s.bounds,
                           "ratio": s.ratio, "holds": s.holds} for s in self.steps]}


def _num(x) -> str:
    return "—" if math.isnan(x) else f"{x:.2e}"


def _json_num(x):
    return None if math.isnan(x) else x


def verify(traj) -> VerifyReport:
    """Replay every recorded step of `traj` (a Trajectory or a path) through the float64 reference
    of its sampler and report, per step, the gaps of x̂_0 and x_{t−1} against their float32 bound."""
    if isinstance(traj, (str, Path)):
        traj = Trajectory.load(traj)
    family, config = _sampler_of(traj)
    _check_fields(traj, family)
    ref = _reference(traj, family, config)
    if ref.stochastic and "noise" not in traj.fields:
        raise BadValue(f"{ref.family} adds noise: record the 'noise' field too (fields='all') to verify it")
    calls = _recorded_calls(traj, ref)
    ab, drift = _alpha_bar_at(config, ref.timesteps)
    u = UNIT_ROUNDOFF_FLOAT16 if str(traj.meta.get("dtype")) == "float16" else UNIT_ROUNDOFF
    if ref.multistep:
        rows = _replay_all(traj, ref, calls)
    else:
        rows = {r: ref.step(i, *_inputs(traj, r)) for r, i in enumerate(calls)}
    steps = [_check(traj, r, calls[r], rows[r], ab[calls[r]], drift[calls[r]], family, u) for r in range(len(calls))]
    return VerifyReport(family=family, scheduler=traj.scheduler, variant=str(traj.meta.get("variant", "ppdiffusers")),
                        steps=steps, x_T=_check_x_T(traj, ref, calls), meta={"unit_roundoff": u})


def _sampler_of(traj):
    config = traj.meta.get("scheduler_config")
    if not isinstance(config, dict):
        raise BadValue("this trajectory does not carry its scheduler's config (meta['scheduler_config']); "
                       "verify needs it to rebuild the sampler")
    family = traj.meta.get("sampler") or ("ddpm" if traj.scheduler == "DDPMScheduler" else None)
    if family not in REFERENCES:
        raise Unsupported(f"verify has no float64 reference for {traj.scheduler} (sampler {family!r}); "
                          f"it has one for {', '.join(REFERENCES)}")
    return family, config


def _check_fields(traj, family):
    missing = [f for f in ("sample", "model_output", "prev_sample") if f not in traj.fields]
    if missing:
        raise BadValue(f"verify replays each step from its recorded inputs, and this run lacks {', '.join(missing)}: "
                       f"record with fields='all' (CLI: ppddpm sample --all-fields)")
    if len(traj) == 0:
        raise BadValue("this trajectory holds no recorded step")


def _reference(traj, family, config):
    n = traj.meta.get("set_timesteps") or _set_timesteps_of_old_file(traj, family)
    arguments = dict(traj.meta.get("step_arguments") or {})
    try:
        return reference_for(family, config, int(n), **arguments)
    except NotImplementedError as exc:
        raise Unsupported(f"the float64 reference of {family} does not cover this run: {exc}") from None
    except ValueError as exc:                 # a step argument the formula does not take, or a grid it cannot make
        raise BadValue(f"the float64 reference of {family} cannot replay this run: {exc}") from None


def _set_timesteps_of_old_file(traj, family):
    """Files written before ppddpm 0.3 kept only the number of step calls: it is the number of
    timesteps for every sampler that calls the model once per timestep."""
    calls = int(traj.meta.get("num_inference_steps", len(traj)))
    if family == "heun":
        return (calls + 1) // 2                    # a predictor and a corrector per timestep but the last
    if family in ("pndm",):
        raise BadValue("this PNDM run was recorded before ppddpm 0.3, which did not keep the number of timesteps "
                       "asked for; record it again to verify it")
    return calls


def _recorded_calls(traj, ref) -> np.ndarray:
    """The call index of each recorded row: `every` keeps calls every−1, 2·every−1, … and the last."""
    n_calls = int(traj.meta.get("num_inference_steps", len(ref.timesteps)))
    if n_calls != len(ref.timesteps):
        raise BadValue(f"the run made {n_calls} step calls, but the reference of its sampler makes "
                       f"{len(ref.timesteps)} for the same config: not a run of this scheduler's own loop")
    calls = kept_steps(n_calls, int(traj.meta.get("every", 1)))[: len(traj)]
    recorded_t = np.asarray(traj.timesteps, np.float64)
    expected_t = np.asarray(ref.timesteps, np.float64)[calls]
    if not np.allclose(recorded_t, expected_t, rtol=0, atol=1e-3):
        k = int(np.argmax(~np.isclose(recorded_t, expected_t, rtol=0, atol=1e-3)))
        raise BadValue(f"recorded timestep {recorded_t[k]:g} at step {calls[k]} is not the reference's "
                       f"{expected_t[k]:g}: the run's schedule is not the one its config describes")
    return calls


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
    return {r: ref.step(r, *_inputs(traj, r)) for r in range(len(calls))}


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


def _check(traj, r, call, ref_step, ab, drift, family, u) -> StepCheck:
    x_t, eps = np.asarray(traj.sample[r], np.float64), np.asarray(traj.model_output[r], np.float64)
    sigma = float(ref_step.sigma or 0.0)
    # σ from float32 tables: ᾱ by a float32 product of up to T factors is off by up to T·u relative
    # (6e-5 at T = 1000), and a σ_up combines two such σ; 2e-4 covers both, plus the cancellation term
    bound_sigma = (SIGMA_RTOL + K_ROUNDINGS * u / (1.0 - ab)) * sigma + 1e-12
    z = np.asarray(traj.noise[r], np.float64) if "noise" in traj.fields else np.zeros(1)
    s_eps = math.sqrt((1.0 - ab) / ab) if family in SIGMA_SPACE else 1.0
    scale = np.abs(x_t).max() + s_eps * np.abs(eps).max() + sigma * np.abs(z).max() + 1.0
    # the step's own roundings and the float32 ᾱ's drift (× DRIFT_MARGIN: paddle may multiply in another
    # order than numpy), both amplified where 1 − ᾱ_t cancels
    bound = (K_ROUNDINGS * u + DRIFT_MARGIN * drift) / (1.0 - ab) * scale
    gaps = {name: (float(np.abs(np.asarray(traj.field(name)[r], np.float64) - getattr(ref_step, name)).max())
                   if name in traj.fields else float("nan")) for name in CHECKED[:-1]}
    gaps["sigma"] = abs(float(traj.sigma[r]) - sigma)
    bound_x0 = float(bound if family in SIGMA_SPACE else bound / math.sqrt(ab))
    bounds = {"prev_sample": float(bound), "pred_original_sample": bound_x0,
              "pred_original_sample_unclipped": bound_x0, "sigma": float(bound_sigma)}
    return StepCheck(row=r, call=int(call), t=float(traj.timesteps[r]), stage=str(traj.stages[r]), gaps=gaps,
                     bounds=bounds)


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
