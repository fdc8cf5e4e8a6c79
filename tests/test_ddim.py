"""DDIM as variants, and DDIM(η=1) against DDPM: the article's next step, asserted.

MATH.md, "DDIM": with η = 1 the DDIM step is DDPM's posterior step (fixed_small) whenever ε and
x̂_0 agree — no clipping, or `use_clipped_model_output=True`; with clipping firing and the
default, it mixes the clipped x̂_0 with the unclipped ε and departs.
"""
import numpy as np
import paddle
import pytest
from ppdiffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline

import ppddpm
from ppddpm.core.config import with_config
from ppddpm.model.builders import ddpm_scheduler
from ppddpm.variants.registry import get_variant, parse_spec, split_specs

CONFIGS = [dict(), dict(clip_sample=False), dict(thresholding=True), dict(prediction_type="v_prediction"),
           dict(prediction_type="sample"), dict(set_alpha_to_one=False), dict(steps_offset=1),
           dict(clip_sample=False, set_alpha_to_one=False)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("eta,clipped", [(0.0, False), (1.0, False), (1.0, True), (0.5, True)])
def test_ddim_written_is_bitwise_the_stock_step(unet, config, eta, clipped):
    """eq. (12)/(16) written out with ppdiffusers' own float32 operations: the same bits."""
    runs = []
    for variant in ("ddim", "ddim-written"):
        pipe = DDIMPipeline(unet=unet, scheduler=with_config(ddpm_scheduler(), cls=DDIMScheduler, **config))
        pipe.set_progress_bar_config(disable=True)     # (DDIMPipeline makes its own scheduler from the config)
        with ppddpm.patch_step(pipe, variant):
            runs.append(ppddpm.sample_trajectory(pipe, seed=21, num_inference_steps=10, fields="all",
                                                 pipe_kwargs={"eta": eta, "use_clipped_model_output": clipped}))
    stock, written = runs
    assert written.meta["variant"] == "ddim-written"
    assert np.array_equal(stock.prev_sample, written.prev_sample)
    assert np.array_equal(stock.pred_original_sample, written.pred_original_sample)


def test_spec_arguments_are_in_force_when_patched(unet):
    pipe = DDIMPipeline(unet=unet, scheduler=with_config(ddpm_scheduler(), cls=DDIMScheduler))
    pipe.set_progress_bar_config(disable=True)
    with ppddpm.patch_step(pipe, "ddim(eta=1.0)"):
        forced = ppddpm.sample_trajectory(pipe, seed=3, num_inference_steps=5, pipe_kwargs={"eta": 0.0})
    asked = ppddpm.sample_trajectory(pipe, seed=3, num_inference_steps=5, pipe_kwargs={"eta": 1.0})
    assert forced.meta["variant"] == "ddim(eta=1.0)"
    assert np.array_equal(forced.prev_sample, asked.prev_sample) and (forced.noise_std[:-1] > 0).all()


@pytest.mark.parametrize("spec,expected", [
    ("posterior", ("posterior", {})),
    ("ddim(eta=1.0)", ("ddim", {"eta": 1.0})),
    (" ddim( eta = 1 , use_clipped_model_output=True ) ", ("ddim", {"eta": 1, "use_clipped_model_output": True})),
    ("ddim-written(eta=-0.0)", ("ddim-written", {"eta": -0.0})),
])
def test_spec_grammar(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec,why", [
    ("ddim(eta=__import__('os').getcwd())", "the value of eta is not a literal"),
    ("ddim(1.0)", "arguments must be given as key=value"),
    ("ddim(eta=1.0", "not a name or a call"),
    ("ddim(**{'eta': 1})", r"\*\* is not accepted"),
    ("ddim(eta=[1])", "the value of eta is not a literal"),
    ("", "empty"),
])
def test_a_bad_spec_is_one_line_showing_the_accepted_form(spec, why):
    with pytest.raises(ValueError, match=why + r".*the accepted form is name or name\(key=value, \.\.\.\)") as info:
        get_variant(spec)
    assert "\n" not in str(info.value)


def test_spec_arguments_must_be_the_steps_own():
    with pytest.raises(ValueError, match="variant 'ddim' takes no argument 'etta'; it takes eta, use_clipped"):
        get_variant("ddim(etta=1.0)")
    with pytest.raises(ValueError, match="variant 'posterior' takes no argument 'eta'; it takes none"):
        get_variant("posterior(eta=1.0)")
    assert split_specs("ppdiffusers, ddim(eta=1.0, use_clipped_model_output=True),direct") == \
        ["ppdiffusers", "ddim(eta=1.0, use_clipped_model_output=True)", "direct"]


# ---------------------------------------------------------------- DDIM(η=1) against DDPM, measured

def ddpm_pipe(unet, **config):
    pipe = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler(**config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("mode", ["shadow", "free"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddim_eta1_with_clipped_eps_is_ddpm(unet, mode, clip):
    """DDIM(η=1, use_clipped_model_output=True) ≡ DDPM's stock step (fixed_small) within the
    float32 bound, clipping on and off; the same x_T, z and t (MATH.md, "DDIM")."""
    report = ppddpm.compare(ddpm_pipe(unet), ["ppdiffusers", "ddim(eta=1.0, use_clipped_model_output=True)"],
                            seed=[0, 1], num_inference_steps=20, mode=mode, clip_sample=clip)
    assert report.meta["variants"]["ddim(eta=1.0, use_clipped_model_output=True)"]["scheduler"] == "DDIMScheduler"
    assert report.equivalent(), report.table()
    if clip:
        assert report.summary()["clipping"]["steps_with_clipping"] > 0     # clipping did fire: the claim is tested


def test_ddim_eta1_departs_exactly_where_clipping_fires(unet):
    """With the default use_clipped_model_output=False, DDIM(η=1) mixes the clipped x̂_0 with the
    raw ε: in shadow mode it leaves the bound at the steps where clipping fired and only there
    (but the last, where √(1 − ᾱ_prev − σ²) = 0 removes ε from eq. 12)."""
    report = ppddpm.compare(ddpm_pipe(unet), ["ppdiffusers", "ddim(eta=1.0)"], seed=5, num_inference_steps=20,
                            mode="shadow", clip_sample=True)
    fired = np.nonzero(report.clip_fraction["ppdiffusers"][:, 0] > 0)[0]
    departs = report.departures("ddim(eta=1.0)")
    assert len(fired) >= 3
    assert departs.tolist() == [i for i in fired.tolist() if i != len(report.timesteps) - 1]
    unclipped = ppddpm.compare(ddpm_pipe(unet), ["ppdiffusers", "ddim(eta=1.0)"], seed=5, num_inference_steps=20,
                               mode="shadow", clip_sample=False)
    assert unclipped.equivalent()


def test_ddim_eta1_is_not_ddpm_fixed_large(unet):
    """DDPM's fixed_large adds σ_t² = β_t, DDIM(η=1) σ_t² = β̃_t: they differ with clipping off too."""
    report = ppddpm.compare(ddpm_pipe(unet, variance_type="fixed_large", clip_sample=False),
                            ["ppdiffusers", "ddim(eta=1.0, use_clipped_model_output=True)"],
                            seed=5, num_inference_steps=20, mode="shadow")
    assert not report.equivalent()
    assert len(report.departures("ddim(eta=1.0, use_clipped_model_output=True)")) >= 15


def test_schedulers_that_visit_different_timesteps_are_refused():
    """compare builds DDIM from the DDPM config, so spacing and offset carry over and the two visit
    the same t (checked for leading/linspace/trailing, offsets, n = 7…333 while writing this);
    the guard is for schedules that do not agree."""
    from ppddpm.analysis.ab import _check_same_timesteps

    ddpm, ddim = ddpm_scheduler(), with_config(ddpm_scheduler(), cls=DDIMScheduler, timestep_spacing="trailing")
    ddpm.set_timesteps(10)
    ddim.set_timesteps(10)
    with pytest.raises(ValueError, match=r"'posterior' \(DDPMScheduler\) and 'ddim' \(DDIMScheduler\) visit different "
                                         r"timesteps \(\[900, 800, 700, …\] vs \[999, 899, 799, …\]\)"):
        _check_same_timesteps([get_variant("posterior"), get_variant("ddim")], [ddpm, ddim])
    same = with_config(ddpm_scheduler(), cls=DDIMScheduler)
    same.set_timesteps(10)
    _check_same_timesteps([get_variant("posterior"), get_variant("ddim")], [ddpm, same])


def test_the_same_noise_reaches_both_schedulers(unet):
    """A solo DDIM(η=1) run with a seed draws, step by step, the z a solo DDPM run with that seed
    draws (MATH.md: one randn per step from the same generator)."""
    ddpm = ppddpm.sample_trajectory(ddpm_pipe(unet), seed=9, num_inference_steps=10, fields=("noise",))
    ddim_pipe = DDIMPipeline(unet=unet, scheduler=with_config(ddpm_scheduler(), cls=DDIMScheduler))
    ddim_pipe.set_progress_bar_config(disable=True)
    ddim = ppddpm.sample_trajectory(ddim_pipe, seed=9, num_inference_steps=10, fields=("noise",),
                                    pipe_kwargs={"eta": 1.0})
    assert np.array_equal(ddpm.noise[:-1], ddim.noise[:-1]) and ddpm.noise[:-1].any()
    assert paddle.to_tensor(ddim.noise[-1]).abs().sum() > 0 and ddim.noise_std[-1] == 0   # drawn, times σ = 0
