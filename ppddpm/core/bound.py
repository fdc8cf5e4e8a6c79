"""The variational bound's terms as paddle ops, for any DDPM-like scheduler (MATH.md, "The variational
bound, term by term"): what `ppddpm.likelihood` evaluates and what `ppddpm train --loss vlb|hybrid`
differentiates, written once. Names are the TF code's (`q_sample`, `q_posterior_mean_variance`,
`p_mean_variance`, `normal_kl`, `discretized_gaussian_log_likelihood`, `_vb_terms_bpd`, `_prior_bpd`).

Tables: as the TF code builds them, in float64 from the scheduler's β_t (ppdiffusers' float32 values,
read back), then float32 tensors; t is 0-based (ppdiffusers' and the TF code's). The model follows the
scheduler's config: `prediction_type` epsilon / sample / v_prediction, `variance_type` fixed_small
(log β̃_t clipped at t = 0), fixed_large (log β_t, its t = 0 entry log β̃_1) or learned_range (improved
DDPM: the UNet's extra channels interpolate between log β̃_t and log β_t).

Precision: the KL terms are float32; the decoder term L_0 (eq. 13) is computed in float64, with the exact
normal CDF (`paddle.erf`), because in float32 a bin's probability Φ(b) − Φ(a) cancels to 0 once both ends
are ~5σ into the upper tail; the TF code's 1e-12 floor on the probability is kept. The float64 reference
of every formula here is `ppddpm.reference.bound` (written independently, numpy only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np

from ppddpm.core.formulas import PREDICTION_TYPES
from ppddpm.errors import Unsupported

VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")
FLOOR = 1e-12                  # the TF code's floor on a bin's probability before the log
LN2 = math.log(2.0)


@dataclass
class BoundTables:
    """A scheduler's tables for the bound: float64 numpy arrays [T] (`np_*`) and their float32 tensors."""
    prediction_type: str
    variance_type: str
    betas: np.ndarray
    alphas_cumprod: np.ndarray
    posterior_variance: np.ndarray             # β̃_t, 0 at t = 0
    posterior_log_variance_clipped: np.ndarray
    tensors: dict

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    def model_log_variance_fixed(self) -> np.ndarray:
        """log σ_t² of the fixed variance types [T] (fixed_large: log β_t with t = 0 → log β̃_1)."""
        if self.variance_type == "fixed_large":
            return np.log(np.append(self.posterior_variance[1], self.betas[1:]))
        return self.posterior_log_variance_clipped


def ddpm_like(scheduler) -> dict:
    """The scheduler's config if it defines a DDPM reverse process the bound is written for (β_t,
    ᾱ_t, a covered variance_type and prediction_type, T ≥ 2); else one line saying what is covered."""
    config = getattr(scheduler, "config", {}) or {}
    name = type(scheduler).__name__
    if getattr(scheduler, "betas", None) is None or getattr(scheduler, "alphas_cumprod", None) is None \
            or "variance_type" not in config:
        raise Unsupported(f"the bound needs a DDPM-like scheduler (β_t, ᾱ_t and a variance_type that defines "
                          f"p_θ(x_(t-1)|x_t)); this is a {name}")
    if config["variance_type"] not in VARIANCE_TYPES:
        raise Unsupported(f"the bound covers variance_type {', '.join(VARIANCE_TYPES)}; this {name} has "
                          f"{config['variance_type']!r}")
    if config.get("prediction_type", "epsilon") not in PREDICTION_TYPES:
        raise Unsupported(f"the bound covers prediction_type {', '.join(PREDICTION_TYPES)}; this {name} has "
                          f"{config.get('prediction_type')!r}")
    if len(scheduler.betas) < 2:
        raise Unsupported(f"the bound needs T ≥ 2 training timesteps; this {name} has {len(scheduler.betas)}")
    return config


def bound_tables(scheduler) -> BoundTables:
    """The tables of eqs. (4), (7) and the model's variances, float64 from the scheduler's β_t
    (`ddpm_like` checks the scheduler first)."""
    import paddle

    config = ddpm_like(scheduler)
    betas = np.asarray(scheduler.betas.numpy(), np.float64)
    alphas_cumprod = np.cumprod(1.0 - betas)                                  # ᾱ_t = ∏ (1 − β_s)
    prev = np.append(1.0, alphas_cumprod[:-1])                                # ᾱ_{t−1}, 1 before t = 0
    post_var = betas * (1.0 - prev) / (1.0 - alphas_cumprod)                  # β̃_t, eq. (7)
    post_logvar = np.log(np.append(post_var[1], post_var[1:]))
    tables = {"sqrt_alphas_cumprod": np.sqrt(alphas_cumprod), "sqrt_one_minus_alphas_cumprod":
              np.sqrt(1.0 - alphas_cumprod), "posterior_mean_coef1": np.sqrt(prev) * betas / (1.0 - alphas_cumprod),
              "posterior_mean_coef2": np.sqrt(1.0 - betas) * (1.0 - prev) / (1.0 - alphas_cumprod),
              "posterior_log_variance_clipped": post_logvar, "log_betas": np.log(betas)}
    out = BoundTables(config.get("prediction_type", "epsilon"), config["variance_type"], betas, alphas_cumprod,
                      post_var, post_logvar, {})
    tables["model_log_variance"] = out.model_log_variance_fixed()
    out.tensors = {k: paddle.to_tensor(v.astype(np.float32)) for k, v in tables.items()}
    return out


def _at(tables: BoundTables, name: str, t, ndim: int = 4):
    """tables[name][t] per sample, shaped [B, 1, …] to broadcast against an image batch."""
    import paddle

    return paddle.gather(tables.tensors[name], t).reshape([-1] + [1] * (ndim - 1))


def per_sample_t(t_host, batch: int):
    """Per-sample 0-based timesteps: (int64 tensor [B], numpy [B]) from an int or [B] integers."""
    import paddle

    host = np.broadcast_to(np.asarray(t_host, np.int64), (batch,)).copy()
    return paddle.to_tensor(host), host


def q_sample(tables: BoundTables, x_start, t, noise):
    """eq. (4): x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (TF `q_sample`)."""
    return _at(tables, "sqrt_alphas_cumprod", t, x_start.ndim) * x_start + \
        _at(tables, "sqrt_one_minus_alphas_cumprod", t, x_start.ndim) * noise


def training_target(tables: BoundTables, x_start, noise, t):
    """What the model is trained to output by its prediction_type: ε, x_0, or v = √ᾱ_t ε − √(1−ᾱ_t) x_0
    (Salimans & Ho 2022, §4)."""
    if tables.prediction_type == "epsilon":
        return noise
    if tables.prediction_type == "sample":
        return x_start
    return _at(tables, "sqrt_alphas_cumprod", t, x_start.ndim) * noise - \
        _at(tables, "sqrt_one_minus_alphas_cumprod", t, x_start.ndim) * x_start


def split_output(tables: BoundTables, model_output, channels: int):
    """(prediction, variance channels or None): learned_range takes the second half of the UNet's output."""
    import paddle

    want = 2 * channels if tables.variance_type == "learned_range" else channels
    if model_output.shape[1] != want:
        raise Unsupported(f"variance_type {tables.variance_type} needs a UNet with {want} output channels for "
                          f"{channels}-channel images; this one has {model_output.shape[1]}")
    if tables.variance_type != "learned_range":
        return model_output, None
    return tuple(paddle.split(model_output, 2, axis=1))


def predict_start(tables: BoundTables, prediction, x_t, t):
    """x̂_0 from the prediction: eq. (15) for ε, the output itself for "sample", √ᾱ x_t − √(1−ᾱ) v for v."""
    a, s = _at(tables, "sqrt_alphas_cumprod", t, x_t.ndim), _at(tables, "sqrt_one_minus_alphas_cumprod", t, x_t.ndim)
    if tables.prediction_type == "epsilon":
        return (x_t - s * prediction) / a
    if tables.prediction_type == "sample":
        return prediction
    return a * x_t - s * prediction


def q_posterior(tables: BoundTables, x_start, x_t, t):
    """eqs. (6)(7): (μ̃_t(x_0, x_t), log β̃_t clipped) of q(x_{t−1}|x_t, x_0) (TF `q_posterior_mean_variance`)."""
    mean = _at(tables, "posterior_mean_coef1", t, x_t.ndim) * x_start + \
        _at(tables, "posterior_mean_coef2", t, x_t.ndim) * x_t
    return mean, _at(tables, "posterior_log_variance_clipped", t, x_t.ndim)


def p_mean_variance(tables: BoundTables, model_output, x_t, t, clip_denoised: bool = True):
    """p_θ(x_{t−1}|x_t) = N(μ_θ, σ_t²) (TF `p_mean_variance`): x̂_0 from the prediction, clipped to [−1, 1]
    if `clip_denoised`, μ_θ = μ̃_t(x̂_0, x_t); σ_t² by variance_type. Returns (mean, log variance, x̂_0)."""
    prediction, var_values = split_output(tables, model_output, x_t.shape[1])
    x0 = predict_start(tables, prediction, x_t, t)
    if clip_denoised:
        x0 = x0.clip(-1.0, 1.0)
    mean, _ = q_posterior(tables, x0, x_t, t)
    return mean, model_log_variance(tables, t, var_values, x_t.ndim), x0


def model_log_variance(tables: BoundTables, t, var_values=None, ndim: int = 4):
    """log σ_t²: the fixed table, or learned_range's v·log β_t + (1 − v)·log β̃_t (clipped), v = (out + 1)/2."""
    if tables.variance_type != "learned_range":
        return _at(tables, "model_log_variance", t, ndim)
    frac = (var_values + 1.0) / 2.0
    return frac * _at(tables, "log_betas", t, ndim) + (1.0 - frac) * _at(tables, "posterior_log_variance_clipped",
                                                                         t, ndim)


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL of two Gaussians per element, nats (TF `normal_kl`): ½(−1 + lv₂ − lv₁ + e^{lv₁−lv₂} + (μ₁−μ₂)² e^{−lv₂}),
    evaluated as ½((lv₂ − lv₁) + expm1(lv₁ − lv₂) + …): equal variances give exactly 0 for their part, where
    the TF order (−1 + lv₂) − lv₁ + e^… leaves float32 rounding of |lv| (~2e-7 nats a dimension at log σ² ≈ −4)."""
    import paddle

    return 0.5 * ((logvar2 - logvar1) + paddle.expm1(logvar1 - logvar2) + (mean1 - mean2) ** 2 * paddle.exp(-logvar2))


def discretized_gaussian_log_likelihood(x, means, log_scales, levels: int):
    """log P(x) per element, float64 (eq. 13, TF `discretized_gaussian_log_likelihood` for `levels` values):
    N(mean, e^{2·log_scale}) integrated over [x − δ, x + δ], δ = 1/(levels − 1), end bins open, exact CDF."""
    import paddle

    x, means, log_scales = (v.astype("float64") for v in (x, means, log_scales))
    half = 1.0 / (levels - 1)
    centered, inv_std = x - means, paddle.exp(-log_scales)
    cdf = lambda z: 0.5 * (1.0 + paddle.erf(z / math.sqrt(2.0)))     # noqa: E731  Φ, exact
    cdf_plus, cdf_min = cdf(inv_std * (centered + half)), cdf(inv_std * (centered - half))
    log_cdf_plus = paddle.log(paddle.clip(cdf_plus, min=FLOOR))
    log_one_minus_cdf_min = paddle.log(paddle.clip(1.0 - cdf_min, min=FLOOR))
    log_delta = paddle.log(paddle.clip(cdf_plus - cdf_min, min=FLOOR))
    return paddle.where(x < -1.0 + half, log_cdf_plus,
                        paddle.where(x > 1.0 - half, log_one_minus_cdf_min, log_delta))


def mean_bits(x):
    """Nats per element [B, …] → bits per dimension [B], float32 (TF `meanflat(x) / log(2)`)."""
    return x.reshape([x.shape[0], -1]).mean(axis=1).astype("float32") / LN2


def vb_terms_bpd(tables: BoundTables, model_output, x_start, x_t, t, t_host, clip_denoised: bool = True,
                 levels: int = 256, frozen_mean: bool = False):
    """TF `_vb_terms_bpd`: per sample, bits/dim of KL(q(x_{t−1}|x_t,x_0) ‖ p_θ(x_{t−1}|x_t)) where t > 0 and of
    the decoder NLL −log p_θ(x_0|x_1) where t = 0 (`t_host`: the same timesteps on the host, so a batch all at
    t > 0 skips the decoder). `frozen_mean`: the mean's gradient is stopped, only a learned variance trains
    (improved DDPM's L_vlb inside L_hybrid). Returns (bits/dim [B], x̂_0)."""
    import paddle

    if frozen_mean:
        prediction, var_values = split_output(tables, model_output, x_t.shape[1])
        model_output = paddle.concat([prediction.detach(), var_values], axis=1)
    mean, logvar, x0 = p_mean_variance(tables, model_output, x_t, t, clip_denoised)
    bits = None
    if (t_host > 0).any():
        true_mean, true_logvar = q_posterior(tables, x_start, x_t, t)
        bits = mean_bits(normal_kl(true_mean, true_logvar, mean, logvar))
    if (t_host == 0).any():
        nll = -mean_bits(discretized_gaussian_log_likelihood(x_start, mean, 0.5 * logvar, levels))
        bits = nll if bits is None else paddle.where(t == 0, nll, bits)
    return bits, x0


def prior_bpd(tables: BoundTables, x_start):
    """L_T = KL(q(x_T|x_0) ‖ N(0, I)), bits/dim [B] (TF `_prior_bpd`)."""
    import paddle

    last = tables.num_timesteps - 1
    mean = float(math.sqrt(tables.alphas_cumprod[last])) * x_start
    logvar = paddle.full_like(x_start, math.log(1.0 - tables.alphas_cumprod[last]))
    return mean_bits(normal_kl(mean, logvar, paddle.zeros_like(x_start), paddle.zeros_like(x_start)))
