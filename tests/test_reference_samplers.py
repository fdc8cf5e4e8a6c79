"""ppddpm.reference's float64 sampler references against the REAL ppdiffusers schedulers.

Each test drives a stock ppdiffusers scheduler through a hand loop, as ppdiffusers' pipelines do
(set_timesteps(n) first, x_T = randn · init_noise_sigma, the model sees scale_model_input), with a
cheap deterministic function standing in for the UNet (the scheduler is under test, not the model),
and records at every call the timestep, x_t, the model input, the model output, the noise z the
call drew, prev_sample and x̂_0 when the step returns it. The reference then replays every call
from the recorded x_t / model output / z and must reproduce the timesteps exactly and
init_noise_sigma, the model input, x̂_0 and prev_sample within float32 rounding (`call_bound`).

The oracle (ppddpm.reference) imports nothing of ppdiffusers or the rest of ppddpm; this file
reads nothing of ppddpm but the reference. For each family a deliberately wrong step (x̂_0
unclipped, σ doubled, x_T unscaled, history off by one, ...) must NOT match, so the comparison
has teeth.
"""
import ast
import math
from pathlib import Path

import numpy as np
import paddle
import pytest
from ppdiffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                         EulerDiscreteScheduler, HeunDiscreteScheduler, LMSDiscreteScheduler, PNDMScheduler)

from ppddpm.reference import REFERENCES, betas_from_config, reference_for, spaced_timesteps

SHAPE = [2, 1, 8, 8]
T = 1000
# The float32 bound of one call, relative to the largest magnitude involved in it (max |x_t|, |x̂_0|,
# |prev_sample|). One float32 rounding is u = 2^-24 ≈ 6e-8. Two effects dominate:
# - ppdiffusers' ᾱ table is a float32 cumulative product of up to 1000 factors: relative error ≤ t·u
#   ≈ 6e-5 (worst case; ≈ √t·u ≈ 2e-6 typically); x̂_0 = (x − √(1−ᾱ)ε)/√ᾱ carries half of it, a step
#   a few more roundings: RTOL = 1e-4 covers it.
# - near t = 0, 1 − ᾱ_t (and σ = √((1−ᾱ)/ᾱ), and 1 − ᾱ_t/ᾱ_prev) comes from ᾱ ≈ 1 by cancellation:
#   relative error u/(1 − ᾱ_t) per such rounding (1 − ᾱ_0 = 1e-4 makes it 6e-4). As in ppddpm's A/B
#   step bound (comparison.py), K = 16 roundings of that size: 16·u/(1 − ᾱ_t).
# A call holds when its gap is within max(RTOL, 16·u/(1 − ᾱ_t)); `gaps` reports gap/bound.
# Measured gap/bound ratios are ≤ 0.04 (gaps 1e-7…8e-5); every wrong step here exceeds 20, and must exceed 10.
RTOL = 1e-4
UNIT_ROUNDOFF, K_ROUNDINGS = 2.0 ** -24, 16


def call_bound(ref, i):
    ab = ref.alphas_cumprod[max(int(math.floor(ref.timesteps[i])), 0)]
    return max(RTOL, K_ROUNDINGS * UNIT_ROUNDOFF / (1.0 - ab))


def model(x, t):
    """Stands in for the UNet: ε(x, t) = 0.3·tanh(x) + a t-dependent term. Smooth, O(1), large enough
    relative to x at high t that x̂_0 leaves [−1, 1] (clipping fires), and varying enough from one
    call to the next that a history off by one shows."""
    return 0.3 * paddle.tanh(x) + 0.2 * math.sin(float(t) / 50.0)


def record(scheduler, n, seed=0, noise="rng", shape=SHAPE, scale_x_T=True, x0_after=None, **step_kwargs):
    """Run `scheduler` for n steps by hand and record every call. noise="rng": z is replayed from
    paddle's global CPU generator state the step drew from (ppdiffusers' randn_tensor with no
    generator is paddle.randn); "argument": z is drawn here and passed as `variance_noise`.
    x0_after(scheduler): the x̂_0 the step used when it does not return it (read after the call).
    scale_x_T=False starts from an unscaled x_T (the wrong start of issue 20)."""
    scheduler.set_timesteps(n)
    paddle.seed(seed)
    z_T = paddle.randn(shape)
    x = z_T * scheduler.init_noise_sigma if scale_x_T else z_T
    rec = {"timesteps": scheduler.timesteps.numpy().astype(np.float64),
           "init_noise_sigma": float(scheduler.init_noise_sigma),
           "x_T": x.numpy().astype(np.float64), "z_T": z_T.numpy().astype(np.float64), "calls": []}
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(x, t)
        eps = model(inp, t)
        kw = dict(step_kwargs)
        if noise == "argument":
            z = paddle.randn(shape)
            kw["variance_noise"] = z
            out = scheduler.step(eps, t, x, **kw)
        else:
            before = paddle.get_rng_state()
            out = scheduler.step(eps, t, x, **kw)
            after = paddle.get_rng_state()
            paddle.set_rng_state(before)
            z = paddle.randn(shape)                # the draw the step made (if it drew)
            paddle.set_rng_state(after)
        x0 = getattr(out, "pred_original_sample", None)
        x0 = x0_after(scheduler) if x0 is None and x0_after else x0
        rec["calls"].append({"t": float(t), "x": x.numpy().astype(np.float64), "input": inp.numpy().astype(np.float64),
                             "eps": eps.numpy().astype(np.float64), "z": z.numpy().astype(np.float64),
                             "prev": out.prev_sample.numpy().astype(np.float64),
                             "x0": None if x0 is None else x0.numpy().astype(np.float64)})
        x = out.prev_sample
    return rec


def gaps(ref, rec):
    """Replay every recorded call through `ref`: per quantity, the largest gap relative to the magnitudes
    of its call, divided by that call's float32 bound (≤ 1: within rounding). Timesteps must match:
    the scheduler holds them as float32 (Euler-type) or int64, and the float64 grid must round to them."""
    assert np.array_equal(ref.timesteps.astype(np.float32), rec["timesteps"].astype(np.float32)), \
        (ref.timesteps, rec["timesteps"])
    x_T = ref.init_noise_sigma * rec["z_T"]
    worst = {"init_noise_sigma": abs(ref.init_noise_sigma / rec["init_noise_sigma"] - 1) / RTOL,
             "x_T": np.abs(rec["x_T"] - x_T).max() / np.abs(x_T).max() / RTOL, "input": 0.0, "x0": 0.0, "prev": 0.0}
    for i, c in enumerate(rec["calls"]):
        got = ref.step(i, c["eps"], c["x"], noise=c["z"])
        bound = call_bound(ref, i)
        scale = max(np.abs(c["x"]).max(), np.abs(got.prev_sample).max(), np.abs(got.pred_original_sample).max())
        worst["input"] = max(worst["input"], np.abs(ref.scale_model_input(i, c["x"]) - c["input"]).max() /
                             np.abs(c["input"]).max() / bound)
        worst["prev"] = max(worst["prev"], np.abs(got.prev_sample - c["prev"]).max() / scale / bound)
        if c["x0"] is not None:
            worst["x0"] = max(worst["x0"], np.abs(got.pred_original_sample - c["x0"]).max() / scale / bound)
    return worst


def assert_holds(worst):
    bad = {k: v for k, v in worst.items() if not v <= 1.0}
    assert not bad, f"reference departs from the scheduler beyond the float32 bound: {bad} (gap/bound: {worst})"


def assert_departs(worst):
    """A wrong step must miss by at least ten times the bound (not by a rounding fluke)."""
    assert max(worst.values()) > 10.0, worst


def config_of(scheduler):
    return dict(scheduler.config)


# ---------------------------------------------------------------- timestep grids
# ppdiffusers 0.29 builds "trailing" grids with np.arange(T, 0, −T/n), which by floating rounding gives
# n + 1 points for 62 step counts n ≤ 1000 (61, 103, 121, ...); the extra last timestep is −1. DDPM
# and DDIM then make an (n+1)-th call at t = −1 and read alphas_cumprod[−1] = ᾱ_{T−1}: a clean sample
# is treated as pure noise and x̂_0 = (x − √(1−ᾱ) ε)/√ᾱ amplifies it ~160×. The reference's grid has n.
def _arange_overshoots(n):
    return len(np.arange(T, 0, -T / n)) == n + 1


@pytest.mark.parametrize("spacing,offset", [("linspace", 0), ("leading", 1), ("trailing", 0)])
def test_grids_for_every_step_count(spacing, offset):
    ddpm = DDPMScheduler(timestep_spacing=spacing, steps_offset=offset)
    euler = EulerDiscreteScheduler(timestep_spacing=spacing, steps_offset=offset)
    extra = []
    for n in range(1, T + 1):
        ddpm.set_timesteps(n)
        ours, theirs = spaced_timesteps(T, n, spacing, offset), ddpm.timesteps.numpy()
        if spacing == "trailing" and _arange_overshoots(n):
            extra.append(n)
            assert np.array_equal(theirs, np.append(ours, -1)), n
        else:
            assert np.array_equal(ours, theirs), n
        if n % 9 == 0:                             # the Euler-type grid: "linspace" not rounded, float32
            euler.set_timesteps(n)
            ours = spaced_timesteps(T, n, spacing, offset, round_linspace=False)
            assert np.array_equal(ours.astype(np.float32)[:len(ours)], euler.timesteps.numpy()[:len(ours)]), n
    assert len(extra) == (62 if spacing == "trailing" else 0), extra


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"])
def test_betas(schedule):
    """ppdiffusers' float32 β against float64 from the definitions: paddle.linspace in float32 is
    start + k·step with a few roundings of the largest value (β ≤ 0.02, or 0.999 capped for cosine),
    so an absolute 8·u·max β bounds the gap."""
    cfg = {"beta_schedule": schedule, "beta_start": 0.00085, "beta_end": 0.012}
    theirs = DDPMScheduler(**cfg).betas.numpy().astype(np.float64)
    ours = betas_from_config(cfg)
    assert np.abs(ours - theirs).max() <= 8 * UNIT_ROUNDOFF * np.abs(ours).max()


# ---------------------------------------------------------------- DDPM
# ppdiffusers 0.29's DDPMScheduler and DDIMScheduler step t → t − ⌊T/n⌋ whatever the spacing, while
# the next call is at the next timestep of the grid. The two agree for "leading" (the grid is
# k·⌊T/n⌋) and for "trailing" when n divides T; for "linspace" and for "trailing" with n ∤ T the
# step lands on a noise level the next call does not evaluate at (ppdiffusers' DDPM reads the grid
# only for custom timesteps). The reference follows the paper (DDIM §4.2: τ_i → τ_{i−1}
# of the sub-sequence); the tests check ppdiffusers' convention precisely by giving the reference
# ppdiffusers' previous timesteps, and check that the two differ.
def _grid_agrees(spacing, n):
    return spacing == "leading" or (spacing == "trailing" and T % n == 0)


def _ppdiffusers_prev(ref):
    """ppdiffusers 0.29's previous timestep of DDPM/DDIM: t − ⌊T/n⌋ (negative: ᾱ_prev is the final value)."""
    ref.prev_timesteps = ref.timesteps - T // ref.num_inference_steps
    return ref


DDPM_CASES = [(10, "leading", 1, True, "epsilon", "fixed_small"),
              (30, "leading", 0, False, "epsilon", "fixed_small"),
              (50, "trailing", 0, True, "v_prediction", "fixed_small"),
              (10, "linspace", 0, True, "epsilon", "fixed_small"),
              (30, "trailing", 0, True, "epsilon", "fixed_small"),
              (50, "leading", 0, True, "v_prediction", "fixed_large"),
              (1000, "leading", 0, True, "epsilon", "fixed_small"),
              (1000, "trailing", 0, False, "epsilon", "fixed_large"),
              (20, "leading", 0, True, "sample", "fixed_small")]


@pytest.mark.parametrize("n,spacing,offset,clip,prediction,variance", DDPM_CASES)
def test_ddpm(n, spacing, offset, clip, prediction, variance):
    sched = DDPMScheduler(timestep_spacing=spacing, steps_offset=offset, clip_sample=clip, prediction_type=prediction,
                          variance_type=variance)
    rec = record(sched, n, seed=n)
    ref = reference_for("ddpm", config_of(sched), n)
    if _grid_agrees(spacing, n):
        assert_holds(gaps(ref, rec))
    else:
        assert_departs(gaps(ref, rec))
        assert_holds(gaps(_ppdiffusers_prev(reference_for("ddpm", config_of(sched), n)), rec))


@pytest.mark.parametrize("n,spacing,offset", [(10, "trailing", 0), (50, "leading", 1)])
def test_ddpm_fixed_large_adds_noise_at_the_last_step(n, spacing, offset):
    """Algorithm 2 adds no noise at the step that ends the chain; ppdiffusers' DDPM adds σ z whenever
    t > 0. With fixed_large (σ² = β_t = 1 − ᾱ_t/1 there) and a grid that does not end at 0 (trailing:
    last t = 99 at n = 10; leading with steps_offset=1: last t = 1) the final sample gets noise of
    std √(1 − ᾱ_t): exactly that much, every earlier call as the reference."""
    sched = DDPMScheduler(timestep_spacing=spacing, steps_offset=offset, variance_type="fixed_large")
    rec = record(sched, n, seed=3)
    ref = reference_for("ddpm", config_of(sched), n)
    last = rec["calls"].pop()
    assert_holds(gaps(ref, rec))
    got = ref.step(n - 1, last["eps"], last["x"], noise=last["z"])
    assert got.noise_std == 0.0 and last["t"] > 0
    extra = math.sqrt(1 - ref.alphas_cumprod[int(last["t"])])
    bound = call_bound(ref, n - 1) * np.abs(last["prev"]).max()
    assert np.abs(last["prev"] - (got.prev_sample + extra * last["z"])).max() <= bound
    assert np.abs(last["prev"] - got.prev_sample).max() > 3 * bound      # more than rounding (std 0.015 at t = 1)


# ppdiffusers 0.29's `_threshold_sample` calls paddle.clip(x, -s, s) with a per-sample s of shape
# [B, 1]; paddle.clip takes only scalar bounds, so dynamic thresholding raises for any batch > 1
# (DDPM, DDIM and every scheduler that copies it). The reference thresholds per sample; the
# comparison runs at batch 1, and the failure at batch 2 is pinned so a fixed release shows up.
THRESHOLD_SHAPE = [1, 1, 8, 8]


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
def test_ppdiffusers_thresholding_fails_for_batches(cls):
    sched = cls(thresholding=True)
    sched.set_timesteps(10)
    x = paddle.randn(SHAPE) * 5
    with pytest.raises(ValueError, match="Scalar only supports Tensor with 1 element"):
        sched.step(model(x, 900), sched.timesteps[0], x)


def test_ddpm_thresholding():
    sched = DDPMScheduler(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=3.0)
    rec = record(sched, 30, seed=4, shape=THRESHOLD_SHAPE)
    assert_holds(gaps(reference_for("ddpm", config_of(sched), 30), rec))


def test_ddpm_unclipped_step_is_caught():
    sched = DDPMScheduler(clip_sample=True)
    rec = record(sched, 10, seed=5)
    assert_departs(gaps(reference_for("ddpm", {**config_of(sched), "clip_sample": False}, 10), rec))


# ---------------------------------------------------------------- DDIM
DDIM_CASES = [(10, "leading", 1, True, "epsilon", 0.0, False, True),
              (30, "leading", 0, True, "epsilon", 1.0, False, False),
              (50, "trailing", 0, False, "v_prediction", 0.5, False, True),
              (50, "leading", 1, True, "epsilon", 1.0, True, True),
              (10, "linspace", 0, True, "epsilon", 1.0, False, True),
              (30, "trailing", 0, True, "v_prediction", 0.0, True, True),
              (1000, "leading", 0, True, "epsilon", 1.0, False, True),
              (20, "leading", 0, True, "sample", 1.0, False, True)]


@pytest.mark.parametrize("n,spacing,offset,clip,prediction,eta,clipped_eps,alpha_one", DDIM_CASES)
def test_ddim(n, spacing, offset, clip, prediction, eta, clipped_eps, alpha_one):
    sched = DDIMScheduler(timestep_spacing=spacing, steps_offset=offset, clip_sample=clip, prediction_type=prediction,
                          set_alpha_to_one=alpha_one)
    kw = {"eta": eta, "use_clipped_model_output": clipped_eps}
    rec = record(sched, n, seed=n, noise="argument" if eta > 0 else "none", **kw)
    ref = reference_for("ddim", config_of(sched), n, **kw)
    assert ref.stochastic == (eta > 0)
    if _grid_agrees(spacing, n):
        assert_holds(gaps(ref, rec))
    else:
        assert_departs(gaps(ref, rec))
        assert_holds(gaps(_ppdiffusers_prev(reference_for("ddim", config_of(sched), n, **kw)), rec))


def test_ddim_thresholding():
    sched = DDIMScheduler(thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=2.0)
    rec = record(sched, 20, seed=6, noise="argument", shape=THRESHOLD_SHAPE, eta=0.7)
    assert_holds(gaps(reference_for("ddim", config_of(sched), 20, eta=0.7), rec))


def test_ddim_doubled_sigma_is_caught():
    sched = DDIMScheduler()
    rec = record(sched, 10, seed=7, noise="argument", eta=0.5)
    assert_departs(gaps(reference_for("ddim", config_of(sched), 10, eta=1.0), rec))


# ---------------------------------------------------------------- PNDM
def off_by_one(rec):
    """The history off by one: every call gets the model output of the call before (the first keeps its own)."""
    calls = [dict(c) for c in rec["calls"]]
    for k in range(len(calls) - 1, 0, -1):
        calls[k]["eps"] = calls[k - 1]["eps"]
    return {**rec, "calls": calls}


PNDM_CASES = [(10, "leading", 0, False), (30, "leading", 1, True), (50, "leading", 1, False), (10, "trailing", 0, True),
              (1000, "leading", 0, True)]


@pytest.mark.parametrize("n,spacing,offset,skip_prk", PNDM_CASES)
def test_pndm(n, spacing, offset, skip_prk):
    """PNDM's step returns no x̂_0: x̂_0 is not compared (the reference's is eq. 15 on the call's output)."""
    sched = PNDMScheduler(timestep_spacing=spacing, steps_offset=offset, skip_prk_steps=skip_prk)
    rec = record(sched, n, seed=n)
    ref = reference_for("pndm", config_of(sched), n)
    assert len(ref.timesteps) == (n + 1 if skip_prk else 12 + n - 3)
    assert_holds(gaps(ref, rec))


def test_pndm_runge_kutta_midpoint_is_two_points_when_the_step_is_odd():
    """At n = 8 the step ⌊T/n⌋ = 125 is odd: ppdiffusers' PRK warm-up transfers x_875 to the midpoint
    875 − 62 = 813 (`prev_timestep = timestep − ⌊T/n⌋ // 2`) but evaluates the model there at
    750 + 62 = 812 (`prk_timesteps`). The reference keeps one midpoint, m = t − ⌊(t − p)/2⌋ = 813, so the
    run's call timesteps are not the reference's and `ppddpm verify` refuses the run in one line."""
    sched = PNDMScheduler()
    rec = record(sched, 8, seed=8)
    ref = reference_for("pndm", config_of(sched), 8)
    assert rec["timesteps"][:3].tolist() == [875, 812, 812] and ref.timesteps[:3].tolist() == [875, 813, 813]


@pytest.mark.parametrize("skip_prk", [False, True])
def test_pndm_history_off_by_one_is_caught(skip_prk):
    sched = PNDMScheduler(skip_prk_steps=skip_prk)
    rec = record(sched, 10, seed=10)
    assert_departs(gaps(reference_for("pndm", config_of(sched), 10), off_by_one(rec)))


@pytest.mark.parametrize("skip_prk", [False, True])
def test_pndm_linspace_grid_departs(skip_prk):
    """ppdiffusers' PNDM steps t → t − ⌊T/n⌋ (and takes half steps of ⌊T/n⌋/2) on every grid; on the
    "linspace" grid (0, 111, …, 999 at n = 10) that is not the next timestep it evaluates at, so the
    reference, which steps along the grid, must differ (the DDPM/DDIM note above). Without PRK the calls
    are at the same timesteps but the first step lands at 899 and its improved-Euler half reads ᾱ_988
    as the start; the PRK warm-up evaluates at 938 = 888 + 50 while its half step lands at 949, so even
    the calls differ."""
    sched = PNDMScheduler(timestep_spacing="linspace", skip_prk_steps=skip_prk)
    rec = record(sched, 10, seed=8)
    ref = reference_for("pndm", config_of(sched), 10)
    if skip_prk:
        assert_departs(gaps(ref, rec))
    else:
        assert rec["timesteps"][1] == 938 and ref.timesteps[1] == 999 - 55


def test_pndm_v_prediction_converts_at_the_wrong_point():
    """ppdiffusers' PNDM combines the v's of several calls first and turns the combination into ε with
    the ᾱ and x of the step's start; v is a prediction at the point it was evaluated at (ε = √ᾱ v +
    √(1−ᾱ) x there), so the reference converts each v first. The two agree on the first call (one v,
    evaluated at the step's start) and differ from the second on."""
    sched = PNDMScheduler(prediction_type="v_prediction")
    rec = record(sched, 10, seed=9)
    first = {**rec, "calls": rec["calls"][:1]}
    ref = reference_for("pndm", config_of(sched), 10)
    assert_holds(gaps(ref, first))
    assert_departs(gaps(reference_for("pndm", config_of(sched), 10), rec))


# ---------------------------------------------------------------- Euler, Euler ancestral, Heun, LMS
EULER_CASES = [(10, "linspace", 0, "epsilon"), (30, "leading", 1, "epsilon"), (50, "trailing", 0, "v_prediction"),
               (1000, "linspace", 0, "epsilon")]


@pytest.mark.parametrize("n,spacing,offset,prediction", EULER_CASES)
def test_euler(n, spacing, offset, prediction):
    sched = EulerDiscreteScheduler(timestep_spacing=spacing, steps_offset=offset, prediction_type=prediction)
    rec = record(sched, n, seed=n)
    assert_holds(gaps(reference_for("euler", config_of(sched), n), rec))


@pytest.mark.parametrize("n,spacing", [(10, "linspace"), (30, "leading"), (50, "trailing")])
def test_euler_churn(n, spacing):
    """Karras Alg. 2 with churn only inside [s_tmin, s_tmax] (σ from 157 down to 0.01 here): z recorded."""
    kw = {"s_churn": 2.0, "s_tmin": 0.5, "s_tmax": 20.0, "s_noise": 1.003}
    sched = EulerDiscreteScheduler(timestep_spacing=spacing)
    rec = record(sched, n, seed=n, **kw)
    ref = reference_for("euler", config_of(sched), n, **kw)
    assert ref.stochastic
    assert_holds(gaps(ref, rec))
    assert_departs(gaps(reference_for("euler", config_of(sched), n, **{**kw, "s_noise": 2 * kw["s_noise"]}), rec))


def test_euler_churn_v_prediction_converts_with_the_unchurned_sigma():
    """With churn, ppdiffusers' Euler computes ε-prediction's x̂_0 with σ̂ but v-prediction's with σ
    (x̂_0 = x̂/(σ²+1) − σ/√(σ²+1) v); the reference uses σ̂ in both (Alg. 2's D(x̂; σ̂)). Without churn they agree."""
    kw = {"s_churn": 2.0, "s_tmin": 0.5, "s_tmax": 20.0}
    sched = EulerDiscreteScheduler(prediction_type="v_prediction")
    assert_departs(gaps(reference_for("euler", config_of(sched), 10, **kw), record(sched, 10, seed=1, **kw)))


def test_euler_unscaled_start_is_caught():
    """Issue 20's bug: x_T not multiplied by init_noise_sigma (read after set_timesteps)."""
    sched = EulerDiscreteScheduler()
    rec = record(sched, 10, seed=2, scale_x_T=False)
    assert_departs(gaps(reference_for("euler", config_of(sched), 10), rec))


@pytest.mark.parametrize("n,spacing,offset,prediction", [(10, "linspace", 0, "epsilon"), (30, "trailing", 0, "epsilon"),
                                                          (50, "leading", 1, "v_prediction"),
                                                          (1000, "linspace", 0, "epsilon")])
def test_euler_ancestral(n, spacing, offset, prediction):
    sched = EulerAncestralDiscreteScheduler(timestep_spacing=spacing, steps_offset=offset, prediction_type=prediction)
    rec = record(sched, n, seed=n)
    assert_holds(gaps(reference_for("euler-ancestral", config_of(sched), n), rec))
    doubled = {**rec, "calls": [{**c, "z": 2 * c["z"]} for c in rec["calls"]]}        # σ_up doubled
    assert_departs(gaps(reference_for("euler-ancestral", config_of(sched), n), doubled))


HEUN_CASES = [(10, "linspace", 0, False, "epsilon"), (30, "leading", 1, True, "epsilon"),
              (50, "trailing", 0, True, "v_prediction"), (300, "linspace", 0, True, "epsilon")]


@pytest.mark.parametrize("n,spacing,offset,clip,prediction", HEUN_CASES)
def test_heun(n, spacing, offset, clip, prediction):
    """Heun's step returns no x̂_0: x̂_0 is not compared (the reference's is D of the call, clipped)."""
    sched = HeunDiscreteScheduler(timestep_spacing=spacing, steps_offset=offset, clip_sample=clip,
                                  prediction_type=prediction)
    rec = record(sched, n, seed=n)
    ref = reference_for("heun", config_of(sched), n)
    assert ref.stages[:3] == ["predictor", "corrector", "predictor"] and len(ref.timesteps) == 2 * n - 1
    assert_holds(gaps(ref, rec))
    if clip:
        assert_departs(gaps(reference_for("heun", {**config_of(sched), "clip_sample": False}, n), rec))


@pytest.mark.parametrize("n,spacing,offset,prediction,order", [(10, "linspace", 0, "epsilon", 4),
                                                                (30, "leading", 1, "epsilon", 4),
                                                                (50, "trailing", 0, "v_prediction", 4),
                                                                (30, "linspace", 0, "epsilon", 2),
                                                                (200, "linspace", 0, "epsilon", 4)])
def test_lms(n, spacing, offset, prediction, order):
    sched = LMSDiscreteScheduler(timestep_spacing=spacing, steps_offset=offset, prediction_type=prediction)
    kw = {} if order == 4 else {"order": order}
    rec = record(sched, n, seed=n, **kw)
    assert_holds(gaps(reference_for("lms", config_of(sched), n, **kw), rec))
    assert_departs(gaps(reference_for("lms", config_of(sched), n, **kw), off_by_one(rec)))


# ---------------------------------------------------------------- DPM-Solver multistep
def data_prediction(scheduler):
    """The x̂_0 DPM-Solver++ used: the data prediction it keeps (model_outputs[-1])."""
    return scheduler.model_outputs[-1]


DPM_CASES = [(10, "linspace", 0, 2, "dpmsolver++", "midpoint", "epsilon", True),
             (30, "leading", 1, 2, "dpmsolver++", "heun", "epsilon", True),
             (50, "trailing", 0, 2, "dpmsolver++", "midpoint", "v_prediction", True),
             (20, "linspace", 0, 1, "dpmsolver++", "midpoint", "epsilon", True),
             (10, "linspace", 0, 2, "dpmsolver++", "midpoint", "epsilon", False),
             (25, "linspace", 0, 2, "dpmsolver", "midpoint", "v_prediction", True),
             (12, "leading", 0, 2, "dpmsolver", "heun", "epsilon", True),
             (15, "trailing", 0, 2, "dpmsolver", "midpoint", "sample", True),
             (16, "leading", 0, 2, "dpmsolver++", "midpoint", "sample", True),
             (500, "linspace", 0, 2, "dpmsolver++", "midpoint", "epsilon", True)]


@pytest.mark.parametrize("n,spacing,offset,order,algorithm,solver,prediction,lower_final", DPM_CASES)
def test_dpmsolver_multistep(n, spacing, offset, order, algorithm, solver, prediction, lower_final):
    sched = DPMSolverMultistepScheduler(timestep_spacing=spacing, steps_offset=offset, solver_order=order,
                                        algorithm_type=algorithm, solver_type=solver, prediction_type=prediction,
                                        lower_order_final=lower_final)
    rec = record(sched, n, seed=n, x0_after=data_prediction if algorithm == "dpmsolver++" else None)
    ref = reference_for("dpmsolver-multistep", config_of(sched), n)
    assert_holds(gaps(ref, rec))
    assert_departs(gaps(reference_for("dpmsolver-multistep", config_of(sched), n), off_by_one(rec)))


@pytest.mark.parametrize("algorithm", ["dpmsolver++", "dpmsolver"])
def test_dpmsolver_thresholding_and_euler_at_final(algorithm):
    """Thresholding of the data prediction (for "dpmsolver" ε is re-derived from it); batch 1, see above."""
    sched = DPMSolverMultistepScheduler(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.0,
                                        euler_at_final=True, lower_order_final=False, algorithm_type=algorithm)
    rec = record(sched, 20, seed=11, shape=THRESHOLD_SHAPE,
                 x0_after=data_prediction if algorithm == "dpmsolver++" else None)
    assert_holds(gaps(reference_for("dpmsolver-multistep", config_of(sched), 20), rec))
    assert_departs(gaps(reference_for("dpmsolver-multistep", {**config_of(sched), "thresholding": False}, 20), rec))


# DPM-Solver(++)'s third-order multistep update in ppdiffusers 0.29 (as in the DPM-Solver authors'
# code) weighs D2 = (D1_0 − D1_1)/(r_0 + r_1) ≈ h²·m''/2 by α_t((e^{−h} − 1 + h)/h² − 1/2), half of
# the Taylor term ∫ e^{λ}(λ − λ_s)²/2 dλ · m'' requires, so its third order is not exact on a data
# prediction quadratic in λ. The reference integrates the Taylor terms exactly; this test shows it with
# an oracle that is neither: a model whose data prediction is q(λ) everywhere, for which the ODE's
# solution x_t = (σ_t/σ_s) x_s + σ_t ∫_{λ_s}^{λ_t} e^{λ} q(λ) dλ is a one-dimensional integral.
def _quadratic_data_model(alphas_cumprod):
    q = np.polynomial.Polynomial([0.3, 0.2, -0.05])

    def eps_model(x, t):
        ab = float(alphas_cumprod[int(t)])
        lam = 0.5 * math.log(ab / (1 - ab))
        return (x - math.sqrt(ab) * float(q(lam))) / math.sqrt(1 - ab)
    return q, eps_model


def test_dpmsolver_third_order_is_exact_on_quadratic_data():
    from scipy import integrate

    n, sched = 20, DPMSolverMultistepScheduler(solver_order=3, lower_order_final=False)
    ref = reference_for("dpmsolver-multistep", config_of(sched), n)
    q, eps_model = _quadratic_data_model(ref.alphas_cumprod)
    sched.set_timesteps(n)
    paddle.seed(12)
    x = paddle.randn(SHAPE)
    lam = -np.log(ref.sigmas)                   # λ = log(α/σ) = −log(σ-space σ)
    misses = {"reference": [], "ppdiffusers": []}
    for i, t in enumerate(sched.timesteps):
        eps = eps_model(x, t)
        out = sched.step(eps, t, x)
        got = ref.step(i, eps.numpy(), x.numpy())
        s_t, s_s = ref.sigma_t[i + 1], ref.sigma_t[i]
        exact = s_t / s_s * x.numpy().astype(np.float64) + \
            s_t * integrate.quad(lambda u: math.exp(u) * q(u), lam[i], lam[i + 1], epsabs=0, epsrel=1e-13)[0]
        if i >= 2:                              # order 3 from the third call on
            scale = np.abs(exact).max()
            misses["reference"].append(np.abs(got.prev_sample - exact).max() / scale / call_bound(ref, i))
            misses["ppdiffusers"].append(np.abs(out.prev_sample.numpy() - exact).max() / scale / call_bound(ref, i))
        x = out.prev_sample
    assert max(misses["reference"]) <= 1.0, misses             # gap/bound, as `gaps`
    assert max(misses["ppdiffusers"]) > 10.0, misses


# ---------------------------------------------------------------- the registry
def test_reference_imports_only_numpy_and_the_standard_library():
    """The contract: an oracle independent of ppdiffusers, paddle and the rest of ppddpm."""
    allowed = {"__future__", "collections", "dataclasses", "math", "typing", "numpy"}
    package = Path(__file__).resolve().parent.parent / "ppddpm" / "reference"
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [] if node.level else [node.module.split(".")[0]]     # relative: a sibling module
            else:
                continue
            assert set(names) <= allowed, (path.name, names)


def test_registry_and_bad_input():
    from ppddpm.core.adapters import families

    assert set(REFERENCES) == set(families())          # every family ppddpm records has its reference
    with pytest.raises(ValueError, match="takes no argument"):
        reference_for("ddim", {}, 10, etta=1.0)
    with pytest.raises(NotImplementedError, match="variance_type='learned'"):
        reference_for("ddpm", {"variance_type": "learned"}, 10)
    with pytest.raises(NotImplementedError, match="no float64 reference"):
        reference_for("no-such-sampler", {}, 10)
    with pytest.raises(NotImplementedError, match="rescale_betas_zero_snr"):
        reference_for("ddim", {"rescale_betas_zero_snr": True}, 10)
    with pytest.raises(NotImplementedError, match="use_karras_sigmas=True"):
        reference_for("euler", {"use_karras_sigmas": True}, 10)
    with pytest.raises(NotImplementedError, match="solver_order=3 is not covered"):
        reference_for("dpmsolver-multistep", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}, 10)
