"""What the two-call σ-space references (KDPM2, DPM-Solver-SDE) add to `base.SigmaReference`:
a model evaluation at a σ between two grid points, and the timestep the model is called at there.

The grid, x_T, c_in and D(x; σ) are base.SigmaReference's (Karras et al. 2022, Table 1, VP).
A σ that is not on the grid (a midpoint) is evaluated by the model at the fractional timestep
whose log σ interpolates linearly between the two neighbouring training timesteps — a convention
(k-diffusion's `sigma_to_t`, the inverse of `schedules.sigma_at` done in log σ), not a paper's.
The ancestral split is Euler ancestral's (`karras.EulerAncestralReference.ancestral_sigmas`).
"""
from __future__ import annotations

import numpy as np

from .base import SigmaReference
from .karras import EulerAncestralReference

ancestral_split = EulerAncestralReference.ancestral_sigmas


def log_midpoint(a: float, b: float) -> float:
    """The σ halfway between a and b in log σ (0 when b is 0: the last step has no midpoint)."""
    return float(np.exp((np.log(a) + np.log(b)) / 2)) if b > 0 else 0.0


class TwoCallSigmaReference(SigmaReference):
    """Subclasses fill `self.call_sigmas` (the σ each call evaluates the model at) in `setup`."""

    SUPPORTED = {"timestep_spacing": ("linspace", "leading", "trailing"), "use_karras_sigmas": (False, None),
                 "prediction_type": ("epsilon", "v_prediction")}

    def t_of_sigma(self, sigma: float) -> float:
        """The fractional timestep whose σ interpolates in log σ between its training neighbours."""
        log_sigmas = np.log(self.train_sigmas)        # increasing in t
        return float(np.interp(np.log(sigma), log_sigmas, np.arange(len(log_sigmas), dtype=np.float64)))

    def model_sigma(self, i: int) -> float:
        return float(self.call_sigmas[i])

    def x0_of(self, i: int, model_output, sample):
        """D(x; σ) of call i, at the σ the model was evaluated at."""
        return self.denoise(model_output, sample, self.model_sigma(i))
