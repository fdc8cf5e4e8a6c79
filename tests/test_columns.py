"""The per-step columns (issue 30): named numbers written once by whoever knows them, moved by name to
both file formats, right against the float64 references, one place to add one.

Oracles: numpy on the recorded frames themselves, `ppddpm.reference` (float64, written from the papers),
and files read back by `Trajectory.load` from disk.
"""
import numpy as np
import pytest
from ppdiffusers import (DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler,
                         EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler,
                         KDPM2AncestralDiscreteScheduler, KDPM2DiscreteScheduler)

import ppddpm
from ppddpm.core.columns import COLUMNS, Column, register_column, unregister_column
from ppddpm.core.config import with_config
from ppddpm.errors import BadValue
from ppddpm.model.builders import ddpm_scheduler
from ppddpm.reference import reference_for

STEPS = 6
U32 = 2.0 ** -24
# ᾱ_t is ppdiffusers' float32 product of up to T = 1000 factors: a relative drift of at most T·u from the
# float64 product (6e-5); σ = √((1−ᾱ)/ᾱ) carries it divided by 2(1 − ᾱ) (1 − ᾱ cancels near t = 0)
DRIFT = 1000 * U32


@pytest.fixture
def extra_columns():
    """Two columns added in one place each: a number per step and one per sample, read off the step."""
    added = [register_column(Column("max_abs_x0", "max |x̂_0| the step used",
                                    of=lambda rec: rec.pred_original_sample.abs().max())),
             register_column(Column("mean_x_t", "each sample's mean of the step's input x_t", per_sample=True,
                                    of=lambda rec: rec.sample.reshape([rec.sample.shape[0], -1]).mean(axis=1)))]
    yield added
    for column in added:
        unregister_column(column.name)


def test_a_column_added_in_one_place_is_in_both_file_formats(pipe, extra_columns, tmp_path):
    """register_column is the whole change: the recorder reads it off each step on the device, the
    transfer, the writer, the .npz and the streamed folder move it by name, and it loads back."""
    kwargs = dict(seed=3, num_inference_steps=STEPS, batch_size=2, every=2, fields=("sample", "pred_original_sample"))
    memory = ppddpm.sample_trajectory(pipe, chunk=2, **kwargs)
    ppddpm.sample_trajectory(pipe, store="disk", path=tmp_path / "run", **kwargs)
    for traj in (memory, ppddpm.Trajectory.load(memory.save(tmp_path / "run.npz")),
                 ppddpm.Trajectory.load(tmp_path / "run")):
        x0, x_t = traj.pred_original_sample.astype(np.float64), traj.sample.astype(np.float64)
        np.testing.assert_array_equal(traj.column("max_abs_x0"), np.abs(x0).max(axis=(1, 2, 3, 4)))
        # a float32 mean of 64 values, against float64: ≤ 64 roundings of values below max|x_t|
        bound = 64 * U32 * np.abs(x_t).max()
        np.testing.assert_allclose(traj.column("mean_x_t"), x_t.mean(axis=(2, 3, 4)), rtol=0, atol=bound)
        assert traj.column("mean_x_t").shape == (len(traj), 2) and traj.column("call").tolist() == [1, 3, 5]


def test_a_column_name_must_be_new_and_not_a_field(extra_columns):
    for name in ("prev_sample", "noise_std", "max_abs_x0", "not a name"):
        with pytest.raises(BadValue, match="a column needs a new name"):
            register_column(Column(name, "…", of=lambda rec: 0.0))
    with pytest.raises(BadValue, match="with of="):
        register_column(Column("later", "…"))
    with pytest.raises(BadValue, match="built-in"):
        unregister_column("noise_std")
    assert "noise_std" in COLUMNS


def _run(unet, cls):
    """A run of `cls` on the UNet in the pipeline a user runs it in (DDIM: η = 1, its noise recorded too)."""
    scheduler = with_config(ddpm_scheduler(), cls=cls)
    pipeline = {DDPMScheduler: DDPMPipeline, DDIMScheduler: DDIMPipeline}.get(cls, ppddpm.SamplerPipeline)
    pipe = pipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"eta": 1.0} if cls is DDIMScheduler else {}
    return ppddpm.sample_trajectory(pipe, seed=5, num_inference_steps=STEPS, pipe_kwargs=kwargs)


def _reference(traj):
    meta = traj.meta
    return reference_for(meta["sampler"], meta["scheduler_config"], meta["set_timesteps"],
                         **meta["step_arguments"])


@pytest.mark.parametrize("cls", [EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, HeunDiscreteScheduler,
                                 KDPM2DiscreteScheduler, KDPM2AncestralDiscreteScheduler])
def test_sigma_space_runs_keep_the_noise_level_of_each_call(unet, cls):
    """σ of each call's input is the reference's σ for that call (the model sees x/√(σ²+1)); the σ of
    its output is the next call's input's (0 after the last: the image itself)."""
    traj = _run(unet, cls)
    ref = _reference(traj)
    level, level_prev = traj.column("noise_level"), traj.column("noise_level_prev")
    expected = np.array([ref.model_sigma(int(c)) for c in traj.column("call")])
    alpha_bar = 1 / (expected ** 2 + 1)
    assert np.all(np.abs(level - expected) <= DRIFT / (2 * (1 - alpha_bar)) * expected + 1e-7), (level, expected)
    np.testing.assert_allclose(level_prev[:-1], level[1:], rtol=1e-6)
    assert level_prev[-1] == 0 and "alpha_bar" not in traj.columns


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler])
def test_variance_preserving_runs_keep_alpha_bar_and_its_next(unet, cls):
    """ᾱ_t of each step and ᾱ_prev of the x_{t−1} it makes, against the reference's ᾱ of the timesteps it
    visits (DDPM, DDIM: eq. 4 on its grid; DPM-Solver: α_t² of its σ grid, ᾱ = 1/(σ² + 1))."""
    traj = _run(unet, cls)
    ref = _reference(traj)
    calls = traj.column("call")
    if hasattr(ref, "prev_timesteps"):
        expected = [[ref.alpha_bar(ref.timesteps[c]) for c in calls],
                    [ref.alpha_bar(ref.prev_timesteps[c]) for c in calls]]
    else:
        expected = [ref.alpha_t[calls] ** 2, ref.alpha_t[calls + 1] ** 2]
    for name, values in zip(("alpha_bar", "alpha_bar_prev"), expected):
        np.testing.assert_allclose(traj.column(name), values, rtol=DRIFT, err_msg=name)
    np.testing.assert_array_equal(traj.column("alpha_bar_prev")[:-1], traj.column("alpha_bar")[1:])
    assert "noise_level" not in traj.columns


def test_the_clipped_share_counts_thresholding_per_sample(unet):
    """With dynamic thresholding (Imagen: s = clip(quantile(|x̂_0|, ratio), 1, max) per sample), the share
    of each sample's x̂_0 above its s, written out in numpy; clip_map draws exactly that (0.4 drew zeros).
    ppdiffusers 0.29's own thresholding fails for batch > 1 (patches/fix-threshold-batch.diff): the run
    takes the "posterior" variant, the same formula per sample."""
    pipe = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler(clip_sample=False, thresholding=True,
                                                            dynamic_thresholding_ratio=0.9, sample_max_value=4.0))
    pipe.set_progress_bar_config(disable=True)
    with ppddpm.patch_step(pipe.scheduler, "posterior"):     # the stock step, bitwise, for batch > 1 (patches/)
        traj = ppddpm.sample_trajectory(pipe, seed=2, num_inference_steps=STEPS, batch_size=3,
                                        fields=("prev_sample", "pred_original_sample_unclipped"))
    raw = np.abs(traj.pred_original_sample_unclipped.astype(np.float64)).reshape(STEPS, 3, -1)
    s = np.clip(np.quantile(raw, 0.9, axis=2, keepdims=True), 1, 4.0)
    expected = (raw > s).mean(axis=2)
    # one value of 64 may sit on s within float32 rounding of the quantile: 1/64 at most, where it does
    np.testing.assert_allclose(traj.clip_fraction, expected, rtol=0, atol=1 / 64 + 1e-9)
    assert expected.max() > 0 and traj.meta["clipping"] == "thresholding"
    t, share = ppddpm.pictures.plotting.clip_map(traj)
    np.testing.assert_array_equal(share, traj.clip_fraction)


def test_a_0_4_file_loads_with_todays_names_and_the_noise_level_its_sampler_had():
    """tests/data/trajectory-0.4.1-heun.npz: 3 Heun steps (5 calls) written by ppddpm 0.4.1. Its `sigma`
    member is read as `noise_std`; σ of each call's input, which 0.4's pictures rebuilt from ppdiffusers, is
    derived from the file's config: √((1−ᾱ_t)/ᾱ_t) at the call's t on the linear β schedule, in float64."""
    from pathlib import Path

    path = Path(__file__).parent / "data" / "trajectory-0.4.1-heun.npz"
    old = ppddpm.Trajectory.load(path)
    with np.load(path) as members:
        np.testing.assert_array_equal(old.noise_std, members["sigma"])
        assert "noise_std" not in members and old.meta["versions"]["ppddpm"] == "0.4.1"
    alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    sigma = np.sqrt((1 - alpha_bar[old.timesteps]) / alpha_bar[old.timesteps])
    assert old.stages.tolist() == ["predictor", "corrector", "predictor", "corrector", "predictor"]
    np.testing.assert_allclose(old.column("noise_level"), sigma, rtol=1e-9)
    np.testing.assert_allclose(old.column("noise_level_prev"), np.append(sigma[1:], 0.0), rtol=1e-9)
    assert old.column("call").tolist() == [0, 1, 2, 3, 4] and "alpha_bar" not in old.columns
