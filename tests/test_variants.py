"""Step variants and patch_step (issue: step variants, patching, equivalence)."""
import inspect
import subprocess
import sys
import uuid

import numpy as np
import paddle
import pytest
from ppdiffusers import DDPMPipeline, DDPMScheduler

import ppddpm
from conftest import assert_is_the_reference_step
from ppddpm.model.builders import ddpm_scheduler
from ppddpm.core.formulas import threshold

BUILTINS = ["ppdiffusers", "posterior", "direct", "direct-clip-consistent", "direct-article"]


def run(pipe, variant, seed=7, steps=50, batch=1, fields=("prev_sample", "pred_original_sample")):
    with ppddpm.patch_step(pipe.scheduler, variant):
        return ppddpm.sample_trajectory(pipe, seed=seed, num_inference_steps=steps, batch_size=batch, fields=fields)


def test_builtin_variants_are_registered():
    assert ppddpm.variants()[:5] == BUILTINS


@pytest.mark.parametrize("first", ["import ppddpm", "import ppddpm.variants.registry, ppddpm",
                                   "from ppddpm.variants.registry import get_variant; import ppddpm"])
def test_the_builtins_are_there_whatever_a_fresh_process_imports_first(first):
    """`ppddpm.get_variant("ddim")` right after `import ppddpm`, and `ppddpm.variants()` also once a
    `ppddpm.variants.<module>` import has bound the name `ppddpm.variants` to the package."""
    code = f"{first}\nprint(ppddpm.get_variant('ddim').name, ppddpm.get_variant('direct').name, *ppddpm.variants())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["ddim", "direct"] + BUILTINS + ["ddim", "ddim-written"]


@pytest.mark.parametrize("config", [
    {}, {"clip_sample": False}, {"variance_type": "fixed_large"}, {"variance_type": "fixed_small_log"},
    {"thresholding": True}, {"prediction_type": "v_prediction"}, {"prediction_type": "sample", "clip_sample": False},
])
@pytest.mark.parametrize("steps", [1000, 37])
def test_posterior_is_bitwise_the_stock_step(unet, config, steps):
    """Same float32 operations as ppdiffusers → identical bits, every step (1000 and strided)."""
    pipe = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler(**config))
    if steps == 1000 and config:
        steps = 200            # the full 1000-step run is covered for the default config
    stock = run(pipe, "ppdiffusers", steps=steps)
    mine = run(pipe, "posterior", steps=steps)
    assert np.array_equal(stock.prev_sample, mine.prev_sample)
    assert np.array_equal(stock.pred_original_sample, mine.pred_original_sample)


def test_every_variant_consumes_the_same_noise(pipe):
    noises = [run(pipe, v, steps=20, fields="all").noise for v in BUILTINS]
    for z in noises[1:]:
        assert np.array_equal(z, noises[0])
    assert noises[0][:-1].std() > 0.5 and not noises[0][-1].any()


def test_direct_article_is_direct_at_1000_steps_but_wrong_when_strided(unet):
    """The article's verbatim edit uses scheduler.alphas[t]: fine for 1000 steps, not for 50."""
    pipe = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler(clip_sample=False))
    a, b = run(pipe, "direct", steps=1000), run(pipe, "direct-article", steps=1000)
    np.testing.assert_allclose(a.prev_sample, b.prev_sample, rtol=0, atol=1e-3 * np.abs(a.prev_sample).max())
    a, b = run(pipe, "direct", steps=50), run(pipe, "direct-article", steps=50)
    assert np.abs(a.prev_sample - b.prev_sample).max() > 0.1 * np.abs(a.prev_sample).max()


def test_dynamic_thresholding_works_per_sample_for_any_batch(unet):
    """ppdiffusers 0.29 raises for batch > 1 (upstream bug); the variants threshold each
    sample as if it were alone."""
    pipe = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler(thresholding=True, sample_max_value=1.5))
    with pytest.raises(ValueError, match="only supports Tensor with 1 element"):
        run(pipe, "ppdiffusers", steps=5, batch=3)
    x0 = paddle.to_tensor(np.random.RandomState(0).randn(3, 1, 8, 8).astype("float32") * 2)
    together = threshold(x0, 0.995, 1.5).numpy()
    for i in range(3):
        alone = threshold(x0[i:i + 1], 0.995, 1.5).numpy()
        assert np.array_equal(together[i:i + 1], alone)
    traj = run(pipe, "posterior", steps=5, batch=3)
    assert np.isfinite(traj.prev_sample).all() and np.abs(traj.pred_original_sample).max() <= 1.0


def test_unsupported_variance_type_is_a_clear_error(unet):
    pipe = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler(variance_type="learned_range"))
    with pytest.raises(NotImplementedError, match="variance_type='learned_range'.*fixed_small.*'ppdiffusers'"):
        run(pipe, "posterior", steps=3)


def test_user_defined_variant(pipe):
    @ppddpm.register_variant("test-no-noise")
    def no_noise(scheduler, model_output, timestep, sample, generator=None, return_dict=True):
        """The posterior mean only: x_{t-1} = μ̃_t(x̂_0, x_t) of eq. (7), never any σ_t z."""
        from ppddpm.variants.ddpm import coefficients, ddpm_output, modify_x0, predict_start_from_noise

        c = coefficients(scheduler, timestep)
        x0 = modify_x0(scheduler, predict_start_from_noise(c, model_output, sample))
        mean = (c.alpha_prod_t_prev ** 0.5 * c.current_beta_t / c.beta_prod_t) * x0 + \
            (c.current_alpha_t ** 0.5 * c.beta_prod_t_prev / c.beta_prod_t) * sample
        return ddpm_output(mean, x0, return_dict)

    try:
        assert "test-no-noise" in ppddpm.variants()
        with pytest.raises(ValueError, match="already registered"):
            ppddpm.register_variant("test-no-noise")(no_noise)
        with ppddpm.patch_step(pipe.scheduler, "test-no-noise"):
            traj = ppddpm.sample_trajectory(pipe, seed=8, num_inference_steps=10, fields="all")
        assert traj.meta["variant"] == "test-no-noise"
        sched = ddpm_scheduler()
        sched.set_timesteps(10)
        for i, t in enumerate(traj.timesteps):    # the recorded step is the mean alone: z never reaches it
            zero = np.zeros_like(traj.noise[i])
            assert_is_the_reference_step(traj.prev_sample[i], sched, "posterior", traj.sample[i], traj.model_output[i],
                                         zero, t)
        assert traj.noise[:-1].any()           # ... though the stock step would have drawn one
    finally:
        ppddpm.unregister_variant("test-no-noise")
    assert "test-no-noise" not in ppddpm.variants()


def test_unknown_variant_lists_the_known_ones(pipe):
    with pytest.raises(KeyError, match="unknown step variant 'drect'; known: ppdiffusers, posterior, direct"):
        with ppddpm.patch_step(pipe.scheduler, "drect"):
            pass


def test_patch_is_per_instance_and_restored_on_exception(pipe, unet):
    other = ddpm_scheduler()
    with pytest.raises(RuntimeError):
        with ppddpm.patch_step(pipe.scheduler, "direct"):
            assert "step" in pipe.scheduler.__dict__ and "step" not in other.__dict__
            raise RuntimeError("boom")
    assert "step" not in pipe.scheduler.__dict__


def test_class_wide_patch_reaches_schedulers_built_inside(unet):
    class_step = DDPMScheduler.__dict__["step"]
    with ppddpm.patch_step(DDPMScheduler, "direct"):
        pipe = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler(clip_sample=True))
        patched = ppddpm.sample_trajectory(pipe, seed=3, num_inference_steps=20)
        assert patched.meta["variant"] == "direct"
    assert DDPMScheduler.__dict__["step"] is class_step
    stock = ppddpm.sample_trajectory(pipe, seed=3, num_inference_steps=20)
    direct = run(pipe, "direct", seed=3, steps=20)
    assert np.array_equal(patched.prev_sample, direct.prev_sample)
    assert not np.array_equal(patched.prev_sample, stock.prev_sample)     # clipping makes them differ


def test_patches_nest_innermost_wins_and_instance_beats_class(pipe):
    with ppddpm.patch_step(DDPMScheduler, "direct"):
        with ppddpm.patch_step(pipe.scheduler, "posterior"):
            with ppddpm.patch_step(pipe.scheduler, "direct-clip-consistent"):
                inner = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=5)
            middle = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=5)
        outer = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=5)
    assert [t.meta["variant"] for t in (inner, middle, outer)] == ["direct-clip-consistent", "posterior", "direct"]
    assert "step" not in pipe.scheduler.__dict__ and "_ppddpm_layers" not in DDPMScheduler.__dict__


@pytest.mark.parametrize("order", ["record-then-patch", "patch-then-record"])
def test_a_patched_recorded_run_records_the_variants_values(pipe, order):
    expected = run(pipe, "direct", seed=2, steps=15)
    gen = paddle.Generator().manual_seed(2, generator_name=f"order-{order}")
    if order == "record-then-patch":
        with ppddpm.record(pipe) as traj, ppddpm.patch_step(pipe.scheduler, "direct"):
            pipe(generator=gen, num_inference_steps=15)
    else:
        with ppddpm.patch_step(pipe.scheduler, "direct"), ppddpm.record(pipe) as traj:
            pipe(generator=gen, num_inference_steps=15)
    assert np.array_equal(traj.prev_sample, expected.prev_sample)


def test_the_replaced_step_keeps_its_schedulers_signature(pipe):
    """The installed step *is* a function with the original's parameters: inspect reports them
    without following __wrapped__, and it binds (and refuses) arguments as the original does."""
    from ppdiffusers import DDIMScheduler

    stock = inspect.signature(DDPMScheduler.step)
    with ppddpm.patch_step(pipe.scheduler, "direct"):
        installed = pipe.scheduler.__dict__["step"]
        assert installed is not DDPMScheduler.step
        assert inspect.signature(installed, follow_wrapped=False) == inspect.signature(DDPMScheduler().step)
        with ppddpm.patch_step(DDPMScheduler, "posterior"):
            assert DDPMScheduler.__dict__["step"].__name__ == "step"
            assert inspect.signature(DDPMScheduler.__dict__["step"], follow_wrapped=False) == stock
        assert pipe.scheduler.step(paddle.zeros([1, 1, 8, 8]), 5, paddle.zeros([1, 1, 8, 8]),
                                   return_dict=False)[0].shape == [1, 1, 8, 8]
        with pytest.raises(TypeError, match="eta"):          # DDPM's step takes no eta: the original's TypeError
            pipe.scheduler.step(paddle.zeros([1, 1, 8, 8]), 5, paddle.zeros([1, 1, 8, 8]), eta=1.0)
        with pytest.raises(TypeError, match="missing a required argument: 'timestep'"):
            pipe.scheduler.step(paddle.zeros([1, 1, 8, 8]), sample=paddle.zeros([1, 1, 8, 8]))
        with pytest.raises(TypeError, match="multiple values for argument 'sample'"):
            pipe.scheduler.step(paddle.zeros([1, 1, 8, 8]), 5, paddle.zeros([1, 1, 8, 8]), sample=paddle.zeros([1]))
    ddim = DDIMScheduler()
    ddim.set_timesteps(10)
    seen = {}
    with ppddpm.patch_step(ddim, lambda s, m, t, x, **extra: seen.update(extra) or DDIMScheduler.step(s, m, t, x)):
        assert inspect.signature(ddim.__dict__["step"], follow_wrapped=False) == inspect.signature(ddim.step)
        ddim.step(paddle.zeros([1, 1, 8, 8]), 900, paddle.zeros([1, 1, 8, 8]), 0.5, True)   # eta, positionally
    assert seen == {"eta": 0.5, "use_clipped_model_output": True, "return_dict": True}


def test_a_step_with_positional_only_parameters_binds_as_its_original():
    """The installed step maps plain calls without `inspect.bind`, but not where the original has
    positional-only parameters: there every call goes through `bind`, its mapping and its TypeError."""
    class PositionalOnly(DDPMScheduler):
        def step(self, model_output, timestep, sample, /, generator=None, return_dict=True):
            return DDPMScheduler.step(self, model_output, timestep, sample, generator=generator,
                                      return_dict=return_dict)

    scheduler, x = PositionalOnly(), paddle.zeros([1, 1, 8, 8])
    scheduler.set_timesteps(10)
    seeded = lambda: paddle.Generator().manual_seed(5, generator_name=f"positional-only-{uuid.uuid4()}")  # noqa: E731
    stock = scheduler.step(x + 1, 900, x, generator=seeded()).prev_sample
    with ppddpm.patch_step(scheduler, "posterior"):
        assert np.array_equal(scheduler.step(x + 1, 900, x, generator=seeded()).prev_sample.numpy(), stock.numpy())
        with pytest.raises(TypeError, match="missing a required argument: 'sample'"):
            scheduler.step(x + 1, 900)
