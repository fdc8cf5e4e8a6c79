"""Shared fixtures: real ppdiffusers objects, small enough for a 2-core CPU.

The UNet is a randomly initialised `UNet2DModel` (8x8, 1 channel): the recording,
patching and comparison mechanics do not depend on the weights. Tests about sample
quality use the bundled trained model instead.
"""
import contextlib
import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

import paddle  # noqa: E402
from ppdiffusers import DDPMPipeline  # noqa: E402

from ppddpm import reference as ref  # noqa: E402
from ppddpm.model.builders import ddpm_scheduler, small_unet  # noqa: E402
from ppddpm.reference.base import dynamic_threshold  # noqa: E402

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


U32 = 2.0 ** -24   # float32's unit roundoff: one rounding changes a value by at most this, relatively
ROUNDINGS = 16     # float32 roundings along any path of a DDPM step (a coefficient ≤ 6, x̂_0 ≤ 6, the sums 4)


def reference_schedule(sched):
    """`ppddpm.reference`'s float64 schedule on the ᾱ_t table `sched` holds (ppdiffusers' float32
    cumulative product, exact in float64), so that the oracle and the step differ only by the step's
    own float32 roundings, not by a second rounding of the schedule."""
    schedule = ref.Schedule.from_scheduler(sched)
    schedule.alphas_cumprod = sched.alphas_cumprod.numpy().astype(np.float64)
    return schedule


def _clip(sched, x0):
    """x̂_0 as the step uses it, by the reference's clipping (`ppddpm.reference.base`)."""
    cfg = sched.config
    if cfg.thresholding:
        return dynamic_threshold(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)
    return np.clip(x0, -cfg.clip_sample_range, cfg.clip_sample_range) if cfg.clip_sample else x0


def _step_numbers(sched, t):
    """(schedule, prev_t, α_t, β_t) of the step from timestep t, and the relative error of β_t in U32:
    β_t = 1 − ᾱ_t/ᾱ_prev cancels, so a float32 β_t carries U32·α_t/β_t into all that is ∝ β_t."""
    s, t = reference_schedule(sched), int(t)
    prev = int(sched.previous_timestep(t))
    alpha, beta = s.step_alpha_beta(t, prev)
    return s, prev, alpha, beta, ROUNDINGS + alpha / beta


def reference_x0(sched, x_t, eps, t):
    """(x̂_0 by eq. 15, x̂_0 clipped or thresholded as `sched`'s config says, a float32 bound on either):
    x̂_0's terms are bounded by (|x_t| + √(1−ᾱ_t)|ε̂|)/√ᾱ_t; clipping is 1-Lipschitz; thresholding
    divides by s ≥ 1 (twice the bound)."""
    s, t = reference_schedule(sched), int(t)
    x_t, eps = np.asarray(x_t, np.float64), np.asarray(eps, np.float64)
    ab = s.alphas_cumprod[t]
    raw = ref.predict_start_from_noise(s, x_t, t, eps)
    size = (np.abs(x_t).max() + np.sqrt(1 - ab) * np.abs(eps).max()) / np.sqrt(ab)
    return raw, _clip(sched, raw), ROUNDINGS * U32 * size * (2 if sched.config.thresholding else 1)


def reference_sigma(sched, t):
    """(σ_t, its relative float32 bound): σ_t² = β̃_t (fixed_small, eq. 7) or β_t (fixed_large), 0 at t = 0."""
    s, prev, alpha, beta, in_beta = _step_numbers(sched, t)
    posterior_variance = ref.posterior_coefficients(s, int(t), prev)[2]
    if int(t) <= 0:
        return 0.0, 0.0
    return np.sqrt(beta if sched.config.variance_type == "fixed_large" else posterior_variance), in_beta * U32


def reference_step(sched, variant, x_t, eps, z, t):
    """(x_{t-1}, its float32 error bound) by the float64 references of `ppddpm.reference.ddpm`, from
    recorded (x_t, ε̂, z) at timestep t of `sched` (an ε-prediction DDPMScheduler after set_timesteps):
    "posterior" x̂_0 by eq. (15) → clip/threshold → μ̃_t of eq. (7); "direct" μ_θ of eq. (11); then
    + σ_t z, σ_t² = β̃_t (fixed_small) or β_t (fixed_large), and no noise at t = 0.

    The bound: the float32 step rounds each quantity at most ROUNDINGS times, each by ≤ U32 relative to
    the terms it combines, so |float32 − float64| ≤ ROUNDINGS·U32·Σ|term|, the terms being
    |c_0 x̂_0|, |c_t x_t| (eq. 7) or |x_t|/√α_t, β_t|ε̂|/(√(1−ᾱ_t)√α_t) (eq. 11), and σ_t|z|; the
    terms ∝ β_t (c_0, eq. 11's ε̂ term, σ_t) carry β_t's cancellation too (`_step_numbers`)."""
    s, prev, alpha, beta, in_beta = _step_numbers(sched, t)
    x_t, eps, z = (np.asarray(a, np.float64) for a in (x_t, eps, z))
    ab = s.alphas_cumprod[int(t)]
    std, std_error = reference_sigma(sched, t)
    if variant == "posterior":
        c_x0, c_xt, _ = ref.posterior_coefficients(s, int(t), prev)
        _, x0, x0_error = reference_x0(sched, x_t, eps, t)
        mean = c_x0 * x0 + c_xt * x_t
        error = c_x0 * x0_error / ROUNDINGS * in_beta + c_xt * np.abs(x_t).max() * ROUNDINGS * U32
    elif variant == "direct":
        mean = ref.p_mean_direct(s, eps, x_t, int(t), prev)
        error = (np.abs(x_t).max() * ROUNDINGS + beta / np.sqrt(1 - ab) * np.abs(eps).max() * in_beta) * U32
        error /= np.sqrt(alpha)
    else:
        raise ValueError(f"no reference for variant {variant!r}")
    return mean + std * z, error + std * np.abs(z).max() * std_error


def expected_prev(sched, variant, x_t, eps, z, t):
    """x_{t-1} recomputed in float64 from recorded (x_t, ε̂, z) (`reference_step`)."""
    return reference_step(sched, variant, x_t, eps, z, t)[0]


def assert_is_the_reference_step(prev, sched, variant, x_t, eps, z, t):
    """The float32 x_{t-1} a step recorded is the float64 reference's to within its float32 rounding."""
    expected, bound = reference_step(sched, variant, x_t, eps, z, t)
    error = np.abs(np.asarray(prev, np.float64) - expected).max()
    assert error <= bound, f"{variant} at t={int(t)}: |x_t-1 − reference| = {error:.3g} > float32 bound {bound:.3g}"
