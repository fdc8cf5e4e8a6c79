"""EDM Euler (Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based
Generative Models", NeurIPS 2022) with EDM's own noise levels and preconditioning.

    σ_i = (σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, σ_n = 0        eq. (5)
    c_in = 1/√(σ² + σ_d²), c_noise = ¼ ln σ, c_skip = σ_d²/(σ² + σ_d²),
    c_out = σ σ_d/√(σ² + σ_d²)                                                  Table 1 ("ours")
    D(x; σ) = c_skip x + c_out F_θ(c_in x; c_noise)                              eq. (7)
    x_{i+1} = x_i + (σ_{i+1} − σ_i) (x_i − D(x_i; σ_i))/σ_i                      Alg. 1, Euler (no 2nd order)
The model is called at c_noise(σ_i) with c_in(σ_i)·x_i. "v_prediction" negates c_out (a convention of
ppdiffusers' EDM schedulers, not in the paper). x_0 ~ N(0, σ_max² I) (Alg. 1, line 1): the reference's
init_noise_sigma is σ_max; ppdiffusers uses √(σ_max² + 1) (a VP habit), 7.8e-5 more at σ_max = 80.

Churn (Alg. 2, s_churn > 0) is not covered: Alg. 2 evaluates the model at the churned x̂ and σ̂,
while the scheduler's step churns after the model was called at (x_i, σ_i).
"""
from __future__ import annotations

import numpy as np

from .base import RefStep, SamplerReference, as64


class EDMEulerReference(SamplerReference):
    family, multistep, stochastic = "edm-euler", False, False
    DEFAULTS = {"sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5, "prediction_type": "epsilon", "rho": 7.0}
    STEP_KWARGS = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0}
    SUPPORTED = {"prediction_type": ("epsilon", "v_prediction")}

    def setup(self) -> None:
        if self.step_kwargs["s_churn"] != 0:
            raise NotImplementedError("edm-euler reference: s_churn > 0 is not covered (Alg. 2 calls the model at the "
                                      "churned x̂, σ̂; the scheduler's step churns after the model call)")
        cfg, n = self.config, self.num_inference_steps
        lo, hi, rho = cfg["sigma_min"] ** (1 / cfg["rho"]), cfg["sigma_max"] ** (1 / cfg["rho"]), cfg["rho"]
        ramp = np.linspace(0, 1, n) if n > 1 else np.zeros(1)
        self.sigmas = np.append((hi + ramp * (lo - hi)) ** rho, 0.0)
        self.timesteps = 0.25 * np.log(self.sigmas[:-1])
        self.stages = [""] * n
        self.init_noise_sigma = float(cfg["sigma_max"])

    def scale_model_input(self, i: int, x):
        return as64(x) / np.sqrt(self.sigmas[i] ** 2 + self.config["sigma_data"] ** 2)

    def step(self, i: int, model_output, sample, noise=None) -> RefStep:
        sigma, sd, x = self.sigmas[i], self.config["sigma_data"], as64(sample)
        c_out = sigma * sd / np.sqrt(sigma ** 2 + sd ** 2) * (1 if self.config["prediction_type"] == "epsilon" else -1)
        denoised = sd ** 2 / (sigma ** 2 + sd ** 2) * x + c_out * as64(model_output)
        prev = x + (self.sigmas[i + 1] - sigma) * (x - denoised) / sigma
        return RefStep(prev, denoised, denoised, 0.0)
