"""Multistep DPM-Solver and DPM-Solver++ (Lu, Zhou, Bao, Chen, Li, Zhu: "DPM-Solver", NeurIPS 2022,
and "DPM-Solver++", arXiv 2211.01095) as a sampler reference, in float64.

Notation of the papers: x_t = α_t x_0 + σ_t ε with α_t = √ᾱ_t, σ_t = √(1−ᾱ_t), λ_t = log(α_t/σ_t);
h = λ_t − λ_s for the step s → t. The exact solution of the diffusion ODE is
    data prediction  (DPM-Solver++ eq. 9):  x_t = (σ_t/σ_s) x_s + σ_t ∫_{λ_s}^{λ_t} e^{λ} x_θ(λ) dλ,
    noise prediction (DPM-Solver eq. 3.4):  x_t = (α_t/α_s) x_s − α_t ∫_{λ_s}^{λ_t} e^{−λ} ε_θ(λ) dλ.
Multistep solvers of order k replace the model prediction by its Taylor expansion at λ_s with
derivatives estimated from the last k predictions (backward divided differences in λ):
    D0 = m_0,  r_0 = h_0/h,  D1 = (m_0 − m_1)/r_0  (≈ h·m'),
    order 3: D1_0 = (m_0 − m_1)/r_0, D1_1 = (m_1 − m_2)/r_1, D1 = D1_0 + r_0/(r_0 + r_1)(D1_0 − D1_1) (≈ h·m'),
             D2 = (D1_0 − D1_1)/(r_0 + r_1) (≈ h²·m''/2),
and integrate each term exactly (∫ e^{λ}(λ − λ_s)^k/k! dλ):
    x_t = (σ_t/σ_s) x_s + α_t (1 − e^{−h}) D0 + α_t (1 − (1 − e^{−h})/h) D1 + 2 α_t (1/2 − (h − 1 + e^{−h})/h²) D2
("heun"/Taylor form; the noise-prediction form is the same with e^{−h} → e^{h}, σ ↔ α and signs as
written in `_update`). `solver_type="midpoint"` at order 2 is DPM-Solver++ Algorithm 2 / DPM-Solver's
multistep-2: the D1 term is (1 − e^{−h})/2 · α_t D1 instead. Order 1 is DDIM (DPM-Solver++ eq. 6).

SDE variants (DPM-Solver++ paper, §5 and its appendix on SDE solvers): the exact solution of the
reverse SDE adds the noise the ODE leaves out,
    data prediction:  x_t = (σ_t/σ_s) e^{−h} x_s + 2 α_t ∫_{λ_s}^{λ_t} e^{−2(λ_t − λ)} x_θ(λ) dλ + σ_t √(1 − e^{−2h}) z,
    noise prediction: x_t = (α_t/α_s) x_s − 2 σ_t ∫_{λ_s}^{λ_t} e^{λ − λ_s}·… ε_θ dλ + σ_t √(e^{2h} − 1) z,
and the same Taylor terms integrate to α_t(1 − e^{−2h}) D0 + α_t((1 − e^{−2h})/(−2h) + 1) D1 ("heun"),
or ½ α_t (1 − e^{−2h}) D1 ("midpoint"); for noise prediction −2σ_t(e^h − 1) D0 − 2σ_t((e^h − 1)/h − 1) D1
("heun"), or −σ_t (e^h − 1) D1 ("midpoint"). Orders 1 and 2 (the SDE solvers the paper gives).

Conventions of the implementations, not of the papers (written from the documented meaning):
- the grid: "linspace" is n+1 points from T−1 to 0 and "leading" the (n+1)-point leading grid with
  ⌊T/(n+1)⌋ spacing, each without its last point; "trailing" the n-point trailing grid; the last step
  ends at timestep 0's noise level σ(0) (not at σ = 0);
- `lower_order_final`: below 15 steps the last step is first order and the one before at most second
  order (the DPM-Solver authors' advice for few steps); `euler_at_final`: the last step is first order;
- warm-up: call i uses order min(solver_order, i + 1);
- `thresholding` (dynamic, Imagen) applies to the data prediction; for the noise-prediction algorithm
  the ε is re-derived from the thresholded x̂_0.
"""
from __future__ import annotations

import math

import numpy as np

from .base import RefStep, SamplerReference, as64, eps_from_x0, x0_from_prediction
from .schedules import alpha_sigma_from_sigma, sigma_at, sigmas_from_alphas_cumprod, solver_timesteps

LOWER_ORDER_FINAL_BELOW = 15


class DPMSolverMultistepReference(SamplerReference):
    family, multistep = "dpmsolver-multistep", True
    DEFAULTS = {"solver_order": 2, "prediction_type": "epsilon", "thresholding": False,
                "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "algorithm_type": "dpmsolver++",
                "solver_type": "midpoint", "lower_order_final": True, "euler_at_final": False,
                "use_karras_sigmas": False, "use_lu_lambdas": False, "lambda_min_clipped": -float("inf"),
                "variance_type": None, "timestep_spacing": "linspace", "steps_offset": 0}
    SUPPORTED = {"solver_order": (1, 2, 3), "prediction_type": ("epsilon", "sample", "v_prediction"),
                 "algorithm_type": ("dpmsolver++", "dpmsolver", "sde-dpmsolver++", "sde-dpmsolver"),
                 "solver_type": ("midpoint", "heun"),
                 "use_karras_sigmas": (False,), "use_lu_lambdas": (False,),
                 # read only to split a learned variance off the model output; a fixed one changes nothing
                 "variance_type": (None, "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log"),
                 "timestep_spacing": ("linspace", "leading", "trailing")}

    def setup(self) -> None:
        cfg, T, n = self.config, self.num_train_timesteps, self.num_inference_steps
        if float(cfg["lambda_min_clipped"]) != -math.inf:
            raise NotImplementedError("dpmsolver-multistep reference: a finite lambda_min_clipped is not covered")
        grid = solver_timesteps(T, n, cfg["timestep_spacing"], cfg["steps_offset"])
        self.stochastic = cfg["algorithm_type"].startswith("sde-")
        if self.stochastic and int(cfg["solver_order"]) == 3:
            raise NotImplementedError("dpmsolver-multistep reference: the SDE solvers are of order 1 and 2, "
                                      "solver_order=3 is not covered")
        self.timesteps = grid
        self.stages = [""] * len(grid)
        train_sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod)
        self.sigmas = np.append(sigma_at(grid, train_sigmas), train_sigmas[0])     # ends at σ(t = 0)
        self.alpha_t, self.sigma_t = alpha_sigma_from_sigma(self.sigmas)
        self.lambdas = np.log(self.alpha_t) - np.log(self.sigma_t)
        self.history = []

    def order_at(self, i: int) -> int:
        cfg, n = self.config, len(self.timesteps)
        order = min(int(cfg["solver_order"]), i + 1)
        few = cfg["lower_order_final"] and n < LOWER_ORDER_FINAL_BELOW
        if i == n - 1 and (cfg["euler_at_final"] or few):
            return 1
        if i == n - 2 and few:
            return min(order, 2)
        return order

    def convert(self, i: int, model_output, x):
        """(m_i, x̂_0 as used, x̂_0 raw): m_i the data prediction (++) or the noise prediction."""
        a, s = self.alpha_t[i], self.sigma_t[i]
        x0_raw = x0_from_prediction(self.config["prediction_type"], as64(model_output), x, a, s)
        x0 = self.clip_x0(x0_raw)
        if self.config["algorithm_type"] in ("dpmsolver++", "sde-dpmsolver++"):
            return x0, x0, x0_raw
        if self.config["prediction_type"] == "epsilon" and not self.config["thresholding"]:
            eps = as64(model_output)
            return eps, (x - s * eps) / a, x0_raw
        return eps_from_x0(x0, x, a, s), x0, x0_raw

    def step(self, i: int, model_output, sample, noise=None) -> RefStep:
        self._in_order(i)
        x = as64(sample)
        m, x0, x0_raw = self.convert(i, model_output, x)
        self.history = (self.history + [m])[-3:]
        prev = self._update(i, x, self.order_at(i))
        std = self.noise_std(i)
        return RefStep(prev + self._noise(noise, std, x.shape), x0, x0_raw, std)

    def noise_std(self, i: int) -> float:
        """std of the noise the SDE solvers add on the step from call i: σ_t √(1 − e^{−2h}) with data
        prediction, σ_t √(e^{2h} − 1) with noise prediction; 0 for the ODE solvers."""
        if not self.stochastic:
            return 0.0
        h = self.lambdas[i + 1] - self.lambdas[i]
        if self.config["algorithm_type"] == "sde-dpmsolver++":
            return float(self.sigma_t[i + 1] * math.sqrt(-math.expm1(-2 * h)))
        return float(self.sigma_t[i + 1] * math.sqrt(math.expm1(2 * h)))

    def _differences(self, i: int, order: int):
        """D0, D1, D2 of the module docstring from the kept predictions (newest last)."""
        m = self.history[::-1]
        lam = self.lambdas
        h = lam[i + 1] - lam[i]
        if order == 1:
            return m[0], 0.0, 0.0
        r0 = (lam[i] - lam[i - 1]) / h
        d1_0 = (m[0] - m[1]) / r0
        if order == 2:
            return m[0], d1_0, 0.0
        r1 = (lam[i - 1] - lam[i - 2]) / h
        d1_1 = (m[1] - m[2]) / r1
        return m[0], d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1), (d1_0 - d1_1) / (r0 + r1)

    def _update(self, i: int, x, order: int):
        a_s, s_s, a_t, s_t = self.alpha_t[i], self.sigma_t[i], self.alpha_t[i + 1], self.sigma_t[i + 1]
        h = self.lambdas[i + 1] - self.lambdas[i]
        d0, d1, d2 = self._differences(i, order)
        midpoint = self.config["solver_type"] == "midpoint" and order == 2
        algorithm = self.config["algorithm_type"]
        if algorithm == "sde-dpmsolver++":
            phi1 = -math.expm1(-2 * h)                               # 1 − e^{−2h}
            c1 = phi1 / 2 if midpoint else phi1 / (-2 * h) + 1
            return (s_t / s_s) * math.exp(-h) * x + a_t * (phi1 * d0 + c1 * d1)
        if algorithm == "sde-dpmsolver":
            psi1 = math.expm1(h)                                     # e^{h} − 1
            c1 = psi1 if midpoint else 2 * (psi1 / h - 1)
            return (a_t / a_s) * x - s_t * (2 * psi1 * d0 + c1 * d1)
        if algorithm == "dpmsolver++":
            phi1 = -math.expm1(-h)                                   # 1 − e^{−h}
            phi2 = 1 - phi1 / h                                      # 1 − (1 − e^{−h})/h
            phi3 = 2 * (0.5 - (h - phi1) / h ** 2)                  # 2(1/2 − (h − 1 + e^{−h})/h²)
            c1 = phi1 / 2 if midpoint else phi2
            return (s_t / s_s) * x + a_t * (phi1 * d0 + c1 * d1 + phi3 * d2)
        psi1 = math.expm1(h)                                         # e^{h} − 1
        psi2 = psi1 / h - 1                                          # (e^{h} − 1)/h − 1
        psi3 = 2 * ((psi1 - h) / h ** 2 - 0.5)                      # 2((e^{h} − 1 − h)/h² − 1/2)
        c1 = psi1 / 2 if midpoint else psi2
        return (a_t / a_s) * x - s_t * (psi1 * d0 + c1 * d1 + psi3 * d2)
