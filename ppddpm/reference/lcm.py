"""LCM (Luo, Tan, Huang, Li, Zhao, "Latent Consistency Models", arXiv 2310.04378): multistep
consistency sampling (their Alg. 3).

Each call maps x_t to the consistency function's output and re-noises it to the next timestep:
    x̂_0 = (x_t − √(1−ᾱ_t) ε_θ)/√ᾱ_t                    Ho et al. eq. 15 (clipped / thresholded if configured)
    f(x_t, t) = c_skip(t) x_t + c_out(t) x̂_0           the boundary-condition parameterisation (their eq. 6,
                                                        after Song et al. 2023's consistency models)
    x_prev = √ᾱ_prev f + √(1−ᾱ_prev) z                  Alg. 3, line 5 (no noise at the last call)
with c_skip(t) = σ_d²/((s t)² + σ_d²), c_out(t) = s t/√((s t)² + σ_d²), σ_d = 0.5 and the timestep
scaled by s = `timestep_scaling` (10), as LCM's released code writes them (a convention: the paper
leaves c_skip, c_out to Song et al.'s form). x̂_0 "as used" is f, the value the re-noising takes.

Timesteps (their §4.2, "skipping-step" schedule): the distillation grid t = k·j − 1, j = 1..N with
N = original_inference_steps and k = ⌊T/N⌋, walked from the top; n of its N points are taken at the
evenly spaced indices ⌊i·N/n⌋, i = 0..n−1. The step after the last one lands on f itself.
"""
from __future__ import annotations

import numpy as np

from .base import RefStep, VPReference, as64


class LCMReference(VPReference):
    family, multistep, stochastic = "lcm", False, True
    DEFAULTS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                "original_inference_steps": 50, "clip_sample": False, "clip_sample_range": 1.0,
                "set_alpha_to_one": True, "steps_offset": 0, "prediction_type": "epsilon", "thresholding": False,
                "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "timestep_spacing": "leading",
                "timestep_scaling": 10.0}
    SIGMA_DATA = 0.5

    def setup(self) -> None:
        T, N, n = self.num_train_timesteps, int(self.config["original_inference_steps"]), self.num_inference_steps
        if not 1 <= n <= N:
            raise ValueError(f"LCM takes 1..original_inference_steps={N} steps; got {n}")
        grid = (np.arange(1, N + 1) * (T // N) - 1)[::-1]
        self.timesteps = grid[np.floor(np.linspace(0, N, n, endpoint=False)).astype(int)].astype(np.float64)
        self.stages = [""] * n
        self.init_noise_sigma = 1.0

    def boundary(self, t: float):
        """(c_skip, c_out) at timestep t."""
        st, sd2 = t * self.config["timestep_scaling"], self.SIGMA_DATA ** 2
        return sd2 / (st ** 2 + sd2), st / np.sqrt(st ** 2 + sd2)

    def step(self, i: int, model_output, sample, noise=None) -> RefStep:
        t, x = self.timesteps[i], as64(sample)
        x0_raw = self.x0_raw(model_output, x, t)
        c_skip, c_out = self.boundary(t)
        f = c_skip * x + c_out * self.clip_x0(x0_raw)
        if i == len(self.timesteps) - 1:
            return RefStep(f, f, x0_raw, 0.0)
        ab_prev = self.alpha_bar(self.timesteps[i + 1])
        std = float(np.sqrt(1 - ab_prev))
        return RefStep(np.sqrt(ab_prev) * f + self._noise(noise, std, x.shape), f, x0_raw, std)
