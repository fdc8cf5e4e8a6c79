"""KDPM2 and KDPM2 ancestral: the second-order "DPM-2" sampler in Karras et al. 2022's σ-space.

DPM-2 (the DPM-Solver-2 of Lu et al. 2022 written in σ, as Karras et al. 2022 §3 / k-diffusion's
`sample_dpm_2` use it; the midpoint rule in log σ). From σ_i to σ_{i+1}, with d(x, σ) = (x − x̂_0)/σ:
    σ_mid = exp(½(ln σ_i + ln σ_{i+1}))
    x_mid = x_i + d(x_i, σ_i) (σ_mid − σ_i)                 call "predictor" (model at σ_i)
    x_{i+1} = x_i + d(x_mid, σ_mid) (σ_{i+1} − σ_i)           call "corrector" (model at σ_mid)
and the last step (σ_{i+1} = 0) is one Euler step, x̂_0 itself (no midpoint: log 0).
Ancestral: the step aims at σ_down and adds σ_up z (`ancestral_split(σ_i, σ_{i+1})`): the midpoint
is between σ_i and σ_down, the corrector lands on x_i + d(x_mid, σ_mid)(σ_down − σ_i) + σ_up z.
The model is called at σ_i's timestep, then at the fractional timestep of σ_mid (sigma_space.py).
"""
from __future__ import annotations

import numpy as np

from .base import RefStep, as64
from .sigma_space import TwoCallSigmaReference, ancestral_split, log_midpoint


class KDPM2Reference(TwoCallSigmaReference):
    family, multistep, stochastic, ancestral = "kdpm2", True, False, False
    DEFAULTS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear", "prediction_type": "epsilon",
                "use_karras_sigmas": False, "timestep_spacing": "linspace", "steps_offset": 0}

    def setup(self) -> None:
        self.setup_sigma_grid()
        n, sig = self.num_inference_steps, self.sigmas
        self.calls, timesteps, self.call_sigmas = [], [], []
        for k in range(n):
            up, down = ancestral_split(sig[k], sig[k + 1]) if self.ancestral else (0.0, float(sig[k + 1]))
            mid = log_midpoint(sig[k], down)
            self.calls.append(("predictor", k, mid, up, down))
            timesteps.append(self.grid[k])
            self.call_sigmas.append(sig[k])
            if sig[k + 1] > 0 and mid > 0:
                self.calls.append(("corrector", k, mid, up, down))
                timesteps.append(self.t_of_sigma(mid))
                self.call_sigmas.append(mid)
        self.timesteps = np.asarray(timesteps, np.float64)
        self.stages = [c[0] for c in self.calls]
        self.kept = None

    def step(self, i: int, model_output, sample, noise=None) -> RefStep:
        self._in_order(i)
        stage, k, mid, up, down = self.calls[i]
        x, sigma = as64(sample), self.sigmas[k]
        x0 = self.x0_of(i, model_output, x)
        if stage == "predictor":
            if mid == 0.0:                                     # the last step: Euler to σ = 0
                return RefStep(x + (x - x0) / sigma * (0.0 - sigma), x0, x0, 0.0)
            self.kept = x
            return RefStep(x + (x - x0) / sigma * (mid - sigma), x0, x0, 0.0)
        slope, base, self.kept = (x - x0) / mid, self.kept, None
        prev = base + slope * (down - sigma) + self._noise(noise, up, x.shape)
        return RefStep(prev, x0, x0, up)


class KDPM2AncestralReference(KDPM2Reference):
    family, stochastic, ancestral = "kdpm2-ancestral", True, True
