"""Where a run starts: x_T = init_noise_sigma · z, with the σ of the first step that runs.

The specification (MATH.md, "σ-space, and where x_T starts"): a variance-preserving sampler
(DDPM, DDIM, PNDM, DPM-Solver) starts from x_T = z; a σ-space sampler (Euler, Euler ancestral,
LMS, Heun) integrates x_σ = x_t/√ᾱ_t and starts from σ_first · z for "linspace" / "trailing"
spacing and √(σ_first² + 1) · z for "leading", where σ_first = √((1−ᾱ_t)/ᾱ_t) at the first
timestep that runs after `set_timesteps(n)`. The oracle below computes that σ in float64 from the
betas and the spacing rules of Lin et al. 2023 ("Common Diffusion Noise Schedules and Sample
Steps are Flawed", Table 2), not from ppdiffusers.
"""
import numpy as np
import paddle
import pytest
from ppdiffusers import (DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler,
                         EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler,
                         LMSDiscreteScheduler, PNDMScheduler)
from ppdiffusers.utils.paddle_utils import randn_tensor

import ppddpm
from conftest import interrupted_after
from ppddpm.core.config import with_config
from ppddpm.model.builders import ddpm_scheduler

T, BETA_START, BETA_END = 1000, 1e-4, 0.02          # ddpm_scheduler(): the paper's linear schedule
ALPHA_BAR = np.cumprod(1.0 - np.linspace(BETA_START, BETA_END, T, dtype=np.float64))

# family: (scheduler class, pipeline class, starts in σ-space)
FAMILIES = {
    "ddpm": (DDPMScheduler, DDPMPipeline, False),
    "ddim": (DDIMScheduler, DDIMPipeline, False),
    "pndm": (PNDMScheduler, ppddpm.SamplerPipeline, False),
    "dpmsolver-multistep": (DPMSolverMultistepScheduler, ppddpm.SamplerPipeline, False),
    "euler": (EulerDiscreteScheduler, ppddpm.SamplerPipeline, True),
    "euler-ancestral": (EulerAncestralDiscreteScheduler, ppddpm.SamplerPipeline, True),
    "lms": (LMSDiscreteScheduler, ppddpm.SamplerPipeline, True),
    "heun": (HeunDiscreteScheduler, ppddpm.SamplerPipeline, True),
}
SPACINGS = ("leading", "trailing", "linspace")


def first_timestep(n: int, spacing: str, family: str = "", steps_offset: int = 0) -> int:
    """The first (largest) t of n sampling steps out of T (Lin et al. 2023, Table 2)."""
    if spacing == "leading" and family == "dpmsolver-multistep":
        return n * (T // (n + 1)) + steps_offset     # DPM-Solver spaces n+1 points and drops the last (t=0)
    if spacing == "leading":                 # t = k·⌊T/n⌋ + offset, k = n−1 … 0
        return (n - 1) * (T // n) + steps_offset
    # "trailing" (T − k·T/n − 1) and "linspace" (from T − 1) both start at T − 1
    return T - 1


def expected_init_noise_sigma(n: int, spacing: str, sigma_space: bool) -> float:
    if not sigma_space:
        return 1.0
    ab = ALPHA_BAR[first_timestep(n, spacing)]
    sigma = np.sqrt((1.0 - ab) / ab)         # σ_t = √((1−ᾱ_t)/ᾱ_t)
    return float(np.sqrt(sigma ** 2 + 1.0)) if spacing == "leading" else float(sigma)


class _Stop(Exception):
    """Ends a run after its first step: x_T is all this module asks of it."""


def recorded_x_T(unet, family, n, spacing, seed=3):
    cls, pipeline_cls, _ = FAMILIES[family]
    pipe = pipeline_cls(unet=unet, scheduler=with_config(ddpm_scheduler(), cls=cls, timestep_spacing=spacing))
    pipe.set_progress_bar_config(disable=True)
    with ppddpm.record(pipe, every=1, fields=("sample",)) as traj:
        with interrupted_after(pipe, 2, _Stop), pytest.raises(_Stop):
            pipe(batch_size=2, generator=paddle.Generator().manual_seed(seed), num_inference_steps=n)
    shape = [2, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size]
    z = randn_tensor(shape, generator=paddle.Generator().manual_seed(seed), dtype=unet.dtype).numpy()
    return traj.sample[0], z, traj.timesteps[0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("n", [10, 30, 50, 1000])
def test_x_T_is_z_times_the_sigma_of_the_first_step_that_runs(unet, family, spacing, n):
    x_T, z, t_first = recorded_x_T(unet, family, n, spacing)
    assert float(t_first) == first_timestep(n, spacing, family)
    # ppdiffusers builds σ from a float32 ᾱ_t = cumprod over up to 1000 factors: relative error up
    # to ~T·u = 1000 · 6e-8 = 6e-5 in ᾱ, half that in σ = √((1−ᾱ)/ᾱ); 2e-4 covers it with margin.
    # The bug this guards against scaled x_T by σ_max = 157.4 instead: 1.2x off at 50 steps, 2.6x at 10.
    np.testing.assert_allclose(x_T, expected_init_noise_sigma(n, spacing, FAMILIES[family][2]) * z, rtol=2e-4)


def test_the_oracle_knows_the_bundled_numbers():
    # MATH.md: σ of the full training table is 157.4 for the bundled betas, ~61 at 10 leading steps
    assert expected_init_noise_sigma(1000, "trailing", True) == pytest.approx(157.4, abs=0.05)
    assert expected_init_noise_sigma(10, "leading", True) == pytest.approx(60.8, abs=0.05)


@pytest.fixture(scope="module")
def bundled_pipe():
    return ppddpm.load_pipeline()


@pytest.mark.parametrize("family", FAMILIES)
def test_every_sampler_ends_in_the_data_range_on_the_bundled_model(bundled_pipe, family):
    """10 steps of every sampler on the trained digits model end near [−1, 1] (the data range,
    where background pixels sit at −1). 1.5 allows for the overshoot of an ODE sampler's last
    step at 10 steps; x_T scaled by σ_max instead ended at |x| ≈ 70."""
    cls, _, _ = FAMILIES[family]
    pipe = ppddpm.with_sampler(bundled_pipe, family)
    traj = ppddpm.sample_trajectory(pipe, seed=0, num_inference_steps=10, every=10, batch_size=4)
    final = traj.prev_sample[-1]
    assert type(pipe.scheduler) is cls
    assert np.abs(final).max() <= 1.5, f"{family}: final sample spans ±{np.abs(final).max():.1f}"
