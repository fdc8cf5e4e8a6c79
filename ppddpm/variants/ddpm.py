"""The DDPM reverse step written out, route by route (Ho et al. 2020; MATH.md), as step variants.

- "posterior"               x̂_0 by eq. (15) → clip/threshold → μ̃_t(x̂_0, x_t) by eq. (7) → + σ_t z:
                            what `DDPMScheduler.step` computes, bitwise.
- "direct"                  μ_θ by eq. (11) from ε_θ (Algorithm 2), strided correctly.
- "direct-clip-consistent"  eq. (11) with ε re-derived from the clipped x̂_0: the posterior route again.
- "direct-article"          the article's edit verbatim: eq. (11) with `betas[t]`, `alphas[t]`.

Every variant has the contract of `DDPMScheduler.step`:
`step(scheduler, model_output, timestep, sample, generator=None, return_dict=True)`
and returns a `DDPMSchedulerOutput(prev_sample, pred_original_sample)`.

Precision: variants compute their coefficients in **float32 from the scheduler's own
tensors, with the same operations as ppdiffusers** (`ppddpm.core.formulas`). So "posterior" is
bitwise equal to the stock step, and any difference between variants is the formula's, not a
change of precision. The float64 truth lives in `ppddpm.reference`.

Noise: every variant draws z exactly as the stock step does, one
`randn_tensor(model_output.shape, generator=generator, dtype=model_output.dtype)` per
step while t > 0 (`ppddpm.core.formulas.draw_noise`), so two runs with one seed differ only by
their formula.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ppddpm.core.formulas import (PREDICTION_TYPES, clip_x0, ddpm_noise_std, draw_noise, eps_by_eq15, step_output,
                                  x0_by_eq15)
from ppddpm.errors import BadValue, Unsupported
from ppddpm.storage.format import timestep_value
from ppddpm.variants.registry import register_variant

# variance types whose σ_t needs more than the schedule: the model's extra variance channels
# ("learned", "learned_range"), or that ppdiffusers 0.29 itself gets wrong ("fixed_large_log":
# it takes the square root of log β_t, a NaN)
UNSUPPORTED_VARIANCE_TYPES = ("learned", "learned_range", "fixed_large_log")
SUPPORTED_PREDICTION_TYPES = PREDICTION_TYPES


@dataclass
class Coefficients:
    """Section 1 of `DDPMScheduler.step`, for step t → prev_t (float32 0-d tensors).

    For strided sampling (num_inference_steps < T) α_t is replaced by ᾱ_t / ᾱ_prev and
    β_t by 1 − ᾱ_t / ᾱ_prev (MATH.md, "Strided sampling").
    """
    t: int
    prev_t: int
    alpha_prod_t: object          # ᾱ_t
    alpha_prod_t_prev: object     # ᾱ_{prev_t}  (1 at the last step)
    beta_prod_t: object           # 1 − ᾱ_t
    beta_prod_t_prev: object      # 1 − ᾱ_{prev_t}
    current_alpha_t: object       # α_t = ᾱ_t / ᾱ_{prev_t}
    current_beta_t: object        # β_t = 1 − α_t


def coefficients(scheduler, timestep) -> Coefficients:
    t = int(timestep_value(timestep))                 # a host int: the coefficients are read by index
    prev_t = int(timestep_value(scheduler.previous_timestep(t)))
    alpha_prod_t = scheduler.alphas_cumprod[t]
    alpha_prod_t_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.one
    beta_prod_t = 1 - alpha_prod_t
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    current_alpha_t = alpha_prod_t / alpha_prod_t_prev
    current_beta_t = 1 - current_alpha_t
    return Coefficients(t, prev_t, alpha_prod_t, alpha_prod_t_prev, beta_prod_t,
                        beta_prod_t_prev, current_alpha_t, current_beta_t)


def check_supported(scheduler) -> None:
    """A clear error for configurations the written-out variants do not implement."""
    cfg = scheduler.config
    if scheduler.variance_type in UNSUPPORTED_VARIANCE_TYPES:
        raise Unsupported(
            f"variance_type={scheduler.variance_type!r} is not implemented by ppddpm's variants; they handle "
            f"fixed_small, fixed_small_log and fixed_large (and, like ppdiffusers, treat unknown names as "
            f"fixed_small). Use variant 'ppdiffusers' for the stock step.")
    if cfg.prediction_type not in SUPPORTED_PREDICTION_TYPES:
        raise BadValue(f"prediction_type={cfg.prediction_type!r} is not one of "
                       f"{', '.join(SUPPORTED_PREDICTION_TYPES)}")


def predict_start_from_noise(c: Coefficients, model_output, sample, prediction_type="epsilon"):
    """x̂_0 before any clipping, eq. (15) (TF `predict_start_from_noise`) at this step's ᾱ_t;
    "sample" and "v_prediction" as ppdiffusers (`ppddpm.core.formulas.x0_by_eq15`)."""
    return x0_by_eq15(c.alpha_prod_t, model_output, sample, prediction_type)


def predict_noise(c: Coefficients, model_output, sample, prediction_type="epsilon"):
    """ε_θ, the quantity eq. (11) needs: the model output itself for "epsilon"; otherwise
    eq. (15) inverted, ε = (x_t − √ᾱ_t x̂_0) / √(1−ᾱ_t), from the unclipped x̂_0."""
    if prediction_type == "epsilon":
        return model_output
    return eps_by_eq15(c.alpha_prod_t, predict_start_from_noise(c, model_output, sample, prediction_type), sample)


def modify_x0(scheduler, x0):
    """Section 3 of the stock step: threshold, or clip to ±clip_sample_range, or leave x̂_0 as is."""
    return clip_x0(scheduler.config, x0)


def add_noise(scheduler, mean, model_output, timestep, generator, c: Optional[Coefficients] = None):
    """x_{t−1} = μ + σ_t z, z ~ N(0, I), no noise at the last step (Algorithm 2, line 4); σ_t as the
    stock step takes it (`ppddpm.core.formulas.ddpm_noise_std`), z drawn exactly as it draws it."""
    c = c or coefficients(scheduler, timestep)          # its host int t: no second read of the timestep
    if c.t > 0:
        return mean + ddpm_noise_std(scheduler, c.t) * draw_noise(model_output, generator)
    return mean + 0


def ddpm_output(prev_sample, pred_original_sample, return_dict=True):
    """What `DDPMScheduler.step` returns: `DDPMSchedulerOutput`, or `(prev_sample,)`."""
    return step_output("ddpm", prev_sample, pred_original_sample, return_dict)


def _clipped_x0(scheduler, c: Coefficients, model_output, sample):
    """x̂_0 by eq. (15), clipped or thresholded as the scheduler's config says."""
    return modify_x0(scheduler, predict_start_from_noise(c, model_output, sample, scheduler.config.prediction_type))


def _direct_mean(c: Coefficients, eps, sample):
    # eq. (11): μ_θ = 1/√α_t · (x_t − β_t / √(1−ᾱ_t) · ε_θ)
    return (sample - eps * c.current_beta_t / c.beta_prod_t ** 0.5) / c.current_alpha_t ** 0.5


@register_variant("posterior", builtin=True)
def posterior_step(scheduler, model_output, timestep, sample, generator=None, return_dict=True):
    """Posterior route: x̂_0 by eq. (15) → clip/threshold → μ̃_t(x̂_0, x_t) by eq. (7) → + σ_t z."""
    check_supported(scheduler)
    c = coefficients(scheduler, timestep)
    x0 = _clipped_x0(scheduler, c, model_output, sample)
    # eq. (7): μ̃_t = √ᾱ_{t−1} β_t / (1−ᾱ_t) · x̂_0 + √α_t (1−ᾱ_{t−1}) / (1−ᾱ_t) · x_t
    pred_original_sample_coeff = (c.alpha_prod_t_prev ** (0.5) * c.current_beta_t) / c.beta_prod_t
    current_sample_coeff = c.current_alpha_t ** (0.5) * c.beta_prod_t_prev / c.beta_prod_t
    mean = pred_original_sample_coeff * x0 + current_sample_coeff * sample
    return ddpm_output(add_noise(scheduler, mean, model_output, timestep, generator, c), x0, return_dict)


@register_variant("direct", builtin=True)
def direct_step(scheduler, model_output, timestep, sample, generator=None, return_dict=True):
    """Direct route, eq. (11) (Algorithm 2), the article's edit made correct for strided
    schedules; never looks at the clipped x̂_0, which it reports only for comparison."""
    check_supported(scheduler)
    c = coefficients(scheduler, timestep)
    eps = predict_noise(c, model_output, sample, scheduler.config.prediction_type)
    mean = _direct_mean(c, eps, sample)
    x0 = _clipped_x0(scheduler, c, model_output, sample)
    return ddpm_output(add_noise(scheduler, mean, model_output, timestep, generator, c), x0, return_dict)


@register_variant("direct-clip-consistent", builtin=True)
def direct_clip_consistent_step(scheduler, model_output, timestep, sample, generator=None, return_dict=True):
    """eq. (11) with ε re-derived from the clipped x̂_0 by inverting eq. (15): equal to the
    posterior route even when clipping fires (MATH.md, "The equivalence argument")."""
    check_supported(scheduler)
    c = coefficients(scheduler, timestep)
    x0 = _clipped_x0(scheduler, c, model_output, sample)
    mean = _direct_mean(c, eps_by_eq15(c.alpha_prod_t, x0, sample), sample)
    return ddpm_output(add_noise(scheduler, mean, model_output, timestep, generator, c), x0, return_dict)


@register_variant("direct-article", builtin=True)
def direct_article_step(scheduler, model_output, timestep, sample, generator=None, return_dict=True):
    """The article's edit verbatim: eq. (11) with `scheduler.betas[t]` and `scheduler.alphas[t]`.
    Equal to "direct" at 1000 steps; wrong for strided schedules (num_inference_steps < T)."""
    check_supported(scheduler)
    c = coefficients(scheduler, timestep)
    t = timestep
    x0 = _clipped_x0(scheduler, c, model_output, sample)
    eps = predict_noise(c, model_output, sample, scheduler.config.prediction_type)
    mean = (sample - eps * scheduler.betas[t] / (1 - scheduler.alphas_cumprod[t]) ** 0.5) / scheduler.alphas[t] ** 0.5
    return ddpm_output(add_noise(scheduler, mean, model_output, timestep, generator, c), x0, return_dict)
