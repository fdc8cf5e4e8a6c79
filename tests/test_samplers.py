"""Recording any sampler: every scheduler family ppddpm adapts, on real pipelines.

The specification: for each family, recording `every=1` is bitwise the run a hand-written loop
over that scheduler's own `step` makes with the same seed (so the recorder neither changes the
values nor disturbs a sampler's state or random stream), x̂_0 is the one the step used, and the
recorded noise is what the step added.
"""
import numpy as np
import paddle
import pytest
from ppdiffusers import (DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, DEISMultistepScheduler,
                         DPMSolverMultistepScheduler, DPMSolverSDEScheduler, DPMSolverSinglestepScheduler,
                         EDMEulerScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,
                         HeunDiscreteScheduler, IPNDMScheduler, KDPM2AncestralDiscreteScheduler,
                         KDPM2DiscreteScheduler, LCMScheduler, LMSDiscreteScheduler, PNDMScheduler,
                         UniPCMultistepScheduler)

import ppddpm
from ppddpm.core.config import with_config
from ppddpm.model.builders import ddpm_scheduler
from hand_loop import hand_loop

STEPS = 8


def make(cls, **overrides):
    return with_config(ddpm_scheduler(), cls=cls, **overrides)


# (scheduler class, config overrides, pipeline class, pipeline kwargs); the pipeline is the one a
# user runs: DDPMPipeline / DDIMPipeline for their schedulers, SamplerPipeline for the rest
FAMILIES = {
    "ddpm": (DDPMScheduler, {}, DDPMPipeline, {}),
    "ddim-eta1": (DDIMScheduler, {}, DDIMPipeline, {"eta": 1.0}),
    "ddim-eta0": (DDIMScheduler, {}, DDIMPipeline, {"eta": 0.0}),
    "pndm": (PNDMScheduler, {}, ppddpm.SamplerPipeline, {}),
    "euler": (EulerDiscreteScheduler, {}, ppddpm.SamplerPipeline, {}),
    "euler-ancestral": (EulerAncestralDiscreteScheduler, {}, ppddpm.SamplerPipeline, {}),
    "lms": (LMSDiscreteScheduler, {}, ppddpm.SamplerPipeline, {}),
    "heun": (HeunDiscreteScheduler, {}, ppddpm.SamplerPipeline, {}),
    "dpmsolver++": (DPMSolverMultistepScheduler, {}, ppddpm.SamplerPipeline, {}),
    "sde-dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"},
                        ppddpm.SamplerPipeline, {}),
    "kdpm2": (KDPM2DiscreteScheduler, {}, ppddpm.SamplerPipeline, {}),
    "kdpm2-ancestral": (KDPM2AncestralDiscreteScheduler, {}, ppddpm.SamplerPipeline, {}),
    # UniPC's default (solver_order=2, UniC-2 corrector) runs through ppddpm's fix of its solve's dtype mix
    # (ppddpm.core.fixes; the hand loop gets the test's own, solve_in_float32), and UniP-3 with it; UniPC-1 and
    # UniP-2 without the corrector need no fix
    "unipc": (UniPCMultistepScheduler, {}, ppddpm.SamplerPipeline, {}),
    "unipc-3": (UniPCMultistepScheduler, {"solver_order": 3, "predict_x0": False}, ppddpm.SamplerPipeline, {}),
    "unipc-1": (UniPCMultistepScheduler, {"solver_order": 1}, ppddpm.SamplerPipeline, {}),
    "unipc-p2-noise-prediction": (UniPCMultistepScheduler,
                                  {"predict_x0": False, "disable_corrector": list(range(STEPS))},
                                  ppddpm.SamplerPipeline, {}),
    "deis": (DEISMultistepScheduler, {}, ppddpm.SamplerPipeline, {}),
    "dpmsolver-singlestep": (DPMSolverSinglestepScheduler, {}, ppddpm.SamplerPipeline, {}),
    "dpmsolver-singlestep-3": (DPMSolverSinglestepScheduler, {"solver_order": 3, "algorithm_type": "dpmsolver"},
                               ppddpm.SamplerPipeline, {}),
    "dpmsolver-sde": (DPMSolverSDEScheduler, {}, ppddpm.SamplerPipeline, {}),
    "lcm": (LCMScheduler, {}, ppddpm.SamplerPipeline, {}),
    "edm-euler": (EDMEulerScheduler, {}, ppddpm.SamplerPipeline, {}),   # runs, but on EDM's σ config (see adapter)
}


def solve_in_float32(monkeypatch):
    """The oracle's answer to UniPC's upstream dtype mix, written here: `paddle.linalg.solve` given a float64
    R and a float32 b (paddle 3.3) solves both in float32, as diffusers' torch original builds R; operands
    of one dtype are paddle's own solve."""
    solve = paddle.linalg.solve

    def solve32(a, b, **kwargs):
        if a.dtype == b.dtype:
            return solve(a, b, **kwargs)
        return solve(a.astype("float32"), b.astype("float32"), **kwargs)

    monkeypatch.setattr(paddle.linalg, "solve", solve32)


@pytest.mark.parametrize("family", FAMILIES)
def test_recording_any_sampler_is_bitwise_the_hand_loop(unet, family, monkeypatch):
    cls, overrides, pipeline_cls, call_kwargs = FAMILIES[family]
    pipe = pipeline_cls(unet=unet, scheduler=make(cls, **overrides))
    pipe.set_progress_bar_config(disable=True)
    traj = ppddpm.sample_trajectory(pipe, seed=11, num_inference_steps=STEPS, every=1, fields="all",
                                    pipe_kwargs=call_kwargs)
    with monkeypatch.context() as patched:
        solve_in_float32(patched)
        hand = hand_loop(unet, make(cls, **overrides), 11, STEPS, step_kwargs=call_kwargs)
    assert traj.complete and len(traj) == len(hand.prev_sample)
    assert np.array_equal(traj.prev_sample, hand.prev_sample)          # values and RNG stream untouched
    returned = [a for a in hand.returned_x0 if a is not None]
    if returned:                                              # the x̂_0 the step returned, bitwise
        assert len(returned) == len(hand.returned_x0)
        assert np.array_equal(traj.pred_original_sample, np.stack(returned))
    assert traj.scheduler == cls.__name__
    assert traj.meta["scheduler_config"]["num_train_timesteps"] == 1000
    assert np.isfinite(traj.pred_original_sample).all() and np.isfinite(traj.noise_std).all()


def test_a_ddpm_pipeline_whose_scheduler_was_swapped_records_what_it_ran_and_says_so(unet, pipe):
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    with pytest.warns(ppddpm.core.recorder.UnscaledLoopWarning, match="SamplerPipeline.*with_sampler"):
        traj = ppddpm.sample_trajectory(pipe, seed=5, num_inference_steps=STEPS, every=1)
    hand = hand_loop(unet, EulerAncestralDiscreteScheduler.from_config(ddpm_scheduler().config), 5, STEPS,
                     scaled=False)
    assert traj.scheduler == "EulerAncestralDiscreteScheduler"
    assert np.array_equal(traj.prev_sample, hand.prev_sample)


def test_heun_records_which_stage_each_model_call_is(unet):
    pipe = ppddpm.SamplerPipeline(unet=unet, scheduler=make(HeunDiscreteScheduler))
    pipe.set_progress_bar_config(disable=True)
    traj = ppddpm.sample_trajectory(pipe, seed=2, num_inference_steps=4, every=1)
    # 4 timesteps, 7 model calls: an Euler predictor from t_k, then the corrector evaluates the
    # model at t_{k+1} (where the next predictor starts); the last step is the predictor alone
    assert traj.stages.tolist() == ["predictor", "corrector"] * 3 + ["predictor"]
    ts = traj.timesteps.tolist()
    assert len(ts) == 7 and ts[1] == ts[2] and ts[3] == ts[4] and ts[5] == ts[6] and ts[0] > ts[1]


@pytest.mark.parametrize("family", ["ddim-eta1", "euler-ancestral", "ddpm"])
def test_recorded_noise_is_what_the_step_added(unet, family):
    """prev = (the step's deterministic part) + σ·z: recomputing the step with z as data (DDIM)
    or its deterministic part by hand, the recorded σ·z closes the gap to float32 rounding."""
    cls, overrides, pipeline_cls, call_kwargs = FAMILIES[family]
    pipe = pipeline_cls(unet=unet, scheduler=make(cls, **overrides))
    pipe.set_progress_bar_config(disable=True)
    traj = ppddpm.sample_trajectory(pipe, seed=3, num_inference_steps=STEPS, fields="all", pipe_kwargs=call_kwargs)
    sched = make(cls, **overrides)
    sched.set_timesteps(STEPS)
    assert (traj.noise_std[:-1] > 0).all()
    for i, t in enumerate(sched.timesteps):
        x_t, eps, z = (paddle.to_tensor(a) for a in (traj.sample[i], traj.model_output[i], traj.noise[i]))
        if family == "ddim-eta1":
            again = sched.step(eps, t, x_t, eta=1.0, variance_noise=z).prev_sample.numpy()
            assert np.array_equal(again, traj.prev_sample[i])                    # z is the noise, as data
            quiet = sched.step(eps, t, x_t, eta=1.0, variance_noise=paddle.zeros_like(z)).prev_sample.numpy()
        elif family == "euler-ancestral":
            sched._step_index = i
            s_from, s_to = float(sched.sigmas[i]), float(sched.sigmas[i + 1])
            s_down = (s_to ** 2 - traj.noise_std[i] ** 2) ** 0.5
            quiet = (x_t + (x_t - (x_t - s_from * eps)) / s_from * (s_down - s_from)).numpy()
        else:
            from conftest import expected_prev

            quiet = expected_prev(sched, "posterior", traj.sample[i], traj.model_output[i],
                                  np.zeros_like(traj.noise[i]), int(t))
        scale = np.abs(traj.sample[i]).max() + np.abs(traj.model_output[i]).max() + 1
        np.testing.assert_allclose(traj.prev_sample[i], quiet + traj.noise_std[i] * traj.noise[i],
                                   rtol=0, atol=1e-5 * scale)   # float32: a few roundings of |x_t|, |ε̂|
    if family == "ddpm":
        assert not traj.noise[-1].any() and traj.noise_std[-1] == 0   # no noise at the last step


@pytest.mark.parametrize("family", ["kdpm2", "kdpm2-ancestral", "dpmsolver-sde"])
def test_two_call_samplers_record_their_stages(unet, family):
    cls, overrides, pipeline_cls, _ = FAMILIES[family]
    pipe = pipeline_cls(unet=unet, scheduler=make(cls, **overrides))
    pipe.set_progress_bar_config(disable=True)
    traj = ppddpm.sample_trajectory(pipe, seed=2, num_inference_steps=4, every=1)
    # like Heun: a first-order step to the midpoint, then the evaluation there; the last timestep
    # (to σ = 0) is the predictor alone
    assert traj.stages.tolist() == ["predictor", "corrector"] * 3 + ["predictor"]


def _sigma_table(family, steps):
    """σ_i of the timesteps, then 0, from the scheduler's own table without its repetitions."""
    sched = make(FAMILIES[family][0])
    sched.set_timesteps(steps)
    table = sched.sigmas.numpy().astype(np.float64)
    return np.concatenate([table[:1], table[1:][table[1:] != table[:-1]]])


@pytest.mark.parametrize("family", ["kdpm2-ancestral", "dpmsolver-sde", "lcm"])
def test_new_stochastic_samplers_record_the_noise_they_added(unet, family):
    """prev = (the step's deterministic part, from the recorded x̂_0) + σ·z with the recorded σ
    and z: Karras et al.'s ancestral split (σ_down = √(σ_to² − σ_up²)) for KDPM2 ancestral and
    DPM-Solver-SDE, √ᾱ_prev f + √(1−ᾱ_prev) z for LCM."""
    cls, overrides, pipeline_cls, call_kwargs = FAMILIES[family]
    pipe = pipeline_cls(unet=unet, scheduler=make(cls, **overrides))
    pipe.set_progress_bar_config(disable=True)
    traj = ppddpm.sample_trajectory(pipe, seed=3, num_inference_steps=STEPS, fields="all", pipe_kwargs=call_kwargs)
    x_t, eps, x0, prev, z = (traj.sample.astype(np.float64), traj.model_output, traj.pred_original_sample,
                             traj.prev_sample, traj.noise)
    noisy = traj.noise_std > 0
    if family == "lcm":
        sched = make(cls)
        sched.set_timesteps(STEPS)
        alphas, ts = sched.alphas_cumprod.numpy().astype(np.float64), sched.timesteps.numpy()
        quiet = [alphas[ts[i + 1]] ** 0.5 * x0[i] if i + 1 < len(ts) else x0[i] for i in range(len(ts))]
        assert noisy[:-1].all() and not noisy[-1]
    else:
        sigmas, quiet, k = _sigma_table(family, STEPS), [], 0
        for i, stage in enumerate(traj.stages):
            base = x_t[i] if stage == "predictor" else x_t[i - 1]     # the corrector steps from the kept x_σi
            s_from, s_next = sigmas[k], sigmas[k + 1]
            if stage == "corrector" or s_next == 0:
                k += 1
            if s_next == 0:                                           # the last step: Euler to σ = 0
                quiet.append(x0[i])
                continue
            s_to = (s_from * s_next) ** 0.5 if (stage == "predictor" and family == "dpmsolver-sde") else s_next
            s_up = min(s_to, (s_to ** 2 * (s_from ** 2 - s_to ** 2) / s_from ** 2) ** 0.5)   # Karras et al.
            s_down = (s_to ** 2 - s_up ** 2) ** 0.5
            if noisy[i]:                                              # σ_up as recorded (float32 tables)
                assert abs(traj.noise_std[i] - s_up) <= 1e-5 * s_up
            if family == "dpmsolver-sde":                             # DPM-Solver++(1) to σ_down
                quiet.append(x0[i] + s_down / s_from * (base - x0[i]))
            elif stage == "predictor":                                # KDPM2: Euler to the log-σ midpoint
                quiet.append(base + eps[i] * ((s_from * s_down) ** 0.5 - s_from))     # of σ_i and σ_down
            else:                                                     # the midpoint's slope ε, to σ_down
                quiet.append(base + eps[i] * (s_down - s_from))
        assert noisy.tolist() == ([s == "corrector" for s in traj.stages] if family == "kdpm2-ancestral" else
                                  [True] * (len(traj) - 1) + [False])
    for i in range(len(traj)):
        scale = np.abs(x_t[i]).max() + np.abs(eps[i]).max() + 1
        np.testing.assert_allclose(prev[i], quiet[i] + traj.noise_std[i] * z[i], rtol=0,
                                   atol=2e-6 * scale)   # float32: a few roundings of |x_σ| (up to ~60), |ε̂|
    assert 0.5 < z[noisy].std() < 1.5 and not z[~noisy].any()     # standard normal z where added, none elsewhere


@pytest.mark.parametrize("family", ["unipc", "unipc-1", "unipc-p2-noise-prediction", "deis", "dpmsolver-singlestep",
                                    "dpmsolver-singlestep-3"])
def test_solver_x0_is_the_prediction_it_kept(unet, family):
    """Where the step keeps x̂_0 (data prediction) it is recorded as kept, where it keeps ε it is
    reconstructed by eq. (15): either way, without thresholding, the same as eq. (15) on the model
    output to float32 rounding."""
    cls, overrides, pipeline_cls, _ = FAMILIES[family]
    pipe = pipeline_cls(unet=unet, scheduler=make(cls, **overrides))
    pipe.set_progress_bar_config(disable=True)
    traj = ppddpm.sample_trajectory(pipe, seed=4, num_inference_steps=STEPS, fields="all")
    np.testing.assert_allclose(traj.pred_original_sample, traj.pred_original_sample_unclipped, rtol=0, atol=1e-4)
    assert not traj.noise_std.any() and not traj.noise.any()


def test_dpmsolver_x0_is_the_data_prediction_it_kept(unet):
    pipe = ppddpm.SamplerPipeline(unet=unet, scheduler=make(DPMSolverMultistepScheduler))
    pipe.set_progress_bar_config(disable=True)
    traj = ppddpm.sample_trajectory(pipe, seed=4, num_inference_steps=STEPS, fields="all")
    # DPM-Solver++ keeps x̂_0 = (x_t − σ_t ε)/α_t; reconstructed by eq. (15) it agrees to rounding
    np.testing.assert_allclose(traj.pred_original_sample, traj.pred_original_sample_unclipped, rtol=0, atol=1e-4)


def test_clip_fraction_measures_clipping_not_rounding(unet):
    """With clipping off the share is exactly 0, even where x̂_0 is reconstructed (DPM-Solver);
    with clipping on it is the share of |x̂_0| > 1 before the clip."""
    pipe = ppddpm.SamplerPipeline(unet=unet, scheduler=make(DPMSolverMultistepScheduler))
    pipe.set_progress_bar_config(disable=True)
    assert not ppddpm.sample_trajectory(pipe, seed=4, num_inference_steps=STEPS).clip_fraction.any()
    pipe = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler(clip_sample=True))
    pipe.set_progress_bar_config(disable=True)
    traj = ppddpm.sample_trajectory(pipe, seed=4, num_inference_steps=STEPS, fields="all")
    raw = traj.pred_original_sample_unclipped
    np.testing.assert_allclose(traj.clip_fraction, (np.abs(raw) > 1).mean(axis=(2, 3, 4)), rtol=0, atol=1e-7)
    assert traj.clip_fraction[0, 0] > 0


def test_a_scheduler_without_adapter_or_x0_is_refused_in_one_line(unet):
    pipe = ppddpm.SamplerPipeline(unet=unet, scheduler=make(IPNDMScheduler))
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(TypeError, match=r"IPNDMScheduler.step returns no pred_original_sample.*supported: "
                                        r"DDPMScheduler.*EulerDiscreteScheduler"):
        ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=3)
    assert "step" not in pipe.scheduler.__dict__
    with pytest.raises(TypeError, match="needs a ppdiffusers scheduler.*got int"):
        with ppddpm.record(3):
            pass


def test_variants_written_for_ddpm_refuse_other_schedulers(unet):
    """patch_step puts a formula on *that* scheduler: DDPM's formulas refuse DDIM's. compare
    instead runs a DDPM variant on a DDPMScheduler made from the pipeline's config, unless the
    variant names no scheduler to run on."""
    with pytest.raises(TypeError, match="patch_step needs DDPMScheduler.*got EulerDiscreteScheduler"):
        with ppddpm.patch_step(make(EulerDiscreteScheduler), "posterior"):
            pass
    ddim = DDIMPipeline(unet=unet, scheduler=make(DDIMScheduler))
    report = ppddpm.compare(ddim, ["ppdiffusers", "direct"], num_inference_steps=3)
    assert report.meta["variants"]["direct"]["scheduler"] == "DDPMScheduler"
    assert report.meta["variants"]["ppdiffusers"]["scheduler"] == "DDIMScheduler"

    @ppddpm.register_variant("test-ddpm-only", scheduler=None)
    def ddpm_only(scheduler, model_output, timestep, sample, generator=None, return_dict=True):
        return ppddpm.get_variant("posterior").step(scheduler, model_output, timestep, sample, generator=generator)

    try:
        with pytest.raises(TypeError, match="variant 'test-ddpm-only' needs DDPMScheduler.*got DDIMScheduler"):
            ppddpm.compare(ddim, ["ppdiffusers", "test-ddpm-only"], num_inference_steps=3)
    finally:
        ppddpm.unregister_variant("test-ddpm-only")


def test_learned_variance_is_recorded(unet):
    """variance_type="learned_range": the UNet predicts the variance in extra channels; σ is
    recorded as the mean over elements of the per-element std."""
    from ppddpm.model.builders import small_unet

    paddle.seed(0)
    wide = small_unet(resolution=8, channels=1)
    wide = type(wide)(**{**dict(wide.config), "out_channels": 2})
    wide.eval()
    sched = ddpm_scheduler(variance_type="learned_range")
    pipe = DDPMPipeline(unet=wide, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    traj = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=STEPS, fields="all")
    assert traj.model_output.shape[2] == 2 and traj.prev_sample.shape[2] == 1
    assert (traj.noise_std[:-1] > 0).all() and traj.noise_std[-1] == 0


@pytest.mark.parametrize("family", ["ddpm", "ddim-eta0", "euler", "heun"])
def test_a_loop_that_scales_as_its_scheduler_needs_records_without_a_warning(unet, family):
    import warnings

    cls, overrides, pipeline_cls, call_kwargs = FAMILIES[family]
    pipe = pipeline_cls(unet=unet, scheduler=make(cls, **overrides))
    pipe.set_progress_bar_config(disable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ppddpm.core.recorder.UnscaledLoopWarning)
        ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=3, pipe_kwargs=call_kwargs)


def test_the_step_arguments_a_replay_needs_are_in_the_metadata(unet):
    pipe = DDIMPipeline(unet=unet, scheduler=make(DDIMScheduler))
    pipe.set_progress_bar_config(disable=True)
    traj = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=3, every=3,
                                    pipe_kwargs={"eta": 0.5, "use_clipped_model_output": True})
    assert traj.meta["step_arguments"] == {"eta": 0.5, "use_clipped_model_output": True}


def test_the_unipc_solve_fix_holds_only_inside_its_block():
    """What stops UniPC's default (paddle refuses `solve(float64 R, float32 b)`) runs inside
    `ppddpm.upstream_fixes()`, in float32, equal to numpy's solve to float32 rounding; a one-dtype solve
    is paddle's own; outside the block paddle's function is back and refuses the mix again."""
    stock = paddle.linalg.solve
    R = paddle.to_tensor([[2.0, 1.0], [1.0, 3.0]], dtype="float64")
    b = paddle.to_tensor([1.0, 2.0], dtype="float32")
    with pytest.raises(ValueError, match="float"):
        stock(R, b)
    with ppddpm.upstream_fixes():
        mixed, single = paddle.linalg.solve(R, b), paddle.linalg.solve(R.astype("float32"), b)
    assert mixed.dtype == single.dtype == paddle.float32
    np.testing.assert_allclose(mixed.numpy(), np.linalg.solve([[2.0, 1.0], [1.0, 3.0]], [1.0, 2.0]),
                               rtol=1e-6)      # float32 solve of a 2×2 system of condition number 2.6: a few ulps
    assert np.array_equal(single.numpy(), stock(R.astype("float32"), b).numpy())
    assert paddle.linalg.solve is stock
    with pytest.raises(ValueError, match="float"):
        paddle.linalg.solve(R, b)


def test_unipcs_default_records_and_verifies_in_a_loop_ppddpm_does_not_run(unet):
    """The fix through the step observer alone: a hand-written loop over UniPC's default config,
    recorded with `ppddpm.record(scheduler)`, goes past the third step and holds against the float64
    reference; nothing stays installed after it."""
    stock, sched = paddle.linalg.solve, make(UniPCMultistepScheduler)
    with ppddpm.record(sched, fields="all") as traj:
        hand_loop(unet, sched, 2, STEPS)
    assert traj.complete and len(traj) == STEPS
    report = ppddpm.verify(traj)
    assert report.ok, report.table()
    assert paddle.linalg.solve is stock
