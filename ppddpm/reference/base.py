"""What every float64 sampler reference is: `SamplerReference` and the `RefStep` it returns.

A reference is built from a scheduler's config (keys as ppdiffusers names them) and a number
of inference steps; it derives its own β / ᾱ / σ tables and timestep grid (schedules.py), and
then replays the calls a sampler makes, one call index i at a time:

    ref = SomeReference(config, n, **step_kwargs)
    x = ref.init_noise_sigma * z
    for i in range(len(ref.timesteps)):
        eps = model(ref.scale_model_input(i, x), ref.timesteps[i])
        x = ref.step(i, eps, x, noise=z_i).prev_sample

Config keys a family does not read are ignored (a DDPM config carried over to Euler keeps
`clip_sample`, which Euler's step does not honour); keys it reads with a value it does not
cover raise NotImplementedError in one line. Step keyword arguments that change the formula
are declared per family (`STEP_KWARGS`); unknown ones raise ValueError.

Shared helpers: x̂_0 from the model output by prediction type (Ho et al. 2020 eq. 15; the
v-parameterisation of Salimans & Ho 2022, §4), and the clipping of x̂_0 (`clip_sample`, or Imagen's
dynamic thresholding, Saharia et al. 2022, §2.3).
"""
from __future__ import annotations

from collections import namedtuple
from typing import Mapping

import numpy as np

from .schedules import (BETA_DEFAULTS, alpha_sigma_from_sigma, alphas_cumprod_from_betas, betas_from_config, sigma_at,
                        sigmas_from_alphas_cumprod, spaced_timesteps)

RefStep = namedtuple("RefStep", "prev_sample pred_original_sample pred_original_sample_unclipped noise_std")

# Arguments a pipeline passes to `step` that do not change its formula.
NEUTRAL_STEP_KWARGS = ("generator", "return_dict")
CLIP_DEFAULTS = {"clip_sample": False, "clip_sample_range": 1.0, "thresholding": False,
                 "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0}


def x0_from_prediction(prediction_type: str, model_output, sample, alpha, sigma):
    """x̂_0 of the VP process x_t = α x_0 + σ ε (α = √ᾱ_t, σ = √(1−ᾱ_t)) from the model output:
    "epsilon": eq. (15) of Ho et al. 2020, (x_t − σ ε)/α;  "sample": the output is x̂_0;
    "v_prediction": v = α ε − σ x_0 (Salimans & Ho 2022, §4), so x̂_0 = α x_t − σ v."""
    if prediction_type == "epsilon":
        return (sample - sigma * model_output) / alpha
    if prediction_type == "sample":
        return np.asarray(model_output, np.float64)
    if prediction_type == "v_prediction":
        return alpha * sample - sigma * model_output
    raise NotImplementedError(f"prediction_type={prediction_type!r} is not covered (epsilon, sample, v_prediction)")


def eps_from_x0(x0, sample, alpha, sigma):
    """ε that eq. (15) pairs with x̂_0 at x_t: (x_t − α x̂_0)/σ."""
    return (sample - alpha * x0) / sigma


def dynamic_threshold(x0, ratio: float, sample_max_value: float):
    """Imagen's dynamic thresholding (Saharia et al. 2022, §2.3), per sample (axis 0):
    s = clip(quantile(|x̂_0|, ratio), 1, sample_max_value), x̂_0 ← clip(x̂_0, −s, s)/s.
    (With sample_max_value < 1 the clip's bounds cross; s is then sample_max_value.)"""
    x0 = np.asarray(x0, np.float64)
    flat = np.abs(x0.reshape(x0.shape[0], -1))
    s = np.minimum(np.maximum(np.quantile(flat, ratio, axis=1), 1.0), sample_max_value)
    s = s.reshape((-1,) + (1,) * (x0.ndim - 1))
    return np.clip(x0, -s, s) / s


class SamplerReference:
    """The interface every reference follows (see the module docstring):
    `timesteps`, `stages`, `init_noise_sigma`, `scale_model_input(i, x)`, `step(i, model_output,
    sample, noise) -> RefStep`; `multistep` when call i depends on earlier calls, `stochastic` when
    some call adds noise. Subclasses fill `setup` and `step`."""

    family: str = ""
    multistep: bool = False
    stochastic: bool = False
    DEFAULTS: dict = {}          # the ppdiffusers constructor defaults of the family's scheduler class
    STEP_KWARGS: dict = {}       # step arguments that change the formula, with their defaults
    SUPPORTED: dict = {}         # config key -> the values this reference covers

    def __init__(self, config: Mapping, num_inference_steps: int, **step_kwargs):
        given = dict(config or {})
        self.config = {**BETA_DEFAULTS, **self.DEFAULTS, **{k: v for k, v in given.items()
                                                            if k in self.DEFAULTS or k in BETA_DEFAULTS}}
        unknown = sorted(set(step_kwargs) - set(self.STEP_KWARGS) - set(NEUTRAL_STEP_KWARGS))
        if unknown:
            raise ValueError(f"{self.family} step takes no argument(s) {', '.join(unknown)}; it takes "
                             f"{', '.join(self.STEP_KWARGS) or 'none that change its formula'}")
        self.step_kwargs = {**self.STEP_KWARGS, **{k: v for k, v in step_kwargs.items() if k in self.STEP_KWARGS}}
        for key, values in self.SUPPORTED.items():
            if self.config.get(key) not in values:
                raise NotImplementedError(f"{self.family} reference: {key}={self.config.get(key)!r} is not covered "
                                          f"(covered: {', '.join(map(repr, values))})")
        self.betas = betas_from_config(dict(given, **self.config))      # given: rescale_betas_zero_snr too
        self.alphas_cumprod = alphas_cumprod_from_betas(self.betas)
        self.num_train_timesteps = len(self.betas)
        self.num_inference_steps = int(num_inference_steps)
        self.timesteps = np.zeros(0)
        self.stages: list = []
        self.init_noise_sigma = 1.0
        self.setup()
        self._next_call = 0

    def setup(self) -> None:
        """Fill timesteps, stages, init_noise_sigma and the family's tables."""
        raise NotImplementedError

    def scale_model_input(self, i: int, x):
        return np.asarray(x, np.float64)

    def step(self, i: int, model_output, sample, noise=None) -> RefStep:
        raise NotImplementedError

    # ---- shared pieces
    def _in_order(self, i: int) -> None:
        """Stateful references: calls must come as i = 0, 1, 2, ..."""
        if i != self._next_call:
            raise ValueError(f"{self.family} reference keeps history: expected call {self._next_call}, got {i} "
                             "(replay every call in order)")
        self._next_call += 1

    def clip_x0(self, x0):
        """x̂_0 as the step uses it: dynamic thresholding if `thresholding`, else clipping to
        ±clip_sample_range if `clip_sample` (ppdiffusers checks `thresholding` first), else unchanged."""
        cfg = {**CLIP_DEFAULTS, **self.config}
        if cfg["thresholding"]:
            return dynamic_threshold(x0, cfg["dynamic_thresholding_ratio"], cfg["sample_max_value"])
        if cfg["clip_sample"]:
            return np.clip(x0, -cfg["clip_sample_range"], cfg["clip_sample_range"])
        return x0

    @staticmethod
    def _noise(noise, std: float, shape) -> np.ndarray:
        """σ·z, z the recorded noise of this call; a call that adds noise needs it."""
        if std == 0.0:
            return np.zeros(shape)
        if noise is None:
            raise ValueError("this call adds noise (std %.6g): pass the z it drew as noise=" % std)
        return std * np.asarray(noise, np.float64)

    def __repr__(self):
        return f"<float64 reference {self.family}, {self.num_inference_steps} steps>"


def as64(x) -> np.ndarray:
    return np.asarray(x, np.float64)


class VPReference(SamplerReference):
    """Samplers that step x_t of the variance-preserving process itself (DDPM, DDIM, PNDM): x_T = z
    (init_noise_sigma 1), the model sees x_t unscaled, and a step t → prev goes along the grid of
    `spaced_timesteps` (the DDIM paper's sub-sequence τ, Song et al. 2021 §4.2: call i steps from
    τ_i to the next timestep visited, τ_{i+1} in call order; past the last one ᾱ_prev is 1, or ᾱ_0
    when the config says set_alpha_to_one=False)."""

    def setup_grid(self) -> None:
        cfg = self.config
        self.timesteps = spaced_timesteps(self.num_train_timesteps, self.num_inference_steps,
                                          cfg.get("timestep_spacing", "leading"), cfg.get("steps_offset", 0))
        self.prev_timesteps = np.append(self.timesteps[1:], -1.0)
        self.final_alpha_bar = 1.0 if cfg.get("set_alpha_to_one", True) else float(self.alphas_cumprod[0])
        self.stages = [""] * len(self.timesteps)

    def alpha_bar(self, t) -> float:
        """ᾱ_t of the (integer) timestep t; the final value past the start of the chain (t < 0)."""
        return float(self.alphas_cumprod[int(t)]) if t >= 0 else self.final_alpha_bar

    def x0_raw(self, model_output, sample, t):
        ab = self.alpha_bar(t)
        return x0_from_prediction(self.config["prediction_type"], as64(model_output), as64(sample),
                                  np.sqrt(ab), np.sqrt(1.0 - ab))


class SigmaReference(SamplerReference):
    """Samplers that integrate in the σ-parameterisation of Karras et al. 2022 (Table 1, VP):
    x = x_t/√ᾱ_t with noise level σ = √((1−ᾱ)/ᾱ); the model sees c_in·x = x/√(σ²+1) (= x_t, the input
    it was trained on); D(x; σ) = x̂_0 is the same guess as eq. (15), written in this space.

    The σ grid (`setup_sigma_grid`): σ_i = σ at the grid's timesteps (`spaced_timesteps`, "linspace"
    not rounded; σ interpolated linearly in t between training timesteps, `sigma_at`), then σ_N = 0
    (Karras et al. 2022, Alg. 1: the last step goes to t_N = 0, the clean sample).
    x_T: Karras et al.'s Alg. 1, line 1, draws x_0 ~ N(0, σ_0² I) — ppdiffusers does so for the
    "linspace"/"trailing" grids; for "leading" it uses √(σ_0² + 1), the std of x_t/√ᾱ_t when x_t is the
    VP prior N(0, I) at t_0 (x_t/√ᾱ_t = x_0 + σ ε has variance 1 + σ² for unit-variance data).
    Both are conventions of ppdiffusers' Euler-type schedulers (Stable Diffusion's k-diffusion use)."""

    def setup_sigma_grid(self) -> None:
        cfg = self.config
        for key in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"):
            if cfg.get(key):
                raise NotImplementedError(f"{self.family} reference: {key}=True (a σ grid by a formula instead of the "
                                          "training σ at the spaced timesteps) is not covered")
        if cfg.get("interpolation_type", "linear") != "linear":
            raise NotImplementedError(f"{self.family} reference: interpolation_type={cfg['interpolation_type']!r} is "
                                      "not covered (linear)")
        spacing = cfg.get("timestep_spacing", "linspace")
        self.grid = spaced_timesteps(self.num_train_timesteps, self.num_inference_steps, spacing,
                                     cfg.get("steps_offset", 0), round_linspace=False)
        self.train_sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod)
        self.sigmas = np.append(sigma_at(self.grid, self.train_sigmas), 0.0)
        self.init_noise_sigma = float(self.sigmas[0] if spacing in ("linspace", "trailing")
                                      else np.sqrt(self.sigmas[0] ** 2 + 1.0))

    def model_sigma(self, i: int) -> float:
        """σ at which the model is evaluated at call i (one call per grid point unless overridden)."""
        return float(self.sigmas[i])

    def scale_model_input(self, i: int, x):
        """c_in(σ) · x = x/√(σ² + 1) (Karras et al. 2022, Table 1, VP column's c_in)."""
        return as64(x) / np.sqrt(self.model_sigma(i) ** 2 + 1.0)

    def denoise(self, model_output, x, sigma: float):
        """D(x; σ) = x̂_0 in σ-space: with α = 1/√(σ²+1), x_t = α x, eq. (15) (or the v / sample form)."""
        alpha, s = alpha_sigma_from_sigma(sigma)
        return x0_from_prediction(self.config.get("prediction_type", "epsilon"), as64(model_output), alpha * as64(x),
                                  alpha, s)
