"""The grid and the quantities shared by the exponential-integrator solvers (DEIS, UniPC,
DPM-Solver singlestep): x_t = α_t x_0 + σ_t ε of the VP process, λ_t = log(α_t/σ_t) (Lu et al.
2022, "DPM-Solver", §3: the half log-SNR the solvers step in), ρ_t = σ_t/α_t (Zhang & Chen 2023's
ρ, the same number as the σ of the σ-parameterisation).

Grid (a convention, from its meaning: the solvers integrate from the first timestep down to the
data end t = 0 — Lu et al.'s ε — in n steps, so n + 1 grid points with both ends): the n timesteps
the model is called at are "linspace": n + 1 points evenly from T−1 to 0 rounded, without the last;
"leading": k·⌊T/(n+1)⌋ (+ steps_offset) for k = n..1; "trailing": Lin et al. 2023's Table 2 grid of n.
The step after the last one lands on t = 0 (σ of ᾱ_0, not 0).
"""
from __future__ import annotations

import math

import numpy as np

from .base import VPReference, as64, x0_from_prediction
from .schedules import alpha_sigma_from_sigma, sigma_at, sigmas_from_alphas_cumprod, solver_timesteps


def phi(k: int, h: float) -> float:
    """φ_k(h) of the exponential integrators: φ_0 = e^h, φ_{k+1}(h) = (φ_k(h) − 1/k!)/h
    (φ_1 = (e^h − 1)/h; Hochbruck & Ostermann 2010, used by Lu et al. 2022 and Zhao et al. 2023).
    For small |h| the recursion cancels; it is summed as its series there."""
    if abs(h) < 1e-2:
        return sum(h ** j / math.factorial(j + k) for j in range(12))
    value = math.exp(h)
    for j in range(k):
        value = (value - 1.0 / math.factorial(j)) / h
    return value


class ExponentialIntegratorReference(VPReference):
    """Grid, α/σ/λ tables (index i: the i-th timestep; index n: t = 0) and x̂_0 / ε conversions."""

    def setup_solver_grid(self, spacing: str, steps_offset: int = 0) -> None:
        n = self.num_inference_steps
        ts = solver_timesteps(self.num_train_timesteps, n, spacing, steps_offset)
        self.timesteps, self.stages = ts, [""] * n
        self.rho = np.append(sigma_at(ts, sigmas_from_alphas_cumprod(self.alphas_cumprod)),
                             sigmas_from_alphas_cumprod(self.alphas_cumprod[:1]))
        self.alpha, self.sigma_t = alpha_sigma_from_sigma(self.rho)
        self.lam = np.log(self.alpha) - np.log(self.sigma_t)
        self.init_noise_sigma = 1.0

    def data_prediction(self, i: int, model_output, sample):
        """x̂_0 at grid point i (eq. 15 for ε; v and sample as in base.x0_from_prediction)."""
        return x0_from_prediction(self.config["prediction_type"], as64(model_output), as64(sample),
                                  self.alpha[i], self.sigma_t[i])

    def noise_prediction(self, i: int, model_output, sample):
        """ε at grid point i from the model output (eq. 15 inverted for "sample"; v: α v + σ x_t)."""
        kind, out, x = self.config["prediction_type"], as64(model_output), as64(sample)
        if kind == "epsilon":
            return out
        if kind == "sample":
            return (x - self.alpha[i] * out) / self.sigma_t[i]
        return self.alpha[i] * out + self.sigma_t[i] * x
