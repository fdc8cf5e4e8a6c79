"""The formulas of a DDPM / DDIM step that ppddpm computes in more than one place, written once.

Two kinds of code use them: the adapters (`ppddpm.core.adapters`), which say what x̂_0 and σ_t a
recorded step had, and the step variants (`ppddpm.variants`), which compute a step. Equation
numbers are the DDPM paper's (Ho et al. 2020) unless said otherwise, as restated in MATH.md.

Precision: every function takes the scheduler's own float32 tensors and does ppdiffusers' own
operations in ppdiffusers' order, so a value computed here is bitwise the one the stock step
computes (`tests/test_variants.py`: "posterior" is bitwise `DDPMScheduler.step`). The float64
truth lives in `ppddpm.reference`.
"""
from __future__ import annotations

from typing import Optional

from ppddpm.errors import BadValue
from ppddpm.storage.format import timestep_value

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
CLIPPINGS = ("thresholding", "clip_sample")      # the config switches that change x̂_0, in the order a step reads them


# --------------------------------------------------------------------------- x̂_0 and ε

def x0_by_eq15(alpha_prod_t, model_output, sample, prediction_type="epsilon"):
    """x̂_0 before any clipping. eq. (15): x̂_0 = (x_t − √(1−ᾱ_t) ε_θ) / √ᾱ_t (TF `predict_start_from_noise`).

    The other prediction types as ppdiffusers: "sample" predicts x_0 itself, "v_prediction"
    gives x̂_0 = √ᾱ_t x_t − √(1−ᾱ_t) v (Salimans & Ho 2022, §4).
    """
    beta_prod_t = 1 - alpha_prod_t
    if prediction_type == "epsilon":
        return (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
    if prediction_type == "sample":
        return model_output
    if prediction_type == "v_prediction":
        return (alpha_prod_t ** 0.5) * sample - (beta_prod_t ** 0.5) * model_output
    raise BadValue(f"prediction_type={prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")


def eps_by_eq15(alpha_prod_t, x0, sample):
    """eq. (15) solved for ε: ε = (x_t − √ᾱ_t x̂_0) / √(1−ᾱ_t), the noise that x̂_0 implies at x_t."""
    return (sample - alpha_prod_t ** (0.5) * x0) / (1 - alpha_prod_t) ** (0.5)


def x0_by_sigma(sigma, model_output, sample, prediction_type="epsilon"):
    """x̂_0 in the σ-parameterisation of the Euler-type schedulers: x − σ·ε (eq. 15 divided
    through by √ᾱ_t); v-prediction as ppdiffusers: v·(−σ/√(σ²+1)) + x/(σ²+1)."""
    if prediction_type == "epsilon":
        return sample - sigma * model_output
    if prediction_type == "v_prediction":
        return model_output * (-sigma / (sigma ** 2 + 1) ** 0.5) + (sample / (sigma ** 2 + 1))
    if prediction_type in ("sample", "original_sample"):
        return model_output
    raise BadValue(f"prediction_type={prediction_type!r} is not one of epsilon, v_prediction, sample")


# --------------------------------------------------------------------------- clipping x̂_0

def clipping_in_force(config, honoured=CLIPPINGS) -> Optional[str]:
    """Which clipping of x̂_0 a step with this config applies: "thresholding" (checked first, as
    ppdiffusers does), "clip_sample", or None; only among the switches its step `honoured`."""
    return next((name for name in CLIPPINGS if name in honoured and config.get(name, False)), None)


def threshold_scale(abs_x0, ratio: float, max_value: float):
    """Dynamic thresholding's s (Imagen, Saharia et al. 2022, §2.3), one per row of `abs_x0`
    ([batch, n] values of |x̂_0|): the `ratio` quantile of the row, clipped to [1, max_value]
    (s = max_value when max_value < 1, where those bounds cross). Shape [batch, 1]."""
    import paddle

    s = paddle.quantile(abs_x0, ratio, axis=1, keepdim=True)
    if max_value < 1:
        return paddle.ones_like(s) * max_value
    return paddle.clip(s, min=1, max=max_value)


def threshold(x0, ratio: float, max_value: float):
    """Dynamic thresholding, per sample for any batch size: x̂_0 clipped to [−s, s] and divided by
    s (`threshold_scale`). ppdiffusers 0.29's `_threshold_sample` passes the per-sample bounds to
    `paddle.clip`, which rejects tensors for batch > 1 (patches/fix-threshold-batch.diff); this
    computes the same values with min/max."""
    import paddle

    flat = x0.cast("float32").reshape([x0.shape[0], -1])
    s = threshold_scale(flat.abs(), ratio, max_value)
    flat = paddle.minimum(paddle.maximum(flat, -s), s) / s
    return flat.reshape(x0.shape).cast(x0.dtype)


def clip_x0(config, x0, honoured=CLIPPINGS):
    """x̂_0 as the step uses it (section 3 of `DDPMScheduler.step`, 4 of DDIM's): thresholded, or
    clipped to ±clip_sample_range, or as it is (`clipping_in_force`)."""
    clipping = clipping_in_force(config, honoured)
    if clipping == "thresholding":
        return threshold(x0, config.dynamic_thresholding_ratio, config.sample_max_value)
    if clipping == "clip_sample":
        bound = config.get("clip_sample_range", 1.0)
        return x0.clip(-bound, bound)
    return x0


def clip_fraction(config, unclipped, honoured=CLIPPINGS, groups: Optional[int] = None):
    """Share of x̂_0's values that `clip_x0` changes, measured on x̂_0 before it (`unclipped`; a 0-d
    float32 tensor, or 0.0 when no clipping is in force): |x̂_0| > s for thresholding, > clip_sample_range.
    `groups`: `unclipped` is that many batches of samples one after another ([groups·B, …]), and the
    share is of each ([groups] float32; groups = B: of each sample)."""
    clipping = clipping_in_force(config, honoured)
    if clipping == "thresholding":
        x = unclipped.cast("float32").abs().reshape([unclipped.shape[0], -1])
        s = threshold_scale(x, config.dynamic_thresholding_ratio, config.sample_max_value)
        outside = x > s
    elif clipping == "clip_sample":
        outside = unclipped.abs() > config.get("clip_sample_range", 1.0)
    else:
        return 0.0
    outside = outside.astype("float32")
    return outside.mean() if groups is None else outside.reshape([groups, -1]).mean(axis=1)


# --------------------------------------------------------------------------- σ_t and z

def ddpm_noise_std(scheduler, timestep, predicted_variance=None):
    """σ_t of `DDPMScheduler.step` (Algorithm 2, line 4), the std of the noise it adds, from the
    scheduler's `_get_variance`: σ_t² = β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) β_t (eq. 7, "fixed_small", kept
    ≥ 1e-20) or β_t ("fixed_large"), 0 at the last step. "fixed_small_log": ppdiffusers returns the
    std already; "learned_range": exp(½ v), per element, from the model's `predicted_variance`.
    Bitwise what the stock step multiplies z by: the same float32 operations on the same tables."""
    import paddle

    if timestep_value(timestep) <= 0:
        return 0.0
    variance = scheduler._get_variance(timestep, predicted_variance=predicted_variance)
    if scheduler.variance_type == "fixed_small_log":
        return variance
    if scheduler.variance_type == "learned_range":
        return paddle.exp(0.5 * variance)
    return variance ** 0.5


def ddim_previous_timestep(scheduler, timestep):
    """The timestep DDIM's step goes to: prev = t − T/n on its strided schedule (DDIM §4.2)."""
    return timestep - scheduler.config.num_train_timesteps // scheduler.num_inference_steps


def ddim_alphas(scheduler, timestep, prev_timestep):
    """(ᾱ_t, ᾱ_prev) of DDIM's step; past the end ᾱ_prev = `final_alpha_cumprod` (1, or ᾱ_0
    without `set_alpha_to_one`)."""
    alpha_prod_t = scheduler.alphas_cumprod[timestep]
    alpha_prod_t_prev = scheduler.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else scheduler.final_alpha_cumprod
    return alpha_prod_t, alpha_prod_t_prev


def ddim_variance(alpha_prod_t, alpha_prod_t_prev):
    """DDIM eq. (16) at η = 1: σ_t² = (1−ᾱ_prev)/(1−ᾱ_t) · (1 − ᾱ_t/ᾱ_prev) (= β̃_t of DDPM's eq. 7)."""
    return ((1 - alpha_prod_t_prev) / (1 - alpha_prod_t)) * (1 - alpha_prod_t / alpha_prod_t_prev)


def draw_noise(model_output, generator):
    """z ~ N(0, I), drawn exactly as the stock DDPM and DDIM steps draw it (one `randn_tensor` of
    the model output's shape and dtype), so that runs with one seed share z."""
    from ppdiffusers.utils.paddle_utils import randn_tensor

    return randn_tensor(model_output.shape, generator=generator, dtype=model_output.dtype)


# --------------------------------------------------------------------------- what a step returns

def step_output(family: str, prev_sample, pred_original_sample, return_dict: bool = True):
    """What the stock step of `family` ("ddpm" or "ddim") returns: `(prev_sample,)` without
    `return_dict`, else its output dataclass with `prev_sample` and `pred_original_sample`."""
    if not return_dict:
        return (prev_sample,)
    if family == "ddim":
        from ppdiffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput as Output
    else:
        from ppdiffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput as Output
    return Output(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
