"""The variational bound of Ho et al. 2020, term by term, in float64 NumPy (MATH.md, "The variational
bound, term by term"), named as in the original TF code (hojonathanho/diffusion, `diffusion_utils_2.py`
and `utils.py`) and improved-diffusion (Nichol & Dhariwal 2021) for the learned variance:

    L = L_T + Σ_{t>1} L_{t−1} + L_0                                            eqs. (3)(5)
    L_T     = KL(q(x_T|x_0) ‖ N(0, I))                                          `prior_bpd`
    L_{t−1} = KL(q(x_{t−1}|x_t, x_0) ‖ p_θ(x_{t−1}|x_t))                         `normal_kl`, eqs. (6)(7)
    L_0     = −log p_θ(x_0|x_1), a Gaussian integrated over each pixel's bin    eq. (13)

all in bits per dimension (nats averaged over the C·H·W dimensions, / ln 2: TF `meanflat(...)/log(2)`).
Timesteps are 0-indexed like ppdiffusers' and the TF code's: `vb_terms_bpd` at t = 0 is L_0, at t > 0
it is the paper's L_{t} with t one higher (MATH.md, Notation). t is an int or one per sample.

The normal CDF of eq. (13): `cdf="exact"` is Φ(z) = ½ erfc(−z/√2) (the definition; what ppddpm's
paddle code computes, `ppddpm.core.bound`); `cdf="tanh"` is the TF code's approximation
½(1 + tanh(√(2/π)(z + 0.044715 z³))), whose error is up to 1.6e-4 in Φ and grows relative to Φ in the
tails. Probabilities are floored at 1e-12 before the log, as the TF code does.

numpy and the standard library only: the truth ppddpm's float32 paddle code is held against.
"""
from __future__ import annotations

import math

import numpy as np

from .base import x0_from_prediction
from .ddpm import Schedule, _per_sample

FLOOR = 1e-12          # the TF code's floor on a bin's probability before the log
VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")


def meanflat_bits(x) -> np.ndarray:
    """Nats per element [B, …] → bits per dimension [B] (TF `nn.meanflat(x) / np.log(2.)`)."""
    x = np.asarray(x, np.float64)
    return x.reshape(x.shape[0], -1).mean(axis=1) / math.log(2.0)


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(μ₁, σ₁²) ‖ N(μ₂, σ₂²)) per element, in nats (TF `normal_kl`):
    ½(−1 + log σ₂² − log σ₁² + σ₁²/σ₂² + (μ₁ − μ₂)²/σ₂²)."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + np.exp(logvar1 - logvar2)
                  + (np.asarray(mean1, np.float64) - mean2) ** 2 * np.exp(-logvar2))


_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def standard_normal_cdf(x):
    """Φ(x) = ½ erfc(−x/√2), exact to float64 in both tails."""
    return 0.5 * _erfc(-np.asarray(x, np.float64) / math.sqrt(2.0))


def approx_standard_normal_cdf(x):
    """The TF code's `approx_standard_normal_cdf`: ½(1 + tanh(√(2/π)(x + 0.044715 x³)))."""
    x = np.asarray(x, np.float64)
    return 0.5 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, means, log_scales, levels: int = 256, cdf: str = "exact"):
    """log P(x) per element for data on `levels` evenly spaced values in [−1, 1] (eq. 13; TF
    `discretized_gaussian_log_likelihood`, which hard-codes 256 levels): the Gaussian N(mean, e^{2·log_scale})
    integrated over x's bin [x − δ, x + δ], δ = 1/(levels − 1), the lowest bin open to −∞ and the highest
    to +∞. `cdf`: "exact" or the TF code's "tanh" approximation (module docstring)."""
    phi = {"exact": standard_normal_cdf, "tanh": approx_standard_normal_cdf}[cdf]
    x = np.asarray(x, np.float64)
    half = 1.0 / (levels - 1)
    centered, inv_std = x - means, np.exp(-np.asarray(log_scales, np.float64))
    cdf_plus, cdf_min = phi(inv_std * (centered + half)), phi(inv_std * (centered - half))
    log_cdf_plus = np.log(np.maximum(cdf_plus, FLOOR))
    log_one_minus_cdf_min = np.log(np.maximum(1.0 - cdf_min, FLOOR))
    log_delta = np.log(np.maximum(cdf_plus - cdf_min, FLOOR))
    return np.where(x < -1.0 + half, log_cdf_plus, np.where(x > 1.0 - half, log_one_minus_cdf_min, log_delta))


def posterior_variance(s: Schedule) -> np.ndarray:
    """β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) · β_t for every t (eq. 7), with ᾱ_{−1} = 1 (so β̃_0 = 0)."""
    prev = np.append(1.0, s.alphas_cumprod[:-1])
    return s.betas * (1.0 - prev) / (1.0 - s.alphas_cumprod)


def posterior_log_variance_clipped(s: Schedule) -> np.ndarray:
    """log β̃_t with the t = 0 entry (log 0) replaced by log β̃_1 (TF `posterior_log_variance_clipped`)."""
    v = posterior_variance(s)
    return np.log(np.append(v[1], v[1:]))


def model_log_variance(s: Schedule, t, variance_type: str, model_var_values=None, ndim: int = 4):
    """log σ_t² of p_θ(x_{t−1}|x_t), broadcastable against x_t:
    "fixed_small": log β̃_t, clipped at t = 0 (TF "fixedsmall");
    "fixed_large": log β_t with the t = 0 entry replaced by log β̃_1 (TF "fixedlarge");
    "learned_range": v·log β_t + (1 − v)·log β̃_t (clipped), v = (output + 1)/2 from the model's extra
    channels (improved DDPM, eq. 15; improved-diffusion `LEARNED_RANGE`)."""
    clipped = posterior_log_variance_clipped(s)
    if variance_type == "fixed_small":
        return _per_sample(clipped, t, ndim)
    if variance_type == "fixed_large":
        return _per_sample(np.log(np.append(posterior_variance(s)[1], s.betas[1:])), t, ndim)
    if variance_type == "learned_range":
        frac = (np.asarray(model_var_values, np.float64) + 1.0) / 2.0
        return frac * _per_sample(np.log(s.betas), t, ndim) + (1.0 - frac) * _per_sample(clipped, t, ndim)
    raise NotImplementedError(f"variance_type={variance_type!r} is not covered ({', '.join(VARIANCE_TYPES)})")


def q_posterior(s: Schedule, x_start, x_t, t):
    """eqs. (6)(7), per sample t: (μ̃_t(x_0, x_t), log β̃_t clipped), TF `q_posterior_mean_variance`."""
    ab = np.asarray(s.alphas_cumprod)
    prev = np.append(1.0, ab[:-1])
    c_x0 = np.sqrt(prev) * s.betas / (1.0 - ab)
    c_xt = np.sqrt(s.alphas) * (1.0 - prev) / (1.0 - ab)
    nd = np.ndim(x_t)
    mean = _per_sample(c_x0, t, nd) * x_start + _per_sample(c_xt, t, nd) * x_t
    return mean, _per_sample(posterior_log_variance_clipped(s), t, nd)


def p_mean_variance(s: Schedule, model_output, x_t, t, prediction_type="epsilon", variance_type="fixed_small",
                    clip_denoised=True):
    """p_θ(x_{t−1}|x_t) = N(μ_θ, σ_t²) (TF `p_mean_variance`): the model output split into its prediction
    and, for "learned_range", its variance channels; x̂_0 from the prediction (eq. 15, or the sample / v
    forms), clipped to [−1, 1] if `clip_denoised`, then μ_θ = μ̃_t(x̂_0, x_t) by eq. (7).
    Returns (mean, log variance, x̂_0)."""
    out = np.asarray(model_output, np.float64)
    var_values = None
    if variance_type == "learned_range":
        out, var_values = np.split(out, 2, axis=1)
    ab = _per_sample(s.alphas_cumprod, t, np.ndim(x_t))
    x0 = x0_from_prediction(prediction_type, out, np.asarray(x_t, np.float64), np.sqrt(ab), np.sqrt(1.0 - ab))
    if clip_denoised:
        x0 = np.clip(x0, -1.0, 1.0)
    mean, _ = q_posterior(s, x0, x_t, t)
    return mean, model_log_variance(s, t, variance_type, var_values, np.ndim(x_t)), x0


def vb_terms_bpd(s: Schedule, model_output, x_start, x_t, t, prediction_type="epsilon", variance_type="fixed_small",
                 clip_denoised=True, levels=256, cdf="exact"):
    """TF `_vb_terms_bpd`: per sample, KL(q(x_{t−1}|x_t,x_0) ‖ p_θ(x_{t−1}|x_t)) in bits/dim where t > 0 and
    the decoder's −log p_θ(x_0|x_1) (eq. 13, `levels` bins) where t = 0. Returns (bits/dim [B], x̂_0)."""
    t = np.broadcast_to(np.asarray(t), (np.shape(x_start)[0],))
    true_mean, true_logvar = q_posterior(s, x_start, x_t, t)
    mean, logvar, x0 = p_mean_variance(s, model_output, x_t, t, prediction_type, variance_type, clip_denoised)
    kl = meanflat_bits(normal_kl(true_mean, true_logvar, mean, logvar))
    nll = -meanflat_bits(discretized_gaussian_log_likelihood(x_start, mean, 0.5 * logvar, levels, cdf))
    return np.where(t == 0, nll, kl), x0


def prior_bpd(s: Schedule, x_start):
    """L_T = KL(q(x_T|x_0) ‖ N(0, I)) in bits/dim [B] (TF `_prior_bpd`): q(x_T|x_0) = N(√ᾱ_T x_0, 1 − ᾱ_T)."""
    ab = s.alphas_cumprod[-1]
    x = np.asarray(x_start, np.float64)
    return meanflat_bits(normal_kl(math.sqrt(ab) * x, math.log(1.0 - ab), 0.0, 0.0))


def eq12_weight(s: Schedule, variance_type: str = "fixed_small") -> np.ndarray:
    """eq. (12)'s weight per t, in nats per dimension per unit of ‖ε − ε_θ‖²/D: β_t²/(2σ_t²α_t(1−ᾱ_t)),
    σ_t² as `model_log_variance` fixes it; the weight L_simple (eq. 14) drops. NaN at t = 0 (L_0 is eq. 13)."""
    sigma2 = np.exp(model_log_variance(s, np.arange(s.num_timesteps), variance_type, ndim=1))
    w = s.betas ** 2 / (2.0 * sigma2 * s.alphas * (1.0 - s.alphas_cumprod))
    w[0] = np.nan
    return w


def eq12_constant(s: Schedule, variance_type: str = "fixed_small") -> np.ndarray:
    """The constant C of eq. (12) per t, nats per dimension: the KL of the two variances,
    ½(−1 + log σ_t² − log β̃_t + β̃_t/σ_t²) (0 for "fixed_small"). NaN at t = 0."""
    logvar = model_log_variance(s, np.arange(s.num_timesteps), variance_type, ndim=1)
    true = posterior_log_variance_clipped(s)
    c = 0.5 * (-1.0 + logvar - true + np.exp(true - logvar))
    c[0] = np.nan
    return c
