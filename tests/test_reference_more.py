"""The float64 references of the samplers added by issue 20 item 5, against the REAL schedulers.

Same shape as tests/test_reference_samplers.py: a stock ppdiffusers scheduler runs a hand loop as
ppdiffusers' pipelines write it (set_timesteps first, x_T = randn · init_noise_sigma, the model sees
scale_model_input) with a cheap deterministic function standing in for the UNet (the scheduler is
under test, not a model). Every call is seen through ppddpm's step observer (`ppddpm.steps`), which
supplies what these steps do not return: x̂_0 as the step used it (read from the state it keeps, or
reconstructed — the recorder's own values, so the adapter is held to the paper too) and the noise z
it added (replayed from the RNG, or watched from DPM-Solver-SDE's Brownian tree). The reference
replays every call from the recorded x_t / model output / z and must reproduce the timesteps,
init_noise_sigma, the model input, x̂_0 and prev_sample within float32 rounding; a deliberately
wrong step must miss by ten times that.
"""
import numpy as np
import paddle
import pytest
from ppdiffusers import KDPM2AncestralDiscreteScheduler, KDPM2DiscreteScheduler
from test_reference_samplers import RTOL, assert_departs, assert_holds, model

from ppddpm.reference import REFERENCES, reference_for
from ppddpm.steps import StepObserver, observe

SHAPE = [2, 1, 8, 8]
# Timesteps: the grid's integer / float32 timesteps agree exactly with float64 once rounded to
# float32; the midpoints' fractional timesteps are computed by ppdiffusers from float32 σ tables
# (a log-σ interpolation whose relative error is a few float32 roundings of σ, ~1e-6, times
# |d t / d log σ| ≲ 1e3 near t = 0; measured ≤ 6e-4): 1e-2 of a timestep is far below one training step.
T_ATOL = 1e-2


def record(scheduler, n, seed=0, **step_kwargs):
    """Run `scheduler` for n steps by hand with ppddpm's observer on it; every call's t, x_t, model
    input, model output, observed z (zeros where none was added), prev_sample and x̂_0 as used."""
    scheduler.set_timesteps(n)
    paddle.seed(seed)
    x = paddle.randn(SHAPE) * scheduler.init_noise_sigma
    seen = []
    rec = {"timesteps": scheduler.timesteps.numpy().astype(np.float64), "x_T": x.numpy(),
           "init_noise_sigma": float(scheduler.init_noise_sigma), "calls": []}
    with observe(scheduler, StepObserver(seen.append, want_noise=True)):
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(x, t)
            out = scheduler.step(model(inp, t), t, x, **step_kwargs)
            r = seen.pop()
            rec["calls"].append({k: np.asarray(v.numpy() if hasattr(v, "numpy") else v, np.float64) for k, v in
                                 (("x", r.sample), ("input", inp), ("eps", r.model_output), ("prev", out.prev_sample),
                                  ("x0", r.x0), ("z", r.noise if r.noise is not None else np.zeros(SHAPE)))})
            rec["calls"][-1]["stage"] = r.stage
            x = out.prev_sample
    return rec


def gaps(ref, rec):
    """Replay every call through `ref`: the largest relative gap of each quantity (relative to the
    largest magnitude of that call, as tests/test_reference_samplers.py measures it)."""
    assert len(ref.timesteps) == len(rec["calls"]) and ref.stages == [c["stage"] or "" for c in rec["calls"]]
    np.testing.assert_allclose(ref.timesteps, rec["timesteps"], rtol=0, atol=T_ATOL)
    worst = {"init_noise_sigma": abs(ref.init_noise_sigma / rec["init_noise_sigma"] - 1), "input": 0.0, "x0": 0.0,
             "prev": 0.0}
    for i, c in enumerate(rec["calls"]):
        got = ref.step(i, c["eps"], c["x"], noise=c["z"])
        scale = max(np.abs(c["x"]).max(), np.abs(got.prev_sample).max(), np.abs(got.pred_original_sample).max())
        worst["input"] = max(worst["input"], np.abs(ref.scale_model_input(i, c["x"]) - c["input"]).max() /
                             np.abs(c["input"]).max())
        worst["prev"] = max(worst["prev"], np.abs(got.prev_sample - c["prev"]).max() / scale)
        worst["x0"] = max(worst["x0"], np.abs(got.pred_original_sample - c["x0"]).max() / scale)
    return worst


# ---------------------------------------------------------------- KDPM2, KDPM2 ancestral
KDPM2_CASES = [(KDPM2DiscreteScheduler, 10, "linspace", "epsilon"), (KDPM2DiscreteScheduler, 25, "leading", "v_prediction"),
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
    assert {"kdpm2", "kdpm2-ancestral"} <= set(REFERENCES)
    with pytest.raises(NotImplementedError, match="use_karras_sigmas=True"):
        reference_for("kdpm2", {"use_karras_sigmas": True}, 10)
