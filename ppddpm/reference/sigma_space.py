"""The σ-parameterisation grid shared by the two-call σ-space references (KDPM2, DPM-Solver-SDE).

Karras et al. 2022 (Table 1, "VP") integrate x = x_t/√ᾱ_t in σ = √((1−ᾱ)/ᾱ); the model sees
x_t = x/√(σ²+1) (`c_in`), and x̂_0 is read off the model output in that space:
    ε:  x̂_0 = x − σ ε                         (Ho et al. eq. 15 divided through by √ᾱ)
    v:  x̂_0 = x/(σ²+1) − σ/√(σ²+1) · v        (Salimans & Ho 2022 §4, v = α ε − σ_t x_0, in σ-space)

Conventions that are no paper's, written from their meaning:
- the grid visits the n timesteps of `spaced_timesteps` (Lin et al. 2023, Table 2), the
  "linspace" one unrounded, and σ there is the linear interpolation in t of the training table
  (`schedules.sigma_at`, k-diffusion's discrete-model convention); after the last one σ = 0;
- a σ that is not on the grid (a midpoint) is evaluated by the model at the fractional timestep
  whose log σ interpolates linearly between the two neighbouring training timesteps
  (k-diffusion's `sigma_to_t`: the inverse of the interpolation, done in log σ);
- x_T = init_noise_sigma · z with init_noise_sigma = σ_0 for "linspace"/"trailing" and
  √(σ_0² + 1) for "leading" (the std of x_t/√ᾱ when x_t itself is unit-variance noise at a
  timestep that is not the top of the table; MATH.md, "σ-space").
"""
from __future__ import annotations

import numpy as np

from .base import SamplerReference, as64
from .schedules import sigma_at, sigmas_from_alphas_cumprod, spaced_timesteps


def ancestral_split(sigma_from: float, sigma_to: float):
    """Karras et al. 2022's ancestral step (MATH.md): σ_up = min(σ_to, √(σ_to² (σ_from² − σ_to²)/σ_from²)),
    σ_down = √(σ_to² − σ_up²): deterministic to σ_down, then σ_up·z reaches σ_to's noise level."""
    if sigma_to == 0.0:
        return 0.0, 0.0
    up = min(sigma_to, np.sqrt(sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2))
    return float(up), float(np.sqrt(sigma_to ** 2 - up ** 2))


def log_midpoint(a: float, b: float) -> float:
    """The σ halfway between a and b in log σ (0 when b is 0: the last step has no midpoint)."""
    return float(np.exp((np.log(a) + np.log(b)) / 2)) if b > 0 else 0.0


class SigmaSpaceReference(SamplerReference):
    """A σ-space sampler: grid, init_noise_sigma, model input and x̂_0 as in the module docstring.
    Subclasses fill `self.call_sigmas` (the σ each call evaluates the model at) in `setup`."""

    SUPPORTED = {"timestep_spacing": ("linspace", "leading", "trailing"), "use_karras_sigmas": (False, None),
                 "prediction_type": ("epsilon", "v_prediction")}

    def setup_grid(self) -> None:
        cfg = self.config
        self.train_sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod)
        self.grid_timesteps = spaced_timesteps(self.num_train_timesteps, self.num_inference_steps,
                                               cfg["timestep_spacing"], cfg["steps_offset"], round_linspace=False)
        self.sigmas = np.append(sigma_at(self.grid_timesteps, self.train_sigmas), 0.0)
        first = self.sigmas[0]
        self.init_noise_sigma = float(first if cfg["timestep_spacing"] in ("linspace", "trailing")
                                      else np.sqrt(first ** 2 + 1))

    def t_of_sigma(self, sigma: float) -> float:
        """The fractional timestep whose σ interpolates in log σ between its training neighbours."""
        log_sigmas = np.log(self.train_sigmas)        # increasing in t
        return float(np.interp(np.log(sigma), log_sigmas, np.arange(len(log_sigmas), dtype=np.float64)))

    def scale_model_input(self, i: int, x):
        return as64(x) / np.sqrt(self.call_sigmas[i] ** 2 + 1)

    def x0_of(self, i: int, model_output, sample):
        sigma, out, x = self.call_sigmas[i], as64(model_output), as64(sample)
        if self.config["prediction_type"] == "epsilon":
            return x - sigma * out
        return x / (sigma ** 2 + 1) - sigma / np.sqrt(sigma ** 2 + 1) * out
