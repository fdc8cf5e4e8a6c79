"""DPM-Solver / DPM-Solver++ singlestep, second order (Lu et al., "DPM-Solver", NeurIPS 2022,
Alg. 1 DPM-Solver-2 with a general r_1; "DPM-Solver++", arXiv 2211.01095, Alg. 1 DPM-Solver++(2S)).

A second-order step from s to t (h = λ_t − λ_s) evaluates the model once more at an intermediate
u with λ_u = λ_s + r h. Here u is the next grid point: calls alternate order 1 (from s to u, a
first-order step whose result is the model's next input) and order 2 (from the kept x_s to t with
the outputs at s and u), r = (λ_u − λ_s)/h. With D_0 the output at s, D_1 = (D_u − D_s)/r:
    DPM-Solver++ (data prediction x̂_0):  x_t = (σ_t/σ_s) x_s − α_t (e^{−h} − 1) (D_0 + c D_1)
    DPM-Solver   (noise prediction ε):   x_t = (α_t/α_s) x_s − σ_t (e^{h} − 1) (D_0 + c D_1)
with c = ½ ("midpoint", the papers' algorithms: their r_1 form is (1 − 1/(2r)) D_s + 1/(2r) D_u)
or c = φ_2/φ_1 of ∓h ("heun": the second-order Taylor term ∫ e^{…}(λ − λ_s) dλ of their eq. 3.6,
exact for a linear D). Order 1 is DDIM in λ (their eq. 4.1 / ++'s first-order update).

The order pattern (ppdiffusers' `lower_order_final`, from its meaning: whole 1, 2 pairs, a single
first-order step if n is odd) and the last step landing on t = 0 (exp_integrator.py). The third
order (solver_order=3) is not covered.
"""
from __future__ import annotations

import numpy as np

from .base import RefStep, as64, eps_from_x0
from .exp_integrator import ExponentialIntegratorReference, phi


class DPMSolverSinglestepReference(ExponentialIntegratorReference):
    family, multistep, stochastic = "dpmsolver-singlestep", True, False
    DEFAULTS = {"solver_order": 2, "prediction_type": "epsilon", "thresholding": False,
                "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "algorithm_type": "dpmsolver++",
                "solver_type": "midpoint", "lower_order_final": True, "use_karras_sigmas": False,
                "lambda_min_clipped": -float("inf"), "variance_type": None}
    SUPPORTED = {"solver_order": (1, 2), "algorithm_type": ("dpmsolver++", "dpmsolver"),
                 "solver_type": ("midpoint", "heun"), "use_karras_sigmas": (False, None),
                 "lambda_min_clipped": (-float("inf"),), "variance_type": (None,)}

    def setup(self) -> None:
        self.setup_solver_grid("linspace")
        n = self.num_inference_steps
        self.orders = [1] * n if self.config["solver_order"] == 1 else [1, 2] * (n // 2) + [1] * (n % 2)
        self.outputs, self.kept = {}, None

    def step(self, i: int, model_output, sample, noise=None) -> RefStep:
        self._in_order(i)
        x, plus = as64(sample), self.config["algorithm_type"] == "dpmsolver++"
        x0_raw = self.data_prediction(i, model_output, x)
        x0 = self.clip_x0(x0_raw) if plus else x0_raw
        self.outputs[i] = x0 if plus else self.noise_prediction(i, model_output, x)
        order = self.orders[i]
        if order == 1:
            self.kept = x
        s, t = i - order + 1, i + 1
        h = self.lam[t] - self.lam[s]
        d0 = self.outputs[s]
        if order == 2:
            r = (self.lam[i] - self.lam[s]) / h
            hh = -h if plus else h
            c = 0.5 if self.config["solver_type"] == "midpoint" else phi(2, hh) / phi(1, hh)
            d0 = d0 + c * (self.outputs[i] - self.outputs[s]) / r
        if plus:
            prev = self.sigma_t[t] / self.sigma_t[s] * self.kept - self.alpha[t] * np.expm1(-h) * d0
        else:
            prev = self.alpha[t] / self.alpha[s] * self.kept - self.sigma_t[t] * np.expm1(h) * d0
        used = x0 if plus else (x - self.sigma_t[i] * self.outputs[i]) / self.alpha[i]
        return RefStep(prev, used, x0_raw, 0.0)
