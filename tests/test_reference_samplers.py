"""ppddpm.reference's float64 sampler references against the REAL ppdiffusers schedulers.

Each test drives a stock ppdiffusers scheduler through a hand loop, as ppdiffusers' pipelines do
(set_timesteps(n) first, x_T = randn · init_noise_sigma, the model sees scale_model_input), with a
cheap deterministic function standing in for the UNet (the scheduler is under test, not the model),
and records at every call the timestep, x_t, the model input, the model output, the noise z the
call drew, prev_sample and x̂_0 when the step returns it. The reference then replays every call
from the recorded x_t / model output / z and must reproduce the timesteps exactly and
init_noise_sigma, the model input, x̂_0 and prev_sample within float32 rounding (`RTOL`).

The oracle (ppddpm.reference) imports nothing of ppdiffusers or the rest of ppddpm; this file
reads nothing of ppddpm but the reference. For each family a deliberately wrong step (x̂_0
unclipped, σ doubled, x_T unscaled, history off by one, ...) must NOT match, so the comparison
has teeth.
"""
import math

import numpy as np
import paddle
import pytest
from ppdiffusers import DDIMScheduler, DDPMScheduler

from ppddpm.reference import REFERENCES, reference_for

SHAPE = [2, 1, 8, 8]
T = 1000
# Tolerance of a float32 step against float64, relative to the largest magnitude involved in that
# call (max |x_t|, |x̂_0|, |prev_sample|). One float32 rounding is u = 2^-24 ≈ 6e-8; ppdiffusers'
# ᾱ table is a float32 cumulative product of 1000 factors, whose relative error grows like √t·u
# (random walk, ≈ 2e-6 at t = 999) and is bounded by t·u ≈ 6e-5; x̂_0 = (x − √(1−ᾱ)ε)/√ᾱ carries
# half of it. A step is then ≤ ~10 roundings on top. 1e-4 covers the worst-case table bound with
# margin; the measured gaps are ~1e-6 (printed by test_measured_gaps_are_float32_rounding).
RTOL = 1e-4


def model(x, t):
    """Stands in for the UNet: ε(x, t) = 0.3·tanh(x) + a small t-dependent term. Smooth, O(1), and
    large enough relative to x at high t that x̂_0 leaves [−1, 1] (clipping fires)."""
    return 0.3 * paddle.tanh(x) + 0.05 * math.sin(float(t) / 97.0)


def record(scheduler, n, seed=0, noise="rng", shape=SHAPE, **step_kwargs):
    """Run `scheduler` for n steps by hand and record every call. noise="rng": z is replayed from
    paddle's global CPU generator state the step drew from (ppdiffusers' randn_tensor with no
    generator is paddle.randn); "argument": z is drawn here and passed as `variance_noise`."""
    scheduler.set_timesteps(n)
    paddle.seed(seed)
    x = paddle.randn(shape) * scheduler.init_noise_sigma
    rec = {"timesteps": scheduler.timesteps.numpy().astype(np.float64), "init_noise_sigma": float(scheduler.init_noise_sigma),
           "x_T": x.numpy().astype(np.float64), "calls": []}
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
        rec["calls"].append({"t": float(t), "x": x.numpy().astype(np.float64), "input": inp.numpy().astype(np.float64),
                             "eps": eps.numpy().astype(np.float64), "z": z.numpy().astype(np.float64),
                             "prev": out.prev_sample.numpy().astype(np.float64),
                             "x0": None if x0 is None else x0.numpy().astype(np.float64)})
        x = out.prev_sample
    return rec


def gaps(ref, rec, x0_of=None):
    """Replay every recorded call through `ref`; the largest relative gap of each quantity.
    x0_of(call) gives the x̂_0 the scheduler used when its step does not return it (None: not checked)."""
    assert np.array_equal(ref.timesteps, rec["timesteps"]), (ref.timesteps, rec["timesteps"])
    worst = {"init_noise_sigma": abs(ref.init_noise_sigma / rec["init_noise_sigma"] - 1), "input": 0.0, "x0": 0.0,
             "prev": 0.0}
    for i, c in enumerate(rec["calls"]):
        got = ref.step(i, c["eps"], c["x"], noise=c["z"])
        x0 = c["x0"] if c["x0"] is not None else (x0_of(i, c) if x0_of else None)
        scale = max(np.abs(c["x"]).max(), np.abs(got.prev_sample).max(), np.abs(got.pred_original_sample).max())
        worst["input"] = max(worst["input"], np.abs(ref.scale_model_input(i, c["x"]) - c["input"]).max() /
                             np.abs(c["input"]).max())
        worst["prev"] = max(worst["prev"], np.abs(got.prev_sample - c["prev"]).max() / scale)
        if x0 is not None:
            worst["x0"] = max(worst["x0"], np.abs(got.pred_original_sample - x0).max() / scale)
    return worst


def assert_holds(worst, rtol=RTOL):
    bad = {k: v for k, v in worst.items() if not v <= rtol}
    assert not bad, f"reference departs from the scheduler beyond {rtol:g}: {bad} (all: {worst})"


def assert_departs(worst, rtol=RTOL):
    """A wrong step must miss by at least ten times the tolerance (not by a rounding fluke)."""
    assert max(worst["prev"], worst["x0"], worst["init_noise_sigma"]) > 10 * rtol, worst


def config_of(scheduler):
    return dict(scheduler.config)


# ---------------------------------------------------------------- DDPM
# ppdiffusers 0.29's DDPMScheduler and DDIMScheduler step t → t − ⌊T/n⌋ whatever the spacing, while
# the next call is at the next timestep of the grid. The two agree for "leading" (the grid is
# k·⌊T/n⌋) and for "trailing" when n divides T; for "linspace" and for "trailing" with n ∤ T the
# step lands on a noise level the next call does not evaluate at (diffusers later made
# `previous_timestep` read the grid). The reference follows the paper (DDIM §4.2: τ_i → τ_{i−1}
# of the sub-sequence); the tests check ppdiffusers' convention precisely by giving the reference
# ppdiffusers' previous timesteps, and check that the two differ.
def _grid_agrees(spacing, n):
    return spacing == "leading" or (spacing == "trailing" and T % n == 0)


def _ppdiffusers_prev(ref):
    """ppdiffusers 0.29's previous timestep of DDPM/DDIM: t − ⌊T/n⌋ (negative: ᾱ_prev is the final value)."""
    ref.prev_timesteps = ref.timesteps - T // ref.num_inference_steps
    return ref


DDPM_CASES = [(10, "leading", 1, True, "epsilon", "fixed_small"), (30, "leading", 0, False, "epsilon", "fixed_small"),
              (50, "trailing", 0, True, "v_prediction", "fixed_small"), (10, "linspace", 0, True, "epsilon", "fixed_small"),
              (30, "trailing", 0, True, "epsilon", "fixed_small"), (50, "leading", 0, True, "v_prediction", "fixed_large"),
              (1000, "leading", 0, True, "epsilon", "fixed_small"), (1000, "trailing", 0, False, "epsilon", "fixed_large")]


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
    assert got.sigma == 0.0 and last["t"] > 0
    extra = math.sqrt(1 - ref.alphas_cumprod[int(last["t"])])
    assert np.abs(last["prev"] - (got.prev_sample + extra * last["z"])).max() <= RTOL * np.abs(last["prev"]).max()
    assert np.abs(last["prev"] - got.prev_sample).max() > 10 * RTOL * np.abs(last["prev"]).max()  # and it shows


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
DDIM_CASES = [(10, "leading", 1, True, "epsilon", 0.0, False, True), (30, "leading", 0, True, "epsilon", 1.0, False, False),
              (50, "trailing", 0, False, "v_prediction", 0.5, False, True), (50, "leading", 1, True, "epsilon", 1.0, True, True),
              (10, "linspace", 0, True, "epsilon", 1.0, False, True), (30, "trailing", 0, True, "v_prediction", 0.0, True, True),
              (1000, "leading", 0, True, "epsilon", 1.0, False, True)]


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


# ---------------------------------------------------------------- the registry
def test_registry_and_bad_input():
    assert {"ddpm", "ddim"} <= set(REFERENCES)
    with pytest.raises(ValueError, match="takes no argument"):
        reference_for("ddim", {}, 10, etta=1.0)
    with pytest.raises(NotImplementedError, match="variance_type='learned'"):
        reference_for("ddpm", {"variance_type": "learned"}, 10)
    with pytest.raises(NotImplementedError, match="no float64 reference"):
        reference_for("no-such-sampler", {}, 10)
