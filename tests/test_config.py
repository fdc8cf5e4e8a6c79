"""Overrides that hold: `ppddpm.with_config` against ppdiffusers' `_use_default_values`."""
import json

import pytest
from ppdiffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler

import ppddpm
from ppddpm.core.config import with_config


def test_the_trap_is_real_for_a_scheduler_built_in_code():
    """The reason the helper exists: from_config restores defaults for keys never given."""
    built = DDPMScheduler()                                   # every key a default
    assert "clip_sample" in built.config["_use_default_values"]
    assert type(built).from_config(dict(built.config, clip_sample=False)).config.clip_sample is True


@pytest.mark.parametrize("key,value", [("clip_sample", False), ("variance_type", "fixed_large"),
                                       ("thresholding", True), ("prediction_type", "v_prediction")])
def test_an_override_holds_on_a_scheduler_built_in_code(key, value):
    assert with_config(DDPMScheduler(), **{key: value}).config[key] == value


def test_an_override_holds_on_a_config_file_that_omits_the_key(tmp_path):
    (tmp_path / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDPMScheduler", "num_train_timesteps": 500, "beta_schedule": "linear"}))
    loaded = DDPMScheduler.from_pretrained(str(tmp_path))
    assert "clip_sample" in loaded.config["_use_default_values"]
    copy = with_config(loaded, clip_sample=False)
    assert copy.config.clip_sample is False and copy.config.num_train_timesteps == 500


def test_values_in_force_carry_over_and_across_classes():
    base = DDPMScheduler(num_train_timesteps=400, beta_end=0.03, clip_sample=False)
    ddim = with_config(base, cls=DDIMScheduler, set_alpha_to_one=False)
    assert (ddim.config.num_train_timesteps, ddim.config.beta_end, ddim.config.clip_sample) == (400, 0.03, False)
    assert "variance_type" not in ddim.config                 # a key DDIM does not know is left behind


def test_an_unknown_override_is_one_clear_error():
    with pytest.raises(ValueError, match="DDPMScheduler has no config key 'clip'; its keys: .*clip_sample"):
        with_config(DDPMScheduler(), clip=False)


def test_compare_honours_clip_sample_false_on_a_scheduler_built_in_code(unet):
    """The reported bug: the A/B silently kept clipping on."""
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    report = ppddpm.compare(pipe, ["ppdiffusers", "direct"], clip_sample=False, num_inference_steps=5)
    assert report.clip_sample is False
    assert report.summary()["clipping"]["steps_with_clipping"] == 0
    assert report.equivalent()                                # with x̂_0 unclipped the routes agree
    assert pipe.scheduler.config.clip_sample is True          # the pipeline's own scheduler untouched
