"""PNDM (Liu, Ren, Lin, Zhao, "Pseudo Numerical Methods for Diffusion Models on Manifolds",
ICLR 2022) as a sampler reference, in float64.

The transfer part, their eq. (11), moves x_t to x_p (p < t) along the DDIM direction of a given ε:
    φ(x_t, ε, t, p) = √(ᾱ_p/ᾱ_t) x_t − (ᾱ_p − ᾱ_t) / (√ᾱ_t (√((1−ᾱ_p) ᾱ_t) + √((1−ᾱ_t) ᾱ_p))) ε
(algebraically DDIM's η = 0 step, eq. 12 of Song et al.). The gradient part combines ε's:
- pseudo Runge–Kutta (their eq. 13), four model calls for one step t → p with midpoint m:
    e1 = ε(x_t, t);            x1 = φ(x_t, e1, t, m)
    e2 = ε(x1, m);             x2 = φ(x_t, e2, t, m)
    e3 = ε(x2, m);             x3 = φ(x_t, e3, t, p)
    e4 = ε(x3, p);             x_p = φ(x_t, (e1 + 2e2 + 2e3 + e4)/6, t, p)
  each call's output is the x it produces (x1, x2, x3, x_p);
- pseudo linear multistep (eq. 12): e' = (55 e_t − 59 e_{t+δ} + 37 e_{t+2δ} − 9 e_{t+3δ})/24,
  x_p = φ(x_t, e', t, p), the history being the ε's at the grid points (e1 of each PRK step).
F-PNDM (`skip_prk_steps=False`) warms up with three PRK steps; with `skip_prk_steps=True` it starts
as Stable Diffusion's PLMS sampler (Rombach et al.'s `plms.py`): a pseudo improved-Euler first step
(call 0: Euler x' = φ(x_0, e_0, t_0, t_1); call 1 at (x', t_1): x_1 = φ(x_0, (e_0 + e')/2, t_0, t_1)),
then linear multistep of order 2 and 3 (Adams–Bashforth: (3, −1)/2, (23, −16, 5)/12) until four ε's
are kept.

Discrete conventions (not in the paper, which is continuous in t): steps go along the grid of
`spaced_timesteps` (τ_i → τ_{i+1}; past the end ᾱ is 1, or ᾱ_0 with `set_alpha_to_one=False`, the
PNDM default); the midpoint of t → p is m = t − ⌊(t − p)/2⌋ (ᾱ is tabled at integer t).

The model may predict v (Salimans & Ho 2022) instead of ε: each v is turned into ε at the point where
it was evaluated, ε = √ᾱ v + √(1−ᾱ) x, before any combination.
"""
from __future__ import annotations

import numpy as np

from .base import RefStep, VPReference, as64, eps_from_x0

PLMS_COEFFICIENTS = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12),
                     4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}     # newest first; eq. (12) for order 4
PRK_WEIGHTS = (1 / 6, 2 / 6, 2 / 6, 1 / 6)                             # eq. (13)


def pndm_transfer(alpha_bar_t: float, alpha_bar_p: float, x_t, eps):
    """φ(x_t, ε, t, p) of Liu et al. 2022, eq. (11)."""
    denominator = np.sqrt(alpha_bar_t) * (np.sqrt((1 - alpha_bar_p) * alpha_bar_t)
                                          + np.sqrt((1 - alpha_bar_t) * alpha_bar_p))
    return np.sqrt(alpha_bar_p / alpha_bar_t) * x_t - (alpha_bar_p - alpha_bar_t) / denominator * eps


class PNDMReference(VPReference):
    family, multistep = "pndm", True
    DEFAULTS = {"skip_prk_steps": False, "set_alpha_to_one": False, "prediction_type": "epsilon",
                "timestep_spacing": "leading", "steps_offset": 0}
    SUPPORTED = {"prediction_type": ("epsilon", "v_prediction"),
                 "timestep_spacing": ("linspace", "leading", "trailing")}

    def setup(self) -> None:
        self.setup_grid()
        self.grid, self.grid_next = self.timesteps.copy(), self.prev_timesteps.copy()
        self.build_calls()

    def build_calls(self) -> None:
        """The model calls in order, each (model timestep, step start t, step end p, stage), from the
        grid τ and the step ends (`grid_next`, the next grid point)."""
        grid, nxt = self.grid, self.grid_next
        calls = []
        if self.config["skip_prk_steps"]:
            calls += [(grid[0], grid[0], nxt[0], "plms"), (nxt[0], grid[0], nxt[0], "plms")]
            calls += [(grid[k], grid[k], nxt[k], "plms") for k in range(1, len(grid))]
        else:
            if len(grid) < 4:
                raise ValueError("PNDM with Runge-Kutta warm-up needs at least 4 inference steps")
            for k in range(3):
                t, p = grid[k], nxt[k]
                m = t - np.floor((t - p) / 2)
                calls += [(t, t, m, "prk1"), (m, t, m, "prk2"), (m, t, p, "prk3"), (p, t, p, "prk4")]
            calls += [(grid[k], grid[k], nxt[k], "plms") for k in range(3, len(grid))]
        self.calls = calls
        self.timesteps = np.array([c[0] for c in calls], np.float64)
        self.stages = [c[3] for c in calls]
        self.eps_history, self._start, self._prk = [], None, []

    def eps_of(self, model_output, x, t):
        """ε from the model output at the point (x, t) it was evaluated at."""
        if self.config["prediction_type"] == "epsilon":
            return as64(model_output)
        ab = self.alpha_bar(t)
        return eps_from_x0(self.x0_raw(model_output, x, t), x, np.sqrt(ab), np.sqrt(1 - ab))

    def step(self, i: int, model_output, sample, noise=None) -> RefStep:
        self._in_order(i)
        t_model, t, p, stage = self.calls[i]
        x = as64(sample)
        e = self.eps_of(model_output, x, t_model)
        x0 = self.x0_raw(model_output, x, t_model)
        prev = self._prk_step(stage, e, x, t, p) if stage != "plms" else self._plms_step(i, e, x, t, p)
        return RefStep(prev, x0, x0, 0.0)

    def _prk_step(self, stage, e, x, t, p):
        if stage == "prk1":
            self._start, self._prk = x, []
            self.eps_history.append(e)
        self._prk.append(e)
        if stage == "prk4":
            e = sum(w * ek for w, ek in zip(PRK_WEIGHTS, self._prk))
        return pndm_transfer(self.alpha_bar(t), self.alpha_bar(p), self._start, e)

    def _plms_step(self, i, e, x, t, p):
        if self.config["skip_prk_steps"] and i == 1:                          # pseudo improved Euler, 2nd call
            e_first = self.eps_history[0]
            return pndm_transfer(self.alpha_bar(t), self.alpha_bar(p), self._start, (e + e_first) / 2)
        if self.config["skip_prk_steps"] and i == 0:
            self._start = x
        self.eps_history = (self.eps_history + [e])[-4:]
        coefficients = PLMS_COEFFICIENTS[len(self.eps_history)]
        e_combined = sum(c * ek for c, ek in zip(coefficients, reversed(self.eps_history)))
        return pndm_transfer(self.alpha_bar(t), self.alpha_bar(p), x, e_combined)
