"""DEIS (Zhang & Chen, "Fast Sampling of Diffusion Models with Exponential Integrator", ICLR 2023):
the multistep exponential integrator in ρ = σ_t/α_t.

With y = x/α the probability-flow ODE is dy/dρ = ε_θ (their eq. 11 in ρ), so exactly
    y(ρ_{i+1}) = y(ρ_i) + ∫_{ρ_i}^{ρ_{i+1}} ε_θ dρ,
and ρAB-DEIS (their §4, "Adams–Bashforth in ρ") replaces ε_θ by the polynomial through the last
r + 1 noise predictions. ppdiffusers' only `solver_type`, "logrho", interpolates in log ρ (the
Lagrange basis ℓ_j(log ρ) through log ρ_i, log ρ_{i−1}, …); the coefficients ∫ ℓ_j dρ are computed
here by Gauss–Legendre quadrature in float64, not in closed form.

The history holds ε re-derived from the (thresholded) x̂_0 at each call (eq. 15 inverted). Order:
min(solver_order, calls so far + 1) (a multistep method's warm-up), and with `lower_order_final`
and fewer than 15 steps the last step is order 1 and the one before at most 2 (a stability
convention of the DPM-Solver/DEIS implementations for short runs).
"""
from __future__ import annotations

import numpy as np

from .base import RefStep, as64, eps_from_x0
from .exp_integrator import ExponentialIntegratorReference

GAUSS_NODES, GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(16)


def lagrange_integral_log_rho(nodes, j: int, a: float, b: float) -> float:
    """∫_a^b ℓ_j(log ρ) dρ, ℓ_j the Lagrange basis polynomial (in log ρ) of node j among `nodes`
    (values of log ρ); 16-point Gauss–Legendre (exact to float64 for these smooth integrands)."""
    rho = (b - a) / 2 * GAUSS_NODES + (a + b) / 2
    u = np.log(rho)
    basis = np.ones_like(u)
    for k, node in enumerate(nodes):
        if k != j:
            basis *= (u - node) / (nodes[j] - node)
    return float((b - a) / 2 * np.sum(GAUSS_WEIGHTS * basis))


class DEISReference(ExponentialIntegratorReference):
    family, multistep, stochastic = "deis", True, False
    DEFAULTS = {"solver_order": 2, "prediction_type": "epsilon", "thresholding": False,
                "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "algorithm_type": "deis",
                "solver_type": "logrho", "lower_order_final": True, "use_karras_sigmas": False,
                "timestep_spacing": "linspace", "steps_offset": 0}
    SUPPORTED = {"solver_order": (1, 2, 3), "algorithm_type": ("deis", "dpmsolver", "dpmsolver++"),
                 "solver_type": ("logrho", "midpoint", "heun", "bh1", "bh2"), "use_karras_sigmas": (False, None),
                 "timestep_spacing": ("linspace", "leading", "trailing")}
    # ppdiffusers maps the other algorithm/solver names onto deis/logrho (its only implementation).

    def setup(self) -> None:
        self.setup_solver_grid(self.config["timestep_spacing"], self.config["steps_offset"])
        self.history = []

    def order(self, i: int) -> int:
        n, order = self.num_inference_steps, min(self.config["solver_order"], i + 1)
        if self.config["lower_order_final"] and n < 15:
            order = min(order, n - i)
        return order

    def step(self, i: int, model_output, sample, noise=None) -> RefStep:
        self._in_order(i)
        x = as64(sample)
        x0_raw = self.data_prediction(i, model_output, x)
        x0 = self.clip_x0(x0_raw)
        self.history.append(eps_from_x0(x0, x, self.alpha[i], self.sigma_t[i]))
        order = self.order(i)
        nodes = np.log(self.rho[i - order + 1:i + 1][::-1])          # log ρ_i, log ρ_{i−1}, ...
        y = x / self.alpha[i]
        for j in range(order):
            y = y + lagrange_integral_log_rho(nodes, j, self.rho[i], self.rho[i + 1]) * self.history[-1 - j]
        return RefStep(self.alpha[i + 1] * y, x0, x0_raw, 0.0)
