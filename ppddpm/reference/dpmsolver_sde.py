"""DPM-Solver++ SDE ("DPM++ SDE" of k-diffusion's `sample_dpmpp_sde`): DPM-Solver++(2S) (Lu et al.,
"DPM-Solver++", arXiv 2211.01095, Alg. 1) with r = ½ in σ-space, each stage made ancestral with
Karras et al. 2022's split (η = 1).

Per timestep, σ_i → σ_{i+1}, with s = the midpoint in log σ (sigma_space.py):
    first-order data-prediction step (DPM-Solver++(1), i.e. DDIM in σ): x → (σ_b/σ_a) x + (1 − σ_b/σ_a) x̂_0
    call "predictor" (model at σ_i):   x_mid = DPM++(1) from x_i to σ_down(σ_i→σ_mid), + s_noise σ_up z
    call "corrector" (model at σ_mid): x_{i+1} = DPM++(1) from x_i with the midpoint's x̂_0 to
                                       σ_down(σ_i→σ_{i+1}), + s_noise σ_up z
(with r = ½ DPM-Solver++(2S)'s combination (1 − 1/(2r)) D_i + 1/(2r) D_mid is the midpoint's D alone).
The last timestep (σ_{i+1} = 0) is one noiseless Euler step: x̂_0. z is the Brownian tree's
increment over [σ_a, σ_b] divided by √|σ_b − σ_a| — here simply the recorded standard normal z.
"""
from __future__ import annotations

from .base import RefStep, as64
from .kdpm2 import KDPM2Reference
from .sigma_space import ancestral_split, log_midpoint


class DPMSolverSDEReference(KDPM2Reference):
    family, multistep, stochastic = "dpmsolver-sde", True, True
    DEFAULTS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear", "prediction_type": "epsilon",
                "use_karras_sigmas": False, "noise_sampler_seed": None, "timestep_spacing": "linspace",
                "steps_offset": 0}
    STEP_KWARGS = {"s_noise": 1.0}
    # calls, timesteps and midpoints: those of DPM-2 (KDPM2Reference.setup, non-ancestral)

    def step(self, i: int, model_output, sample, noise=None) -> RefStep:
        self._in_order(i)
        stage, k, _, _, _ = self.calls[i]
        x, sigma, sigma_next = as64(sample), self.sigmas[k], self.sigmas[k + 1]
        x0 = self.x0_of(i, model_output, x)
        if sigma_next == 0:
            return RefStep(x0, x0, x0, 0.0)
        if stage == "predictor":
            self.kept, target = x, log_midpoint(sigma, sigma_next)
        else:
            target = sigma_next
        up, down = ancestral_split(sigma, target)
        std = self.step_kwargs["s_noise"] * up
        prev = down / sigma * self.kept + (1 - down / sigma) * x0 + self._noise(noise, std, x.shape)
        return RefStep(prev, x0, x0, std)
