"""The float64 references of the samplers added by issue 20 item 5, against the REAL schedulers.

Same shape as tests/test_reference_samplers.py: a stock ppdiffusers scheduler runs a hand loop as
ppdiffusers' pipelines write it (set_timesteps first, x_T = randn · init_noise_sigma, the model sees
scale_model_input) with a cheap deterministic function standing in for the UNet (the scheduler is
under test, not a model). Every call is seen through ppddpm's step observer (`ppddpm.core.records`), which
supplies what these steps do not return: x̂_0 as the step used it (read from the state it keeps, or
reconstructed — the recorder's own values, so the adapter is held to the paper too) and the noise z
it added (replayed from the RNG, or watched from DPM-Solver-SDE's Brownian tree). The reference
replays every call from the recorded x_t / model output / z and must reproduce the timesteps,
init_noise_sigma, the model input, x̂_0 and prev_sample within the float32 bound of each call that
tests/test_reference_samplers.py derives (`call_bound`); a deliberately wrong step must miss by ten
times that. Measured gap/bound: ≤ 0.23 (the largest where x̂_0 of a v-prediction, noise-prediction
run is reconstructed by dividing by α_t ≈ 0.006 at t = 999); the wrong steps: ≥ 17.
"""
import numpy as np
import paddle
import pytest
from ppdiffusers import (DEISMultistepScheduler, DPMSolverSDEScheduler, DPMSolverSinglestepScheduler, EDMEulerScheduler,
                         KDPM2AncestralDiscreteScheduler, KDPM2DiscreteScheduler, LCMScheduler, UniPCMultistepScheduler)
from test_reference_samplers import RTOL, assert_departs, assert_holds, call_bound, model

from ppddpm.reference import REFERENCES, reference_for
from ppddpm.core.records import StepObserver, observe

SHAPE = [2, 1, 8, 8]
# Timesteps: the grid's integer / float32 timesteps agree exactly with float64 once rounded to
# float32; the midpoints' fractional timesteps are computed by ppdiffusers from float32 σ tables
# (a log-σ interpolation whose relative error is a few float32 roundings of σ, ~1e-6, times
# |d t / d log σ| ≲ 1e3 near t = 0; measured ≤ 6e-4): 1e-2 of a timestep is far below one training step.
T_ATOL = 1e-2


def record(scheduler, n, seed=0, shape=SHAPE, **step_kwargs):
    """Run `scheduler` for n steps by hand with ppddpm's observer on it; every call's t, x_t, model
    input, model output, observed z (zeros where none was added), prev_sample and x̂_0 as used."""
    scheduler.set_timesteps(n)
    paddle.seed(seed)
    x = paddle.randn(shape) * scheduler.init_noise_sigma
    seen = []
    rec = {"timesteps": scheduler.timesteps.numpy().astype(np.float64), "x_T": x.numpy(),
           "init_noise_sigma": float(scheduler.init_noise_sigma), "calls": []}
    with observe(scheduler, StepObserver(seen.append, want_noise=True)):
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(x, t)
            out = scheduler.step(model(inp, t), t, x, **step_kwargs)
            r = seen.pop()
            z = r.noise if r.noise is not None else np.zeros(shape)
            rec["calls"].append({k: np.asarray(v.numpy() if hasattr(v, "numpy") else v, np.float64) for k, v in
                                 (("x", r.sample), ("input", inp), ("eps", r.model_output), ("prev", out.prev_sample),
                                  ("x0", r.pred_original_sample), ("z", z))})
            rec["calls"][-1]["stage"] = r.stage
            x = out.prev_sample
    return rec


def bound(ref, i):
    """The float32 bound of call i as tests/test_reference_samplers.py derives it (`call_bound`: RTOL, or
    16·u/(1 − ᾱ_t) near t = 0); EDM's timesteps are c_noise = ¼ ln σ, not VP timesteps: RTOL."""
    return RTOL if ref.family == "edm-euler" else call_bound(ref, i)


def gaps(ref, rec):
    """Replay every call through `ref`: per quantity, the largest gap relative to the magnitudes of its
    call divided by that call's float32 bound (≤ 1: within rounding), as test_reference_samplers.gaps."""
    assert len(ref.timesteps) == len(rec["calls"]) and ref.stages == [c["stage"] or "" for c in rec["calls"]]
    np.testing.assert_allclose(ref.timesteps, rec["timesteps"], rtol=0, atol=T_ATOL)
    worst = {"init_noise_sigma": abs(ref.init_noise_sigma / rec["init_noise_sigma"] - 1) / RTOL, "input": 0.0,
             "x0": 0.0, "prev": 0.0}
    for i, c in enumerate(rec["calls"]):
        got, b = ref.step(i, c["eps"], c["x"], noise=c["z"]), bound(ref, i)
        scale = max(np.abs(c["x"]).max(), np.abs(got.prev_sample).max(), np.abs(got.pred_original_sample).max())
        worst["input"] = max(worst["input"], np.abs(ref.scale_model_input(i, c["x"]) - c["input"]).max() /
                             np.abs(c["input"]).max() / b)
        worst["prev"] = max(worst["prev"], np.abs(got.prev_sample - c["prev"]).max() / scale / b)
        worst["x0"] = max(worst["x0"], np.abs(got.pred_original_sample - c["x0"]).max() / scale / b)
    return worst


# ---------------------------------------------------------------- KDPM2, KDPM2 ancestral
KDPM2_CASES = [(KDPM2DiscreteScheduler, 10, "linspace", "epsilon"),
               (KDPM2DiscreteScheduler, 25, "leading", "v_prediction"),
               (KDPM2DiscreteScheduler, 8, "trailing", "epsilon"),
               (KDPM2AncestralDiscreteScheduler, 10, "linspace", "epsilon"),
               (KDPM2AncestralDiscreteScheduler, 12, "leading", "v_prediction"),
               (KDPM2AncestralDiscreteScheduler, 8, "trailing", "epsilon")]


@pytest.mark.parametrize("cls,n,spacing,prediction", KDPM2_CASES)
def test_kdpm2(cls, n, spacing, prediction):
    sched = cls(beta_start=0.0001, beta_end=0.02, timestep_spacing=spacing, prediction_type=prediction)
    rec = record(sched, n, seed=n)
    family = "kdpm2-ancestral" if cls is KDPM2AncestralDiscreteScheduler else "kdpm2"
    ref = reference_for(family, dict(sched.config), n)
    assert ref.multistep and ref.stochastic == (family == "kdpm2-ancestral")
    assert_holds(gaps(ref, rec))


def test_kdpm2_midpoint_in_sigma_not_log_sigma_is_caught():
    """DPM-2's midpoint is in log σ; the arithmetic mean of σ_i and σ_{i+1} is a different sampler."""
    sched = KDPM2DiscreteScheduler()
    rec = record(sched, 10, seed=1)
    ref = reference_for("kdpm2", dict(sched.config), 10)
    ref.calls = [(s, k, (ref.sigmas[k] + ref.sigmas[k + 1]) / 2 if s == "corrector" or m else m, u, d)
                 for s, k, m, u, d in ref.calls]
    ref.call_sigmas = [ref.call_sigmas[i] if s == "predictor" else ref.calls[i][2] for i, s in enumerate(ref.stages)]
    assert_departs(gaps(ref, rec))


def test_kdpm2_ancestral_without_noise_is_caught():
    sched = KDPM2AncestralDiscreteScheduler()
    rec = record(sched, 10, seed=2)
    for c in rec["calls"]:
        c["z"] = np.zeros_like(c["z"])
    assert_departs(gaps(reference_for("kdpm2-ancestral", dict(sched.config), 10), rec))


def test_registry_has_the_new_families():
    assert {"kdpm2", "kdpm2-ancestral", "unipc", "deis", "dpmsolver-singlestep", "dpmsolver-sde", "lcm",
            "edm-euler"} <= set(REFERENCES)
    with pytest.raises(NotImplementedError, match="use_karras_sigmas=True"):
        reference_for("kdpm2", {"use_karras_sigmas": True}, 10)


# ---------------------------------------------------------------- DEIS, DPM-Solver singlestep, UniPC
def vp(cls, **config):
    """A scheduler of `cls` on the bundled model's betas (linear 1e-4 .. 0.02)."""
    return cls(beta_start=0.0001, beta_end=0.02, **config)


DEIS_CASES = [(10, dict()), (20, dict(solver_order=3, timestep_spacing="leading", steps_offset=1)),
              (12, dict(solver_order=3, prediction_type="v_prediction", timestep_spacing="trailing")),
              (16, dict(solver_order=1)), (8, dict(lower_order_final=False, prediction_type="sample"))]


@pytest.mark.parametrize("n,config", DEIS_CASES)
def test_deis(n, config):
    sched = vp(DEISMultistepScheduler, **config)
    assert_holds(gaps(reference_for("deis", dict(sched.config), n), record(sched, n, seed=n)))


@pytest.mark.parametrize("cls,family,config", [
    (DEISMultistepScheduler, "deis", dict(solver_order=3)),
    (DPMSolverSinglestepScheduler, "dpmsolver-singlestep", dict(solver_order=3)),
    (UniPCMultistepScheduler, "unipc", dict(solver_order=1))])
def test_thresholding(cls, family, config):
    """Batch 1: ppdiffusers' `_threshold_sample` fails for batch > 1 (tests/test_reference_samplers.py)."""
    sched = vp(cls, thresholding=True, sample_max_value=1.5, dynamic_thresholding_ratio=0.9, **config)
    rec = record(sched, 10, seed=3, shape=[1, 1, 8, 8])
    assert_holds(gaps(reference_for(family, dict(sched.config), 10), rec))


def test_deis_unthresholded_x0_is_caught():
    sched = vp(DEISMultistepScheduler, thresholding=True, sample_max_value=1.5)
    rec = record(sched, 10, seed=4, shape=[1, 1, 8, 8])
    assert_departs(gaps(reference_for("deis", {**dict(sched.config), "thresholding": False}, 10), rec))


SINGLE_CASES = [(10, dict()), (9, dict(solver_type="heun")), (12, dict(algorithm_type="dpmsolver")),
                (11, dict(algorithm_type="dpmsolver", solver_type="heun", prediction_type="v_prediction")),
                (8, dict(solver_order=1)), (9, dict(solver_order=3)), (10, dict(solver_order=3, solver_type="heun")),
                (12, dict(solver_order=3, algorithm_type="dpmsolver", lower_order_final=False, solver_type="heun")),
                (11, dict(solver_order=3, algorithm_type="dpmsolver", prediction_type="v_prediction"))]


@pytest.mark.parametrize("n,config", SINGLE_CASES)
def test_dpmsolver_singlestep(n, config):
    sched = vp(DPMSolverSinglestepScheduler, **config)
    assert_holds(gaps(reference_for("dpmsolver-singlestep", dict(sched.config), n), record(sched, n, seed=n)))


def test_dpmsolver_singlestep_midpoint_for_heun_is_caught():
    """The two second-order forms differ by O(h³) per step: 17 bounds here (the right form: ≤ 0.08)."""
    sched = vp(DPMSolverSinglestepScheduler, solver_type="heun", algorithm_type="dpmsolver")
    rec = record(sched, 10, seed=5)
    assert_departs(gaps(reference_for("dpmsolver-singlestep", {**dict(sched.config), "solver_type": "midpoint"}, 10),
                        rec))


# UniPC's default (solver_order=2 with the corrector) stops at its third step on paddle 3.3.1: UniC-2's
# `paddle.linalg.solve(R, b)` gets a float64 R (`paddle.to_tensor([rk, 1.0])`, rk a float32 0-d tensor,
# is float64) and a float32 b. Checked here: UniPC-1 (UniP-1 with UniC-1) and UniP-2 without corrector.
UNIPC_CASES = [(10, dict(solver_order=1)), (12, dict(solver_order=1, solver_type="bh1", predict_x0=False)),
               (10, dict(disable_corrector=list(range(10)))),
               (15, dict(disable_corrector=list(range(15)), predict_x0=False, solver_type="bh1",
                         timestep_spacing="leading", prediction_type="v_prediction"))]


@pytest.mark.parametrize("n,config", UNIPC_CASES)
def test_unipc(n, config):
    sched = vp(UniPCMultistepScheduler, **config)
    assert_holds(gaps(reference_for("unipc", dict(sched.config), n), record(sched, n, seed=n)))


@pytest.mark.parametrize("n,config", [(10, dict()), (12, dict(solver_order=3, predict_x0=False, solver_type="bh1")),
                                      (9, dict(solver_order=3, lower_order_final=False, timestep_spacing="trailing"))])
def test_unipc_higher_orders_with_a_dtype_consistent_solve(monkeypatch, n, config):
    """The default UniPC (UniC-2) and UniP-3, run with paddle.linalg.solve given both operands in
    float32 (the one change that lets them run on paddle 3.3.1; the scheduler's formulas untouched)."""
    solve = paddle.linalg.solve
    monkeypatch.setattr(paddle.linalg, "solve", lambda a, b, **kw: solve(a.cast("float32"), b.cast("float32"), **kw))
    sched = vp(UniPCMultistepScheduler, **config)
    assert_holds(gaps(reference_for("unipc", dict(sched.config), n), record(sched, n, seed=n)))


def test_unipc_unthresholded_x0_is_caught():
    sched = vp(UniPCMultistepScheduler, solver_order=1, thresholding=True, sample_max_value=1.5)
    rec = record(sched, 10, seed=6, shape=[1, 1, 8, 8])
    assert_departs(gaps(reference_for("unipc", {**dict(sched.config), "thresholding": False}, 10), rec))


# ---------------------------------------------------------------- LCM, DPM-Solver-SDE, EDM Euler
@pytest.mark.parametrize("n,config", [(4, dict()), (8, dict(clip_sample=True, beta_schedule="linear")),
                                      (6, dict(original_inference_steps=30, prediction_type="v_prediction"))])
def test_lcm(n, config):
    sched = LCMScheduler(**config)
    assert_holds(gaps(reference_for("lcm", dict(sched.config), n), record(sched, n, seed=n)))


def test_lcm_doubled_noise_is_caught():
    sched = LCMScheduler()
    rec = record(sched, 4, seed=7)
    for c in rec["calls"]:
        c["z"] = 2 * c["z"]
    assert_departs(gaps(reference_for("lcm", dict(sched.config), 4), rec))


@pytest.mark.parametrize("n,config,kw", [(6, dict(), {}), (5, dict(timestep_spacing="leading",
                                                                    prediction_type="v_prediction"), {"s_noise": 0.7})])
def test_dpmsolver_sde(n, config, kw):
    sched = vp(DPMSolverSDEScheduler, **config)
    rec = record(sched, n, seed=n, **kw)
    assert_holds(gaps(reference_for("dpmsolver-sde", dict(sched.config), n, **kw), rec))


def test_dpmsolver_sde_doubled_noise_is_caught():
    sched = vp(DPMSolverSDEScheduler)
    rec = record(sched, 5, seed=8)
    assert_departs(gaps(reference_for("dpmsolver-sde", dict(sched.config), 5, s_noise=2.0), rec))


def test_edm_euler():
    """EDMEuler needs EDM's own σ config (it cannot mean anything on the bundled DDPM model); with its
    defaults the reference holds, and its x_0 ~ N(0, σ_max²) differs from ppdiffusers' √(σ_max² + 1)
    by exactly that."""
    sched = EDMEulerScheduler()
    rec = record(sched, 10, seed=9)
    ref = reference_for("edm-euler", dict(sched.config), 10)
    worst = gaps(ref, rec)
    assert worst.pop("init_noise_sigma") * RTOL == pytest.approx(1 - 80 / (80 ** 2 + 1) ** 0.5, rel=1e-3)
    assert_holds(worst)
    with pytest.raises(NotImplementedError, match="s_churn > 0"):
        reference_for("edm-euler", dict(sched.config), 10, s_churn=1.0)


def test_edm_euler_wrong_preconditioning_is_caught():
    sched = EDMEulerScheduler()
    rec = record(sched, 10, seed=9)
    assert_departs(gaps(reference_for("edm-euler", {**dict(sched.config), "sigma_data": 1.0}, 10), rec))


# ---------------------------------------------------------------- what `ppddpm verify` will replay
RECORDED = {"kdpm2": (KDPM2DiscreteScheduler, {}), "kdpm2-ancestral": (KDPM2AncestralDiscreteScheduler, {}),
            "unipc": (UniPCMultistepScheduler, {"solver_order": 1}), "deis": (DEISMultistepScheduler, {}),
            "dpmsolver-singlestep": (DPMSolverSinglestepScheduler, {}), "dpmsolver-sde": (DPMSolverSDEScheduler, {}),
            "lcm": (LCMScheduler, {}), "edm-euler": (EDMEulerScheduler, {})}


@pytest.mark.parametrize("family", RECORDED)
def test_a_recorded_run_replays_through_its_reference(unet, family):
    """A run of the bundled model's config recorded by ppddpm (every=1, all fields) carries what the
    reference needs: the saved scheduler config, each call's x_t, model output, z and stage. Its
    `meta["num_inference_steps"]` counts calls (2n − 1 for the two-call samplers); the reference takes n."""
    import ppddpm

    cls, overrides = RECORDED[family]
    pipe = ppddpm.SamplerPipeline(unet=unet,
                                  scheduler=ppddpm.with_config(ppddpm.model.builders.ddpm_scheduler(), cls=cls,
                                                               **overrides))
    pipe.set_progress_bar_config(disable=True)
    traj = ppddpm.sample_trajectory(pipe, seed=5, num_inference_steps=6, every=1, fields="all")
    assert traj.meta["sampler"] == family
    ref = reference_for(family, traj.meta["scheduler_config"], 6)
    assert len(ref.timesteps) == len(traj) and ref.stages == [s or "" for s in traj.stages.tolist()]
    np.testing.assert_allclose(ref.timesteps, traj.timesteps, rtol=1e-6, atol=T_ATOL)   # EDM's c_noise: float32
    for i in range(len(traj)):
        got = ref.step(i, traj.model_output[i], traj.sample[i], noise=traj.noise[i])
        scale = max(np.abs(traj.sample[i]).max(), np.abs(got.prev_sample).max(), np.abs(got.pred_original_sample).max())
        b = bound(ref, i)
        assert np.abs(got.prev_sample - traj.prev_sample[i]).max() <= b * scale, (i, traj.stages[i])
        assert np.abs(got.pred_original_sample - traj.pred_original_sample[i]).max() <= b * scale, i
        std = traj.noise_std[i]
        assert abs(got.noise_std - std) <= b * max(got.noise_std, 1e-12) + 1e-7, (i, got.noise_std, std)
