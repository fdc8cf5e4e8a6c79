"""Latent pipelines (issue 24): Stable Diffusion, LDM and DiT recorded, decoded, guidance seen.

The pipelines are tiny and random (tests/latent_pipes.py): recording and decoding do not depend
on the weights. Each oracle is a hand-written loop over the pipeline's own components (text
embeddings → CFG concat → denoiser → guidance → scheduler.step), or the VAE called by hand, or a
float64 formula.
"""
import inspect
import uuid

import numpy as np
import paddle
import pytest
from ppdiffusers import DDPMScheduler, EulerAncestralDiscreteScheduler
from ppdiffusers.utils.paddle_utils import randn_tensor

import ppddpm
from PIL import Image
import latent_pipes as lp
from ppddpm.errors import BadValue

STEPS = 4
POS, NEG = [1, 2, 3, 4, 5, 6, 7, 8], [1, 0, 0, 0, 0, 0, 0, 0]
GUIDED = ("prev_sample", "pred_original_sample", "model_output_uncond", "model_output_cond",
          "pred_original_sample_uncond", "pred_original_sample_cond")


def _generator(seed):
    return paddle.Generator().manual_seed(seed, generator_name=f"latent-hand-{seed}-{uuid.uuid4()}")


@pytest.fixture(scope="module")
def sd():
    return lp.sd_pipeline()


@pytest.fixture(scope="module")
def dit():
    return lp.dit_pipeline()


@pytest.fixture(scope="module")
def ldm():
    return lp.ldm_pipeline()


def sd_kwargs(pipe, g=3.0):
    return {"prompt_embeds": lp.prompt_embeds(pipe, POS), "negative_prompt_embeds": lp.prompt_embeds(pipe, NEG),
            "guidance_scale": g}


def sd_hand_loop(pipe, seed, steps, batch, g, step_kwargs):
    """StableDiffusionPipeline's loop by hand: [uncond, cond] embeddings, the doubled latents through
    the UNet, ε̂ = ε̂_u + g (ε̂_c − ε̂_u), scheduler.step. Returns per step (x_{t-1}, ε̂_u, ε̂_c, t, x_t)."""
    gen, sched = _generator(seed), pipe.scheduler
    pos = lp.prompt_embeds(pipe, POS).tile([batch, 1, 1])
    neg = lp.prompt_embeds(pipe, NEG).tile([batch, 1, 1])
    embeds = paddle.concat([neg, pos])
    sched.set_timesteps(steps)
    latents = randn_tensor((batch, 4, 8, 8), generator=gen, dtype=paddle.float32) * sched.init_noise_sigma
    rows = []
    with paddle.no_grad():
        for t in sched.timesteps:
            inp = sched.scale_model_input(paddle.concat([latents] * 2), t)
            t = t.reshape([1])
            out = pipe.unet(inp, t, encoder_hidden_states=embeds).sample
            uncond, cond = out.chunk(2)
            eps = uncond + g * (cond - uncond)
            x_t = latents
            accepted = inspect.signature(sched.step).parameters          # as prepare_extra_step_kwargs does
            extra = {k: v for k, v in dict(step_kwargs, generator=gen).items() if k in accepted}
            latents = sched.step(eps, t, latents, **extra).prev_sample
            rows.append((latents.numpy(), uncond.numpy(), cond.numpy(), t.item(), x_t.numpy()))
    return rows


def test_stable_diffusion_recording_is_the_hand_loop_bitwise(sd):
    traj = ppddpm.sample_trajectory(sd, seed=5, num_inference_steps=STEPS, batch_size=2, fields=GUIDED,
                                    pipe_kwargs=sd_kwargs(sd))
    hand = sd_hand_loop(sd, 5, STEPS, 2, 3.0, {"eta": 0.0})
    assert len(traj) == STEPS and traj.prev_sample.shape == (STEPS, 2, 4, 8, 8)
    for i, (prev, uncond, cond, t, _) in enumerate(hand):
        assert traj.timesteps[i] == t
        np.testing.assert_array_equal(traj.prev_sample[i], prev)
        np.testing.assert_array_equal(traj.field("model_output_uncond")[i], uncond)
        np.testing.assert_array_equal(traj.field("model_output_cond")[i], cond)


def test_guidance_x0_of_each_half_is_eq15_in_float64(sd):
    """x̂_0 of ε̂_u and ε̂_c: (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t, eq. (15), in float64 from the config's ᾱ."""
    traj = ppddpm.sample_trajectory(sd, seed=6, num_inference_steps=STEPS, fields=GUIDED + ("sample",),
                                    pipe_kwargs=sd_kwargs(sd))
    cfg = sd.scheduler.config
    assert cfg.beta_schedule == "linear"                # ppdiffusers' DDIMScheduler default
    alpha_bar = np.cumprod(1 - np.linspace(cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps, dtype=np.float64))
    for half in ("uncond", "cond"):
        eps = traj.field(f"model_output_{half}").astype(np.float64)
        x_t = traj.sample.astype(np.float64)
        a = alpha_bar[traj.timesteps][:, None, None, None, None]
        expected = (x_t - np.sqrt(1 - a) * eps) / np.sqrt(a)
        # float32 evaluation of the same expression: a few roundings of values up to ~|x_t|/√ᾱ (≤ 1e2 here)
        np.testing.assert_allclose(traj.field(f"pred_original_sample_{half}"), expected, rtol=1e-5, atol=1e-4)
    # the guided x̂_0 the step used is the same combination of the two: x̂_0 is affine in ε̂
    g = 3.0
    x0_u, x0_c = traj.field("pred_original_sample_uncond"), traj.field("pred_original_sample_cond")
    mix = x0_u + g * (x0_c - x0_u)
    np.testing.assert_allclose(traj.pred_original_sample, mix, rtol=1e-4, atol=1e-3)


def test_stable_diffusion_with_an_ancestral_sampler_is_the_hand_loop(sd):
    pipe = lp.sd_pipeline()
    pipe.scheduler = ppddpm.with_config(pipe.scheduler, cls=EulerAncestralDiscreteScheduler)
    traj = ppddpm.sample_trajectory(pipe, seed=7, num_inference_steps=STEPS, fields=GUIDED + ("noise",),
                                    pipe_kwargs=sd_kwargs(pipe, 2.0))
    hand = sd_hand_loop(pipe, 7, STEPS, 1, 2.0, {})
    sigmas = pipe.scheduler.sigmas.numpy().astype(np.float64)
    for i, (prev, uncond, cond, t, x_t) in enumerate(hand):
        np.testing.assert_array_equal(traj.prev_sample[i], prev)
        np.testing.assert_array_equal(traj.field("model_output_cond")[i], cond)
        # σ-space x̂_0 = x − σ·ε̂ (MATH.md, Euler), float64; float32 rounding of |x| ≤ ~2e2
        np.testing.assert_allclose(traj.field("pred_original_sample_cond")[i], x_t - sigmas[i] * cond,
                                   rtol=1e-5, atol=1e-3)
    assert traj.scheduler == "EulerAncestralDiscreteScheduler" and np.all(traj.noise_std[:-1] > 0)


@pytest.mark.parametrize("family", ["pndm", "heun", "dpmsolver-multistep", "lms"])
def test_stable_diffusion_with_every_other_sampler_is_the_hand_loop(family):
    import ppdiffusers

    pipe = lp.sd_pipeline()
    cls = getattr(ppdiffusers, ppddpm.core.adapters.families()[family][0])
    pipe.scheduler = ppddpm.with_config(pipe.scheduler, cls=cls)
    traj = ppddpm.sample_trajectory(pipe, seed=8, num_inference_steps=STEPS, fields=GUIDED, pipe_kwargs=sd_kwargs(pipe))
    hand = sd_hand_loop(pipe, 8, STEPS, 1, 3.0, {"eta": 0.0})
    assert len(traj) == len(hand) == len(pipe.scheduler.timesteps)      # Heun and PNDM: more calls than steps
    for i, (prev, uncond, cond, _, _) in enumerate(hand):
        np.testing.assert_array_equal(traj.prev_sample[i], prev)
        np.testing.assert_array_equal(traj.field("model_output_uncond")[i], uncond)
        np.testing.assert_array_equal(traj.field("model_output_cond")[i], cond)


@pytest.mark.parametrize("which", ["stable-diffusion", "dit", "ldm"])
def test_compare_on_a_latent_pipeline_is_its_own_loop(which, sd, dit, ldm):
    """compare's reference lane (batched=False) ends on the latents the pipeline's own run ends on,
    bit for bit: the same conditioning, guidance and x_T; DDIM written out (eq. 12) agrees with it."""
    pipe, kwargs = {"stable-diffusion": (sd, sd_kwargs(sd)), "ldm": (ldm, None),
                    "dit": (dit, {"class_labels": [1, 7], "guidance_scale": 2.5})}[which]
    report = ppddpm.compare(pipe, ["ddim", "ddim-written"], seed=5, num_inference_steps=STEPS, batched=False,
                            batch_size=2 if which != "dit" else 1, pipe_kwargs=kwargs)
    solo = ppddpm.sample_trajectory(pipe, seed=5, num_inference_steps=STEPS, batch_size=2 if which != "dit" else 1,
                                    pipe_kwargs=kwargs)
    np.testing.assert_array_equal(report.final["ddim"][0], solo.prev_sample[-1])
    assert report.equivalent() and report.meta["latent"]["kind"] == which
    assert report.meta["conditioning"] == solo.meta["conditioning"]


def test_a_latent_run_verifies_against_the_float64_reference(sd):
    """DDIM(η=1) on Stable Diffusion's latents, every step replayed through ppddpm.reference (numpy,
    float64, eq. 12/16) from the recorded x_t, ε̂ (the guided one the step took) and z."""
    traj = ppddpm.sample_trajectory(sd, seed=3, num_inference_steps=STEPS, batch_size=2, fields="all",
                                    pipe_kwargs=dict(sd_kwargs(sd), eta=1.0))
    report = ppddpm.verify(traj)
    assert report.ok, report.table()


def test_latent_metadata_says_what_decoding_needs(sd, dit):
    traj = ppddpm.sample_trajectory(sd, seed=1, num_inference_steps=2, pipe_kwargs=sd_kwargs(sd))
    assert traj.meta["space"] == "latent" and traj.meta["seed"] == 1
    assert traj.meta["latent"] == {
        "pipeline": "StableDiffusionPipeline", "kind": "stable-diffusion", "vae_class": "AutoencoderKL",
        "vae_attribute": "vae", "scaling_factor": sd.vae.config.scaling_factor, "latent_shape": [4, 8, 8],
        "vae_scale_factor": 2, "image_shape": [3, 16, 16], "denoiser": "UNet2DConditionModel", "unscale": "divide"}
    cond = traj.meta["conditioning"]
    assert cond["guidance_scale"] == 3.0 and cond["prompt_embeds"] == "tensor [1, 8, 16] (float32)"
    named = ppddpm.sample_trajectory(dit, seed=1, num_inference_steps=2, pipe_kwargs={"class_labels": [7, 1]})
    assert named.meta["conditioning"] == {"class_labels": [7, 1], "guidance_scale": 4.0,
                                          "class_names": ["cock", "goldfish"]}


def ldm_hand_loop(pipe, seed, steps, batch):
    """LDMPipeline's loop by hand: x_T · init_noise_sigma, UNet, step(…, eta=0 where taken) without a generator."""
    gen, sched = _generator(seed), pipe.scheduler
    latents = randn_tensor((batch, 4, 8, 8), generator=gen) * sched.init_noise_sigma
    sched.set_timesteps(steps)
    extra = {"eta": 0.0} if "eta" in inspect.signature(sched.step).parameters else {}
    out = []
    with paddle.no_grad():
        for t in sched.timesteps:
            eps = pipe.unet(sched.scale_model_input(latents, t), t).sample
            latents = sched.step(eps, t, latents, **extra).prev_sample
            out.append(latents.numpy())
    return np.stack(out)


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_ldm_recording_is_the_hand_loop_bitwise(scheduler):
    pipe = lp.ldm_pipeline()
    if scheduler == "ddpm":
        pipe.scheduler = ppddpm.with_config(pipe.scheduler, cls=DDPMScheduler)
    traj = ppddpm.sample_trajectory(pipe, seed=9, num_inference_steps=STEPS, batch_size=2)
    np.testing.assert_array_equal(traj.prev_sample, ldm_hand_loop(pipe, 9, STEPS, 2))
    assert traj.meta["latent"]["vae_class"] == "VQModel" and traj.meta["conditioning"] == {}


def dit_hand_loop(pipe, seed, steps, labels, g):
    """DiTPipeline's loop by hand: the doubled latents with [labels, null class 1000], ε̂ of the first
    4 channels mixed as ε̂_u + g (ε̂_c − ε̂_u) (cond rows first), the scheduler stepping both halves."""
    gen, sched, b = _generator(seed), pipe.scheduler, len(labels)
    latents = randn_tensor((b, 4, 8, 8), generator=gen, dtype=paddle.float32)
    inp = paddle.concat([latents] * 2)
    label_in = paddle.concat([paddle.to_tensor(labels), paddle.to_tensor([1000] * b)])
    sched.set_timesteps(steps)
    rows = []
    with paddle.no_grad():
        for t in sched.timesteps:
            half = inp[:b]
            inp = sched.scale_model_input(paddle.concat([half, half]), t)
            out = pipe.transformer(inp, timestep=t[None].expand([2 * b]), class_labels=label_in).sample
            cond, uncond = paddle.chunk(out[:, :4], 2)
            mixed = uncond + g * (cond - uncond)
            inp = sched.step(paddle.concat([mixed, mixed]), t, inp).prev_sample
            rows.append((inp[:b].numpy(), cond.numpy(), uncond.numpy()))
    return rows


def test_dit_recording_is_the_hand_loop_bitwise_first_half_rows(dit):
    fields = ("prev_sample", "model_output_cond", "model_output_uncond")
    traj = ppddpm.sample_trajectory(dit, seed=4, num_inference_steps=STEPS, fields=fields,
                                    pipe_kwargs={"class_labels": [1, 7], "guidance_scale": 2.5})
    assert traj.prev_sample.shape == (STEPS, 2, 4, 8, 8)          # the batch, not the 2B rows stepped
    for i, (prev, cond, uncond) in enumerate(dit_hand_loop(dit, 4, STEPS, [1, 7], 2.5)):
        np.testing.assert_array_equal(traj.prev_sample[i], prev)
        np.testing.assert_array_equal(traj.field("model_output_cond")[i], cond)
        np.testing.assert_array_equal(traj.field("model_output_uncond")[i], uncond)


def test_vae_decode_is_the_vae_called_by_hand(sd):
    traj = ppddpm.sample_trajectory(sd, seed=2, num_inference_steps=STEPS, batch_size=2, pipe_kwargs=sd_kwargs(sd))
    pixels = ppddpm.decode(traj, sd, fields=("pred_original_sample", "prev_sample"))
    assert pixels.prev_sample.shape == (STEPS, 2, 3, 16, 16) and pixels.meta["space"] == "pixels"
    assert pixels.meta["decoded"]["method"] == "vae" and pixels.meta["seed"] == 2
    np.testing.assert_array_equal(pixels.timesteps, traj.timesteps)
    s = sd.vae.config.scaling_factor
    with paddle.no_grad():
        for i in range(STEPS):
            for b in range(2):          # one latent per VAE call, where decode batches 4: CPU convolutions
                z = paddle.to_tensor(traj.pred_original_sample[i, b: b + 1])    # may sum in another order
                np.testing.assert_allclose(pixels.pred_original_sample[i, b], sd.vae.decode(z / s).sample.numpy()[0],
                                           rtol=1e-5, atol=1e-5)
    # the decoded last x_{t-1} is the pipeline's own image (8-bit: one level for the rounding of x/2 + 0.5)
    own = np.stack([np.asarray(im, np.int16) for im in traj.images])
    mine = np.stack([np.asarray(im, np.int16) for im in pixels.images])
    assert np.abs(own - mine).max() <= 1


def test_record_decodes_chunk_by_chunk_streamed_and_changes_nothing(sd, tmp_path):
    kwargs = dict(seed=3, num_inference_steps=5, pipe_kwargs=sd_kwargs(sd))
    plain = ppddpm.sample_trajectory(sd, **kwargs)
    streamed = ppddpm.sample_trajectory(sd, decode="vae", chunk=2, store="disk", path=tmp_path / "run", **kwargs)
    np.testing.assert_array_equal(streamed.prev_sample, plain.prev_sample)   # decoding leaves the run alone
    loaded = ppddpm.Trajectory.load(tmp_path / "run")
    assert loaded.complete and loaded.field("pred_original_sample_decoded").shape == (5, 1, 3, 16, 16)
    after = ppddpm.decode(plain, sd)
    # decoded during the run in VAE calls of 2 steps' frames, after it in one call of 5
    np.testing.assert_allclose(loaded.field("pred_original_sample_decoded"), after.pred_original_sample,
                               rtol=1e-5, atol=1e-5)
    kept = ppddpm.decode(loaded)                     # no pipeline: the frames the run decoded
    np.testing.assert_array_equal(kept.pred_original_sample, loaded.field("pred_original_sample_decoded"))


class LinearVAE(paddle.nn.Layer):
    """A VAE whose decoder is exactly linear per latent pixel, D(z/s) = A z + b upsampled ×2, and whose
    encoder is not linear (so the probe latents span all 4 channels): what a least-squares fit must recover."""

    def __init__(self, matrix, bias):
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(block_out_channels=(8, 16), scaling_factor=0.5, out_channels=3)
        self.a, self.b = paddle.to_tensor(matrix), paddle.to_tensor(bias)
        self.w = self.create_parameter([1])

    def encode(self, x):
        from types import SimpleNamespace

        p = paddle.nn.functional.avg_pool2d(x, 2)
        return SimpleNamespace(latents=paddle.concat([p, p[:, :1] * p[:, 1:2]], axis=1))

    def decode(self, h):
        from types import SimpleNamespace

        z = h * self.config.scaling_factor                    # back to diffusion latents
        rgb = paddle.einsum("kc,nchw->nkhw", self.a, z) + self.b.reshape([1, 3, 1, 1])
        return SimpleNamespace(sample=rgb.repeat_interleave(2, axis=2).repeat_interleave(2, axis=3))


def test_approx_fit_recovers_a_linear_decoder_and_is_cached():
    rng = np.random.RandomState(0)
    matrix, bias = rng.randn(3, 4).astype(np.float32), rng.randn(3).astype(np.float32)
    pipe = lp.ldm_pipeline()
    pipe.vqvae = LinearVAE(matrix, bias)
    fitted = ppddpm.pipelines.latent.approx_decoder(pipe)
    # float32 probes through a float32 decoder: the fit is exact up to float32 rounding of A z + b
    np.testing.assert_allclose(fitted.matrix, matrix, atol=1e-4)
    np.testing.assert_allclose(fitted.bias, bias, atol=1e-4)
    assert fitted.gap["rmse"] < 1e-5
    assert ppddpm.pipelines.latent.approx_decoder(pipe) is fitted            # cached for this VAE
    with paddle.no_grad():
        pipe.vqvae.w.set_value(paddle.to_tensor([3.0]))            # its weights change: fitted again
    assert ppddpm.pipelines.latent.approx_decoder(pipe) is not fitted


def test_approx_decode_reports_its_measured_gap(ldm, capsys):
    traj = ppddpm.sample_trajectory(ldm, seed=1, num_inference_steps=STEPS)
    preview = ppddpm.decode(traj, ldm, method="approx")
    full = ppddpm.decode(traj, ldm, method="vae")
    a, b = preview.pred_original_sample[-1].astype(np.float64), full.pred_original_sample[-1].astype(np.float64)
    gap = preview.meta["decoded"]["gap"]
    # in the units of the images as shown: both clipped to [−1, 1] (the random VAE's outputs leave that range,
    # so the unclipped RMSE is another, larger number); PSNR against the peak-to-peak 2 of that range
    assert np.abs(b).max() > 1 and np.sqrt(np.mean((a - b) ** 2)) > 1.5 * gap["rmse"]
    shown = np.sqrt(np.mean((np.clip(a, -1, 1) - np.clip(b, -1, 1)) ** 2))
    assert gap["rmse"] == pytest.approx(shown, rel=1e-6) and 0 < gap["rmse"] <= 2
    assert gap["psnr_db"] == pytest.approx(20 * np.log10(2 / shown), rel=1e-6)
    printed = capsys.readouterr().out
    assert "gap to the VAE decode" in printed and f"RMSE {gap['rmse']:.3g} on [−1, 1] images" in printed
    fit = ppddpm.pipelines.latent.approx_decoder(ldm)          # the preview is A z + b per latent pixel, upsampled ×2
    z = traj.pred_original_sample[-1].astype(np.float64)
    expected = np.einsum("kc,nchw->nkhw", fit.matrix, z) + fit.bias[None, :, None, None]
    np.testing.assert_allclose(preview.pred_original_sample[-1][:, :, ::2, ::2], expected, rtol=1e-5, atol=1e-5)


def test_decoded_runs_plot_and_explore(sd, tmp_path):
    traj = ppddpm.sample_trajectory(sd, seed=1, num_inference_steps=STEPS, pipe_kwargs=sd_kwargs(sd))
    pixels = ppddpm.decode(traj, sd, fields=("prev_sample", "pred_original_sample"))
    ppddpm.pictures.plotting.plot_trajectory(pixels, every=1, save=tmp_path / "t.png")
    ppddpm.pictures.plotting.animate(pixels, tmp_path / "x0.gif", field="pred_original_sample", mp4=False)
    view = ppddpm.pictures.explorer.explore(pixels)
    assert (tmp_path / "t.png").stat().st_size > 0 and "prompt given as embeddings, guidance 3" in view.title


def test_latent_runs_show_decoded_frames_else_channels(dit):
    from PIL import Image

    traj = ppddpm.sample_trajectory(dit, seed=2, num_inference_steps=STEPS, decode="vae",
                                    pipe_kwargs={"class_labels": [7], "guidance_scale": 2.0})
    shown = ppddpm.pipelines.latent.displayable(traj)
    assert shown.meta["shown_as"] == {"prev_sample": "latent channels", "pred_original_sample": "decoded"}
    np.testing.assert_array_equal(shown.pred_original_sample, traj.field("pred_original_sample_decoded"))
    # channels side by side on [−3, 3] → [−1, 1]: channel c of the latent is columns 8c … 8c+7
    np.testing.assert_array_equal(shown.prev_sample[:, :, 0, :, 8:16], traj.prev_sample[:, :, 1] / np.float32(3.0))
    fig = ppddpm.pictures.plotting.plot_grid(traj, "pred_original_sample", every=1)
    assert "class 7 (cock), guidance 2" in fig._suptitle.get_text()
    # channels side by side are 4 times wider than high: tiles as wide as that, fewer to a row (0.4: 0.9 inch)
    wide = ppddpm.pictures.plotting.plot_grid(traj, "prev_sample", every=1)
    width = [ax.get_position().width * wide.get_size_inches()[0] for ax in wide.axes if ax.images]
    assert min(width) > 2 and wide.get_size_inches()[0] <= ppddpm.pictures.plotting.MAX_FIGURE_WIDTH   # 0.4: 0.7
    html = ppddpm.pictures.explorer.explore(traj).html
    assert "class 7 (cock)" in html
    channels = ppddpm.pipelines.latent.displayable(traj, latent_channels=True)
    assert channels.pred_original_sample.shape == (STEPS, 1, 1, 8, 32)
    pic = ppddpm.pictures.plotting.frames(channels, "pred_original_sample")[0]
    assert isinstance(pic, Image.Image)


def test_dit_and_ldm_with_a_sigma_space_sampler_warn():
    from ppdiffusers import EulerDiscreteScheduler

    dit, ldm = lp.dit_pipeline(), lp.ldm_pipeline()
    for pipe in (dit, ldm):
        pipe.scheduler = ppddpm.with_config(pipe.scheduler, cls=EulerDiscreteScheduler)
    with pytest.warns(ppddpm.core.recorder.UnscaledLoopWarning, match="never multiplies x_T by init_noise_sigma"):
        traj = ppddpm.sample_trajectory(dit, seed=1, num_inference_steps=2, fields=("pred_original_sample",),
                                        pipe_kwargs={"class_labels": [1]}, decode="vae")
    assert traj.meta["batch_size"] == 1 and traj.field("pred_original_sample_decoded").shape == (2, 1, 3, 16, 16)
    with pytest.warns(ppddpm.core.recorder.UnscaledLoopWarning, match="before set_timesteps"):
        ppddpm.sample_trajectory(ldm, seed=1, num_inference_steps=2)


def test_one_line_errors(sd, ldm, dit, pipe):
    with pytest.raises(BadValue, match="runs no classifier-free guidance"):
        ppddpm.sample_trajectory(ldm, seed=1, num_inference_steps=2, fields=("model_output_cond",))
    with pytest.raises(BadValue, match="class_labels"):
        ppddpm.sample_trajectory(dit, seed=1, num_inference_steps=2)
    with pytest.raises(BadValue, match="no tokenizer"):
        ppddpm.sample_trajectory(sd, seed=1, num_inference_steps=2, pipe_kwargs={"prompt": "a cat"})
    with pytest.raises(BadValue, match="guidance_scale > 1"):
        ppddpm.sample_trajectory(sd, seed=1, num_inference_steps=2, fields=GUIDED, pipe_kwargs=sd_kwargs(sd, 1.0))
    with pytest.raises(BadValue, match="need a latent pipeline"):
        ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=2, decode="vae")
    pixel = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=2)
    with pytest.raises(BadValue, match="latent pipeline"):
        ppddpm.decode(pixel, sd)
    traj = ppddpm.sample_trajectory(ldm, seed=1, num_inference_steps=2)
    with pytest.raises(BadValue, match="is not the run's"):
        ppddpm.decode(traj, sd)
    with pytest.raises(BadValue, match="method must be one of"):
        ppddpm.decode(traj, ldm, method="taesd")
    with pytest.raises(BadValue, match="pass the pipeline"):
        ppddpm.decode(traj)
    with pytest.raises(BadValue, match="one prompt"):
        ppddpm.compare(sd, ["ddim", "ddim-written"], num_inference_steps=2,
                       pipe_kwargs={"prompt_embeds": paddle.concat([lp.prompt_embeds(sd, POS)] * 2)})


# --------------------------------------------------------------------------- loading and the CLI

def test_saved_latent_pipelines_load_and_a_prompt_runs(tmp_path):
    """A Stable Diffusion folder with a tokenizer: `ppddpm sample --prompt … --decode approx` end to end."""
    import subprocess
    import sys

    from ppdiffusers import StableDiffusionPipeline

    pipe = lp.sd_pipeline(tokenizer=True)
    pipe.save_pretrained(str(tmp_path / "sd"))
    loaded = ppddpm.load_pipeline(tmp_path / "sd")
    assert isinstance(loaded, StableDiffusionPipeline) and loaded.safety_checker is None
    res = subprocess.run([sys.executable, "-m", "ppddpm", "sample", "--model", str(tmp_path / "sd"), "--prompt",
                          "a red cat", "--guidance-scale", "5", "--steps", "3", "--decode", "approx", "--seed", "4",
                          "--out", str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "INFO" not in res.stderr, res.stderr          # paddlenlp's loading chatter about the text encoder
    traj = ppddpm.Trajectory.load(tmp_path / "run" / "trajectory_seed4.npz")
    assert traj.meta["conditioning"] == {"prompt": "a red cat", "guidance_scale": 5.0}
    assert traj.field("pred_original_sample_decoded").shape == (3, 1, 3, 16, 16)
    assert traj.meta["decoded"]["method"] == "approx" and "rmse" in traj.meta["decoded"]["fit_gap"]
    png = np.asarray(Image.open(tmp_path / "run" / "sample_seed4.png"))
    assert png.shape == (128, 128, 3)                   # the pipeline's 16x16 image, ×8 nearest
    # the same run in Python: the PNG holds the pipeline's own pixels
    again = ppddpm.sample_trajectory(loaded, seed=4, num_inference_steps=3,
                                     pipe_kwargs={"prompt": "a red cat", "guidance_scale": 5.0})
    np.testing.assert_array_equal(png[::8, ::8], np.asarray(again.images[0]))


def run_cli(*args):
    from ppddpm.cli.main import main

    return main([str(a) for a in args])


def test_cli_dit_class_labels_and_one_line_errors(tmp_path, dit, capsys):
    dit.save_pretrained(str(tmp_path / "dit"))
    assert run_cli("sample", "--model", tmp_path / "dit", "--class-label", "1,7", "--guidance-scale", "2", "--steps", 2,
                   "--out", tmp_path / "run", "--quiet") == 0
    traj = ppddpm.Trajectory.load(tmp_path / "run" / "trajectory_seed777.npz")
    assert traj.prev_sample.shape == (2, 2, 4, 8, 8) and traj.meta["conditioning"]["class_labels"] == [1, 7]
    assert run_cli("grid", tmp_path / "run" / "trajectory_seed777.npz", "--every", 1, "--out", tmp_path / "grid") == 0
    assert run_cli("view", tmp_path / "run" / "trajectory_seed777.npz", "--out", tmp_path / "view.html") == 0
    assert "class 1, 7, guidance 2" in (tmp_path / "view.html").read_text()      # labels the folder has no names for
    capsys.readouterr()
    lp.sd_pipeline().save_pretrained(str(tmp_path / "sd-no-tokenizer"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model_index.json").write_text(
        '{"_class_name": "FooPipeline", "vae": ["ppdiffusers", "AutoencoderKL"]}')
    cases = [(("--model", tmp_path / "sd-no-tokenizer", "--prompt", "a cat"), "saved without one"),
             (("--model", tmp_path / "dit"), "needs --class-label"),
             (("--model", tmp_path / "dit", "--class-label", "1,100000"), "--class-label takes ids 0 to"),
             (("--model", tmp_path / "dit", "--prompt", "a cat", "--class-label", "1"), "--prompt do not apply"),
             (("--prompt", "a cat"), "needs a latent pipeline"),
             (("--model", tmp_path / "other"), "FooPipeline, which ppddpm does not know")]
    for args, message in cases:
        assert run_cli("sample", *args, "--steps", 2, "--out", tmp_path / "bad", "--quiet") == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
