"""DDIM's step (Song, Meng, Ermon 2020, arXiv 2010.02502) as variants, and the route it shares with DDPM.

- "ddim"          ppdiffusers' own `DDIMScheduler.step`, untouched; in `compare` it runs on a
                  DDIMScheduler made from the pipeline's config (`ppddpm.with_config`).
- "ddim-written"  eq. (12) and (16) written out with ppdiffusers' own float32 operations:
                  bitwise the stock step (as "posterior" is for DDPM), every phase numbered.

Both take the step's own arguments: `eta` (η of eq. 16), `use_clipped_model_output`,
`generator`, `variance_noise` — in a spec, `"ddim(eta=1.0, use_clipped_model_output=True)"`.
MATH.md, "DDIM": η = 1 gives σ_t² = β̃_t, and with ε re-derived from the clipped x̂_0
(`use_clipped_model_output=True`) the step is DDPM's posterior step (eq. 7) exactly.
"""
from __future__ import annotations

from ppddpm._moved import moved_names
from ppddpm.core.formulas import (clip_x0, ddim_alphas, ddim_previous_timestep, ddim_variance, draw_noise,
                                  eps_by_eq15, step_output, x0_by_eq15)
from ppddpm.variants.registry import register_variant
from ppddpm.variants.stock import stock_step

register_variant("ddim", families=("ddim",), scheduler="DDIMScheduler", builtin=True,
                 doc="ppdiffusers' own `DDIMScheduler.step`, untouched (eq. 12 with σ_t(η) of eq. 16).")(stock_step)


@register_variant("ddim-written", families=("ddim",), scheduler="DDIMScheduler", builtin=True)
def ddim_written_step(scheduler, model_output, timestep, sample, eta: float = 0.0,
                      use_clipped_model_output: bool = False, generator=None, variance_noise=None,
                      return_dict: bool = True):
    """DDIM written out: eq. (15) → clip/threshold → σ_t(η) by eq. (16) → eq. (12) → + σ_t z."""
    cfg = scheduler.config
    if scheduler.num_inference_steps is None:
        raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after creating "
                         "the scheduler")
    # 1. the previous timestep of the strided schedule: prev = t − T/n
    prev_timestep = ddim_previous_timestep(scheduler, timestep)
    # 2. ᾱ_t and ᾱ_prev; past the end ᾱ_prev = 1 (set_alpha_to_one) or ᾱ_0
    alpha_prod_t, alpha_prod_t_prev = ddim_alphas(scheduler, timestep, prev_timestep)
    # 3. x̂_0 by eq. (15) and the ε it implies ("sample": eq. 15 solved for ε; "v": Salimans & Ho)
    pred_original_sample = x0_by_eq15(alpha_prod_t, model_output, sample, cfg.prediction_type)
    if cfg.prediction_type == "epsilon":
        pred_epsilon = model_output
    elif cfg.prediction_type == "sample":
        pred_epsilon = eps_by_eq15(alpha_prod_t, pred_original_sample, sample)
    else:
        pred_epsilon = (alpha_prod_t ** 0.5) * model_output + ((1 - alpha_prod_t) ** 0.5) * sample
    # 4. clip x̂_0 to ±clip_sample_range, or threshold it (per sample, any batch)
    pred_original_sample = clip_x0(cfg, pred_original_sample)
    # 5. eq. (16): σ_t(η)² = η² · (1−ᾱ_prev)/(1−ᾱ_t) · (1 − ᾱ_t/ᾱ_prev)
    std_dev_t = eta * ddim_variance(alpha_prod_t, alpha_prod_t_prev) ** (0.5)
    # 6. use_clipped_model_output: ε re-derived from the clipped x̂_0 by inverting eq. (15)
    if use_clipped_model_output:
        pred_epsilon = eps_by_eq15(alpha_prod_t, pred_original_sample, sample)
    # 7. eq. (12): x_prev = √ᾱ_prev · x̂_0 + √(1 − ᾱ_prev − σ_t²) · ε
    pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t ** 2) ** (0.5) * pred_epsilon
    prev_sample = alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction
    # 8. + σ_t z: z is drawn (like the stock step, only when η > 0) or given as data
    if eta > 0:
        if variance_noise is not None and generator is not None:
            raise ValueError("Cannot pass both generator and variance_noise. Please make sure that either "
                             "`generator` or `variance_noise` stays `None`.")
        if variance_noise is None:
            variance_noise = draw_noise(model_output, generator)
        prev_sample = prev_sample + std_dev_t * variance_noise
    return step_output("ddim", prev_sample, pred_original_sample, return_dict)


# 0.3 names that live elsewhere now (ppddpm/_moved.py): answered with a DeprecationWarning
__getattr__ = moved_names(__name__)
