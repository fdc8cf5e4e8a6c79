"""The σ-space samplers of Karras, Aittala, Aila, Laine, "Elucidating the Design Space of
Diffusion-Based Generative Models" (NeurIPS 2022), and their k-diffusion relatives, in float64.

All work on x = x_t/√ᾱ_t with D(x; σ) = x̂_0 and the ODE dx/dσ = (x − D(x; σ))/σ (Karras et al.
eq. 3 with σ(t) = t, s(t) = 1), on the grid σ_0 > … > σ_{N−1} > σ_N = 0 of `SigmaReference`.

- euler            Alg. 2 without its correction step: optional churn
                   γ_i = min(S_churn/N, √2 − 1) if S_tmin ≤ σ_i ≤ S_tmax else 0, σ̂ = σ_i(1 + γ_i),
                   x̂ = x + √(σ̂² − σ_i²) · S_noise z, d = (x̂ − D(x̂; σ̂))/σ̂, x_{i+1} = x̂ + (σ_{i+1} − σ̂) d.
                   The reference takes the model output as D's ε at (x̂, σ̂) (Alg. 2, line 7).
                   ppdiffusers evaluates the model before `step` churns, at (x_i, σ_i), so with churn its
                   D(x̂; σ̂) = x̂ − σ̂ ε(x_i; σ_i): an approximation the reference cannot see from a call's
                   data. For v-prediction with churn ppdiffusers also converts v with σ_i, not σ̂.
- euler-ancestral  the ancestral step (MATH.md): σ_up = min(σ_{i+1}, √(σ_{i+1}²(σ_i² − σ_{i+1}²)/σ_i²)),
                   σ_down = √(σ_{i+1}² − σ_up²), Euler from σ_i to σ_down, then + σ_up z.
- heun             Alg. 1: Euler predictor to σ_{i+1}, then (unless σ_{i+1} = 0) a second model call at
                   the predicted point and the trapezoidal corrector x_{i+1} = x_i + (σ_{i+1} − σ_i)(d_i + d'_i)/2.
                   `clip_sample` clips D to ±clip_sample_range at both calls.
- lms              linear multistep in σ: x_{i+1} = x_i + Σ_j c_j d_{i−j}, c_j = ∫_{σ_i}^{σ_{i+1}} ℓ_j(τ) dτ with the
                   Lagrange basis ℓ_j(τ) = Π_{k≠j} (τ − σ_{i−k})/(σ_{i−j} − σ_{i−k}) over the last
                   min(i+1, order) derivatives (integrated exactly: ℓ_j is a polynomial).
"""
from __future__ import annotations

import math

import numpy as np
from numpy.polynomial import polynomial as P

from .base import RefStep, SigmaReference, as64

_SIGMA_DEFAULTS = {"prediction_type": "epsilon", "use_karras_sigmas": False, "timestep_spacing": "linspace",
                   "steps_offset": 0}
_SPACINGS = ("linspace", "leading", "trailing")


class _KarrasReference(SigmaReference):
    SUPPORTED = {"timestep_spacing": _SPACINGS, "prediction_type": ("epsilon", "v_prediction", "sample")}

    def setup(self) -> None:
        self.setup_sigma_grid()
        self.timesteps = self.grid.copy()
        self.stages = [""] * len(self.timesteps)

    def euler_to(self, x, d, sigma_from: float, sigma_to: float):
        """One Euler step of dx/dσ = d from σ_from to σ_to (Alg. 1, line 5)."""
        return x + (sigma_to - sigma_from) * d


class EulerReference(_KarrasReference):
    family = "euler"
    DEFAULTS = {**_SIGMA_DEFAULTS, "interpolation_type": "linear", "sigma_min": None, "sigma_max": None,
                "timestep_type": "discrete"}
    STEP_KWARGS = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0}

    def setup(self) -> None:
        super().setup()
        if self.config["timestep_type"] != "discrete":
            raise NotImplementedError("euler reference: timestep_type='continuous' is not covered (discrete)")
        self.stochastic = self.step_kwargs["s_churn"] > 0

    def gamma(self, sigma: float) -> float:
        """Alg. 2, line 4: γ_i = min(S_churn/N, √2 − 1) if S_tmin ≤ σ_i ≤ S_tmax, else 0."""
        kw = self.step_kwargs
        if not kw["s_tmin"] <= sigma <= kw["s_tmax"]:
            return 0.0
        return min(kw["s_churn"] / self.num_inference_steps, math.sqrt(2.0) - 1.0)

    def step(self, i: int, model_output, sample, noise=None) -> RefStep:
        sigma = float(self.sigmas[i])
        sigma_hat = sigma * (1.0 + self.gamma(sigma))                          # Alg. 2, line 5
        std = self.step_kwargs["s_noise"] * math.sqrt(sigma_hat ** 2 - sigma ** 2)
        x_hat = as64(sample) + self._noise(noise, std, np.shape(sample))       # line 6
        x0 = self.denoise(model_output, x_hat, sigma_hat)
        d = (x_hat - x0) / sigma_hat                                           # line 7
        return RefStep(self.euler_to(x_hat, d, sigma_hat, float(self.sigmas[i + 1])), x0, x0, std)   # line 8


class EulerAncestralReference(_KarrasReference):
    family, stochastic = "euler-ancestral", True
    DEFAULTS = dict(_SIGMA_DEFAULTS)

    @staticmethod
    def ancestral_sigmas(sigma_from: float, sigma_to: float):
        """(σ_up, σ_down): the ancestral split of the step σ_from → σ_to (MATH.md, "References")."""
        sigma_up = min(sigma_to, math.sqrt(sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2))
        return sigma_up, math.sqrt(sigma_to ** 2 - sigma_up ** 2)

    def step(self, i: int, model_output, sample, noise=None) -> RefStep:
        x, sigma = as64(sample), float(self.sigmas[i])
        sigma_up, sigma_down = self.ancestral_sigmas(sigma, float(self.sigmas[i + 1]))
        x0 = self.denoise(model_output, x, sigma)
        d = (x - x0) / sigma
        prev = self.euler_to(x, d, sigma, sigma_down) + self._noise(noise, sigma_up, x.shape)
        return RefStep(prev, x0, x0, sigma_up)


class HeunReference(_KarrasReference):
    """Two calls per grid point but the last: call 2k is the predictor of step k (σ_k → σ_{k+1}),
    call 2k+1 its corrector, evaluated at σ_{k+1}; the step to σ_N = 0 is Euler only (Alg. 1, line 6)."""

    family, multistep = "heun", True
    DEFAULTS = {**_SIGMA_DEFAULTS, "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": False,
                "clip_sample_range": 1.0}

    def setup(self) -> None:
        super().setup()
        n = self.num_inference_steps
        self.step_of = [k for k in range(n - 1) for _ in (0, 1)] + [n - 1]     # call → step k
        self.stages = ["predictor", "corrector"] * (n - 1) + ["predictor"]
        self.timesteps = np.array([self.grid[k + (s == "corrector")] for k, s in zip(self.step_of, self.stages)])
        self._held = None

    def model_sigma(self, i: int) -> float:
        return float(self.sigmas[self.step_of[i] + (self.stages[i] == "corrector")])

    def step(self, i: int, model_output, sample, noise=None) -> RefStep:
        self._in_order(i)
        k, x = self.step_of[i], as64(sample)
        sigma, sigma_next = float(self.sigmas[k]), float(self.sigmas[k + 1])
        x0_raw = self.denoise(model_output, x, self.model_sigma(i))
        x0 = self.clip_x0(x0_raw)
        if self.stages[i] == "predictor":
            d = (x - x0) / sigma                                                # Alg. 1, line 4
            self._held = (x, d)
            return RefStep(self.euler_to(x, d, sigma, sigma_next), x0, x0_raw, 0.0)   # line 5
        x_k, d = self._held
        d_prime = (x - x0) / sigma_next                                         # line 7
        return RefStep(self.euler_to(x_k, (d + d_prime) / 2, sigma, sigma_next), x0, x0_raw, 0.0)  # line 8


def lagrange_integral(nodes, j: int, lower: float, upper: float) -> float:
    """∫_lower^upper ℓ_j(τ) dτ, ℓ_j(τ) = Π_{k≠j} (τ − nodes[k])/(nodes[j] − nodes[k]), exactly."""
    others = [nodes[k] for k in range(len(nodes)) if k != j]
    basis = P.polyfromroots(others) / np.prod([nodes[j] - o for o in others]) if others else np.array([1.0])
    antiderivative = P.polyint(basis)
    return float(P.polyval(upper, antiderivative) - P.polyval(lower, antiderivative))


class LMSReference(_KarrasReference):
    family, multistep = "lms", True
    DEFAULTS = dict(_SIGMA_DEFAULTS)
    STEP_KWARGS = {"order": 4}

    def setup(self) -> None:
        super().setup()
        self.derivatives = []

    def step(self, i: int, model_output, sample, noise=None) -> RefStep:
        self._in_order(i)
        x, sigma = as64(sample), float(self.sigmas[i])
        x0 = self.denoise(model_output, x, sigma)
        self.derivatives.append((x - x0) / sigma)
        order = min(i + 1, int(self.step_kwargs["order"]))
        nodes = [float(self.sigmas[i - k]) for k in range(order)]              # σ_i, σ_{i−1}, …
        coeffs = [lagrange_integral(nodes, j, sigma, float(self.sigmas[i + 1])) for j in range(order)]
        prev = x + sum(c * self.derivatives[i - j] for j, c in enumerate(coeffs))
        return RefStep(prev, x0, x0, 0.0)
