"""Shared fixtures: real ppdiffusers objects, small enough for a 2-core CPU.

The UNet is a randomly initialised `UNet2DModel` (8x8, 1 channel): the recording,
patching and comparison mechanics do not depend on the weights. Tests about sample
quality use the bundled trained model instead.
"""
import contextlib
import os
import uuid

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

import paddle  # noqa: E402
from ppdiffusers import DDPMPipeline  # noqa: E402
from ppdiffusers.utils.paddle_utils import randn_tensor  # noqa: E402

from ppddpm.model.builders import ddpm_scheduler, small_unet  # noqa: E402

FAST = os.environ.get("PPDDPM_FAST", "1") != "0"


@pytest.fixture(scope="session")
def unet():
    paddle.seed(1234)
    model = small_unet(resolution=8, channels=1)
    model.eval()
    return model


@pytest.fixture
def scheduler():
    return ddpm_scheduler()


@pytest.fixture
def pipe(unet, scheduler):
    p = DDPMPipeline(unet=unet, scheduler=scheduler)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="session")
def saved_pipe_dir(tmp_path_factory, unet):
    path = tmp_path_factory.mktemp("tiny-ddpm")
    DDPMPipeline(unet=unet, scheduler=ddpm_scheduler()).save_pretrained(str(path))
    return path


@contextlib.contextmanager
def interrupted_after(pipe, n_calls, exc=KeyboardInterrupt):
    """Ctrl-C as a user would press it: the n-th UNet forward pass raises."""
    calls = []

    def hook(layer, inputs, output):
        calls.append(1)
        if len(calls) == n_calls:
            raise exc

    handle = pipe.unet.register_forward_post_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def nan_from_t500(scheduler, model_output, timestep, sample, generator=None, return_dict=True):
    """A broken step formula: the posterior route, with NaN in x_{t-1} from t = 500 on."""
    import ppddpm

    out = ppddpm.get_variant("posterior").step(scheduler, model_output, timestep, sample, generator)
    if int(timestep) <= 500:
        out.prev_sample = out.prev_sample / 0.0 * 0.0
    return out


def expected_prev(sched, variant, x_t, eps, z, t):
    """x_{t-1} recomputed from recorded (x_t, ε̂, z) by eq. (15) → clip → eq. (7) ("posterior") or
    by eq. (11) ("direct"), with the same float32 operations as the step."""
    from ppddpm.variants.registry import coefficients, modify_x0, predict_start_from_noise, sigma

    x_t, eps, z = (paddle.to_tensor(a) for a in (x_t, eps, z))
    c = coefficients(sched, paddle.to_tensor(t))
    if variant == "posterior":
        x0 = modify_x0(sched, predict_start_from_noise(c, eps, x_t))
        mean = ((c.alpha_prod_t_prev ** 0.5 * c.current_beta_t) / c.beta_prod_t) * x0 + \
            (c.current_alpha_t ** 0.5 * c.beta_prod_t_prev / c.beta_prod_t) * x_t
    else:
        mean = (x_t - eps * c.current_beta_t / c.beta_prod_t ** 0.5) / c.current_alpha_t ** 0.5
    return (mean + sigma(sched, t) * z if t > 0 else mean).numpy()


def hand_loop(unet, scheduler, seed, steps, batch_size=1):
    """The reverse process written out by hand over `scheduler.step` (no pipeline):
    what every recorder must reproduce bitwise."""
    generator = paddle.Generator().manual_seed(seed, generator_name=f"hand-loop-{seed}-{uuid.uuid4()}")
    shape = (batch_size, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    x = randn_tensor(shape, generator=generator, dtype=unet.dtype)
    scheduler.set_timesteps(steps)
    ts, prev, x0 = [], [], []
    with paddle.no_grad():
        for t in scheduler.timesteps:
            eps = unet(x, t).sample
            out = scheduler.step(eps, t, x, generator=generator)
            x = out.prev_sample
            ts.append(int(t))
            prev.append(x.numpy())
            x0.append(out.pred_original_sample.numpy())
    return np.array(ts), np.stack(prev), np.stack(x0)
