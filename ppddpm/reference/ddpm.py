"""The DDPM paper's formulas in float64 NumPy, named as in the original TF code
(hojonathanho/diffusion, `diffusion_utils_2.py`), each with its equation number (MATH.md);
DDIM's step named as in the DDIM authors' code (ermongroup/ddim, `generalized_steps`).

Timesteps are 0-indexed like ppdiffusers (its t is the paper's t+1): ᾱ_t = alphas_cumprod[t]
and the step t → prev_t uses ᾱ_prev = alphas_cumprod[prev_t], or 1 when prev_t < 0.
`prev_t` defaults to t − 1; pass it for strided sampling (MATH.md, "Strided sampling").

`DDPMReference` is the sampler reference of the "ddpm" family (base.py's contract): Algorithm 2
with the posterior route of eqs. (15), (7), strided along the DDIM sub-sequence.

This is the truth the float32 code is held against: `Schedule.from_scheduler` takes
ppdiffusers' own β_t and redoes every product in float64, so a test against it measures
the formula, not a second rounding of the schedule.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import RefStep, VPReference, as64


@dataclass
class Schedule:
    betas: np.ndarray                 # β_t, float64, length T

    def __post_init__(self):
        self.betas = np.asarray(self.betas, np.float64)
        if self.betas.ndim != 1 or not len(self.betas) or not ((self.betas > 0) & (self.betas < 1)).all():
            raise ValueError("betas must be a 1-d array of values in (0, 1)")
        self.alphas = 1.0 - self.betas                      # α_t = 1 − β_t
        self.alphas_cumprod = np.cumprod(self.alphas)       # ᾱ_t = ∏_{s≤t} α_s

    @classmethod
    def linear(cls, num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02):
        """The paper's schedule (MATH.md, Notation)."""
        return cls(np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64))

    @classmethod
    def from_scheduler(cls, scheduler):
        return cls(scheduler.betas.numpy().astype(np.float64))

    @property
    def num_timesteps(self):
        return len(self.betas)

    def alpha_bar_prev(self, t, prev_t=None):
        prev_t = t - 1 if prev_t is None else prev_t
        return self.alphas_cumprod[prev_t] if prev_t >= 0 else 1.0

    def step_alpha_beta(self, t, prev_t=None):
        """(α_t, β_t) of the step t → prev_t: ᾱ_t/ᾱ_prev and 1 − ᾱ_t/ᾱ_prev (= α_t, β_t when prev_t = t−1)."""
        alpha = self.alphas_cumprod[t] / self.alpha_bar_prev(t, prev_t)
        return alpha, 1.0 - alpha


def q_sample(s: Schedule, x_start, t, noise):
    """eq. (4): x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε.  ppdiffusers: `DDPMScheduler.add_noise`."""
    ab = _per_sample(s.alphas_cumprod, t, np.ndim(x_start))
    return np.sqrt(ab) * x_start + np.sqrt(1.0 - ab) * noise


def q_step(s: Schedule, x_prev, t, noise):
    """eq. (2), one forward step: x_t = √(1−β_t) x_{t−1} + √β_t ε."""
    b = _per_sample(s.betas, t, np.ndim(x_prev))
    return np.sqrt(1.0 - b) * x_prev + np.sqrt(b) * noise


def predict_start_from_noise(s: Schedule, x_t, t, noise):
    """eq. (15): x̂_0 = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t."""
    ab = s.alphas_cumprod[t]
    return (x_t - np.sqrt(1.0 - ab) * noise) / np.sqrt(ab)


def posterior_coefficients(s: Schedule, t, prev_t=None):
    """eq. (7)'s numbers for the step t → prev_t (`posterior_coefficients_of` its ᾱ_t and ᾱ_{t−1})."""
    return posterior_coefficients_of(s.alphas_cumprod[t], s.alpha_bar_prev(t, prev_t))


def posterior_coefficients_of(ab, ab_prev):
    """eq. (7)'s numbers for a step from ᾱ_t = `ab` to ᾱ_{t−1} = `ab_prev`, with α_t = ᾱ_t/ᾱ_{t−1} and
    β_t = 1 − α_t (the step's own, strided or not): (x_0 coefficient √ᾱ_{t−1} β_t/(1−ᾱ_t), x_t
    coefficient √α_t (1−ᾱ_{t−1})/(1−ᾱ_t), β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) · β_t)."""
    alpha = ab / ab_prev
    beta = 1.0 - alpha
    return (np.sqrt(ab_prev) * beta / (1.0 - ab), np.sqrt(alpha) * (1.0 - ab_prev) / (1.0 - ab),
            (1.0 - ab_prev) / (1.0 - ab) * beta)


def q_posterior_mean_variance(s: Schedule, x_start, x_t, t, prev_t=None):
    """eqs. (6)(7): q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I), μ̃_t = c_0 · x_0 + c_t · x_t with the
    coefficients of `posterior_coefficients`. Returns (mean, variance)."""
    c_x0, c_xt, variance = posterior_coefficients(s, t, prev_t)
    return c_x0 * x_start + c_xt * x_t, variance


def p_mean_variance(s: Schedule, model_output, x_t, t, prev_t=None, clip_denoised=True,
                    variance_type="fixed_small"):
    """The model's reverse distribution p_θ(x_{t−1} | x_t) = N(μ_θ, σ_t² I) by the posterior route:
    x̂_0 by eq. (15), clipped to [−1, 1] if `clip_denoised`, then μ̃_t by eq. (7).
    σ_t² = β̃_t ("fixed_small") or β_t ("fixed_large"). Returns (mean, variance, x̂_0)."""
    x0 = predict_start_from_noise(s, x_t, t, model_output)
    if clip_denoised:
        x0 = np.clip(x0, -1.0, 1.0)
    mean, posterior_variance = q_posterior_mean_variance(s, x0, x_t, t, prev_t)
    variance = {"fixed_small": posterior_variance, "fixed_large": s.step_alpha_beta(t, prev_t)[1]}[variance_type]
    return mean, variance, x0


def p_mean_direct(s: Schedule, model_output, x_t, t, prev_t=None):
    """eq. (11): μ_θ = 1/√α_t · (x_t − β_t/√(1−ᾱ_t) · ε_θ) (Algorithm 2)."""
    alpha, beta = s.step_alpha_beta(t, prev_t)
    return (x_t - beta / np.sqrt(1.0 - s.alphas_cumprod[t]) * model_output) / np.sqrt(alpha)


def p_sample(s: Schedule, model_output, x_t, t, noise, prev_t=None, clip_denoised=True,
             variance_type="fixed_small"):
    """Algorithm 2, one step: x_{t−1} = μ_θ + σ_t z, with no noise at the last step (t = 0)."""
    mean, variance, _ = p_mean_variance(s, model_output, x_t, t, prev_t, clip_denoised, variance_type)
    return mean + (np.sqrt(variance) * noise if t > 0 else 0.0)


def compute_alpha(s: Schedule, t, alpha_bar_final=1.0):
    """ᾱ_t, with ᾱ past the end (t < 0) = `alpha_bar_final` (1 with `set_alpha_to_one`, else ᾱ_0).
    DDIM code (ermongroup/ddim `functions/denoising.py`): `compute_alpha`."""
    return s.alphas_cumprod[t] if t >= 0 else alpha_bar_final


def generalized_step(s: Schedule, model_output, x_t, t, next_t, eta, noise, clip_denoised=False,
                     use_clipped_model_output=False, alpha_bar_final=1.0):
    """One step of DDIM's `generalized_steps` (Song et al. 2020), t → next_t (next_t < t):
        x0_t = (x_t − √(1−a_t) ε) / √a_t                        eq. (15)
        c1   = η · √((1 − a_t/a_next) (1 − a_next) / (1 − a_t))    σ_t(η), eq. (16)
        c2   = √(1 − a_next − c1²)
        x_next = √a_next · x0_t + c1 · z + c2 · ε                 eq. (12)
    plus what ppdiffusers adds: x0_t clipped to [−1, 1] (`clip_denoised`) and, with
    `use_clipped_model_output`, ε re-derived from the clipped x0_t. Returns (x_next, x0_t)."""
    at, at_next = compute_alpha(s, t), compute_alpha(s, next_t, alpha_bar_final)
    x0_t = (x_t - model_output * np.sqrt(1.0 - at)) / np.sqrt(at)
    et = model_output
    if clip_denoised:
        x0_t = np.clip(x0_t, -1.0, 1.0)
        if use_clipped_model_output:
            et = (x_t - np.sqrt(at) * x0_t) / np.sqrt(1.0 - at)
    c1 = ddim_sigma(at, at_next, eta)
    return ddim_update(x0_t, et, at_next, c1, noise), x0_t


def ddim_sigma(alpha_bar_t, alpha_bar_prev, eta):
    """DDIM eq. (16): σ_t(η) = η · √((1 − ᾱ_prev)/(1 − ᾱ_t)) · √(1 − ᾱ_t/ᾱ_prev)."""
    return eta * np.sqrt((1.0 - alpha_bar_t / alpha_bar_prev) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t))


def ddim_update(x0, eps, alpha_bar_prev, sigma, noise):
    """DDIM eq. (12): x_prev = √ᾱ_prev · x̂_0 + √(1 − ᾱ_prev − σ_t²) · ε + σ_t z (z ignored when σ_t = 0)."""
    out = np.sqrt(alpha_bar_prev) * x0 + np.sqrt(1.0 - alpha_bar_prev - sigma ** 2) * eps
    return out + sigma * noise if np.any(sigma) else out


def training_losses(s: Schedule, model_fn, x_start, t, noise):
    """eq. (14), L_simple: mean ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖² (the article's `train_losses`)."""
    x_noisy = q_sample(s, x_start, t, noise)
    return float(np.mean((noise - model_fn(x_noisy, t)) ** 2))


def _per_sample(values, t, ndim):
    v = np.asarray(values)[np.asarray(t)]
    return v.reshape(v.shape + (1,) * (ndim - v.ndim)) if v.ndim else v


class DDPMReference(VPReference):
    """Ho et al. 2020, Algorithm 2 by the posterior route, strided: call i steps t = τ_i → prev = τ_{i+1}
    with α_t = ᾱ_t/ᾱ_prev, β_t = 1 − α_t (MATH.md, "Strided sampling"):
        x̂_0 by eq. (15) (or the sample / v parameterisation), clipped or thresholded,
        x_prev = μ̃_t(x̂_0, x_t) of eq. (7) + σ_t z,   σ_t² = β̃_t ("fixed_small") or β_t ("fixed_large"),
    and no noise at the last step (Algorithm 2, line 3: z = 0 for the step that ends the chain)."""

    family, multistep, stochastic = "ddpm", False, True
    DEFAULTS = {"variance_type": "fixed_small", "clip_sample": True, "prediction_type": "epsilon",
                "thresholding": False, "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0,
                "sample_max_value": 1.0, "timestep_spacing": "leading", "steps_offset": 0}
    SUPPORTED = {"variance_type": ("fixed_small", "fixed_large"),
                 "timestep_spacing": ("linspace", "leading", "trailing")}

    def setup(self) -> None:
        self.setup_grid()
        self.schedule = Schedule(self.betas)

    def step(self, i: int, model_output, sample, noise=None) -> RefStep:
        t, prev = int(self.timesteps[i]), int(self.prev_timesteps[i])
        x = as64(sample)
        x0_raw = self.x0_raw(model_output, x, t)
        x0 = self.clip_x0(x0_raw)
        c_x0, c_xt, posterior_variance = posterior_coefficients(self.schedule, t, prev)
        variance = posterior_variance if self.config["variance_type"] == "fixed_small" else \
            self.schedule.step_alpha_beta(t, prev)[1]
        std = float(np.sqrt(variance)) if prev >= 0 else 0.0
        return RefStep(c_x0 * x0 + c_xt * x + self._noise(noise, std, x.shape), x0, x0_raw, std)
