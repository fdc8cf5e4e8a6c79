"""DDIM (Song, Meng, Ermon, "Denoising Diffusion Implicit Models", ICLR 2021) as a sampler reference.

Call i steps τ_i → τ_{i+1} of the sub-sequence (§4.2), with ᾱ past the end = 1 or, when
`set_alpha_to_one=False`, ᾱ_0 (a Stable Diffusion convention: the last step then lands on
timestep 0's noise level, ppdiffusers' docstring of `set_alpha_to_one`):
    x̂_0 = (x_t − √(1−ᾱ_t) ε_θ)/√ᾱ_t                              eq. (12)'s "predicted x_0" (Ho eq. 15)
    σ_t(η) = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev)            eq. (16)
    x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ_t²) ε + σ_t z          eq. (12)
x̂_0 may be clipped or thresholded; the ε of the "direction pointing to x_t" is the model's
(`use_clipped_model_output=False`) or re-derived from the clipped x̂_0 by inverting eq. (15)
(`use_clipped_model_output=True`). For the "sample" and "v_prediction" parameterisations ε is
what eq. (15) pairs with the model's x̂_0 (before clipping).
"""
from __future__ import annotations

import numpy as np

from .base import RefStep, VPReference, as64, eps_from_x0
from .ddpm import ddim_sigma, ddim_update


class DDIMReference(VPReference):
    family, multistep = "ddim", False
    DEFAULTS = {"clip_sample": True, "set_alpha_to_one": True, "steps_offset": 0, "prediction_type": "epsilon",
                "thresholding": False, "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0,
                "sample_max_value": 1.0, "timestep_spacing": "leading"}
    STEP_KWARGS = {"eta": 0.0, "use_clipped_model_output": False}
    SUPPORTED = {"timestep_spacing": ("linspace", "leading", "trailing")}

    def setup(self) -> None:
        self.setup_grid()
        self.stochastic = self.step_kwargs["eta"] > 0

    def step(self, i: int, model_output, sample, noise=None) -> RefStep:
        t, prev = self.timesteps[i], self.prev_timesteps[i]
        x, ab_t, ab_prev = as64(sample), self.alpha_bar(t), self.alpha_bar(prev)
        x0_raw = self.x0_raw(model_output, x, t)
        eps = as64(model_output) if self.config["prediction_type"] == "epsilon" else \
            eps_from_x0(x0_raw, x, np.sqrt(ab_t), np.sqrt(1.0 - ab_t))
        x0 = self.clip_x0(x0_raw)
        if self.step_kwargs["use_clipped_model_output"]:
            eps = eps_from_x0(x0, x, np.sqrt(ab_t), np.sqrt(1.0 - ab_t))
        sigma = float(ddim_sigma(ab_t, ab_prev, self.step_kwargs["eta"]))
        z = self._noise(noise, 1.0, x.shape) if sigma > 0 else 0.0
        return RefStep(ddim_update(x0, eps, ab_prev, sigma, z), x0, x0_raw, sigma)
