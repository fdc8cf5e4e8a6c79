"""UniPC (Zhao, Bai, Rao, Zhou, Lu, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling
of Diffusion Models", NeurIPS 2023): the multistep predictor UniP-p and the corrector UniC-p.

In λ (exp_integrator.py), data prediction m = x̂_0 (`predict_x0`, their Alg. 2 with the
DPM-Solver++ form) or noise prediction m = ε (their Alg. 1), with hh = −h (data) or h (noise),
h = λ_t − λ_s, B(h) = hh ("bh1") or e^{hh} − 1 ("bh2") (their §3.2), r_k = (λ_{s_k} − λ_s)/h and
D_k = (m_{s_k} − m_s)/r_k for the earlier points:
    data:   x_t = (σ_t/σ_s) x_s − α_t (e^{hh} − 1) m_s − α_t B(h) Σ_k a_k D_k
    noise:  x_t = (α_t/α_s) x_s − σ_t (e^{hh} − 1) m_s − σ_t B(h) Σ_k a_k D_k
where a solves R a = g, R_{jk} = r_k^{j−1}, g_j = hh φ_{j+1}(hh) j!/B(h) (their eq. 8; φ as in
exp_integrator.phi). UniP-p uses the p − 1 earlier points; UniC-p, run at the next call with the
model output m_t there, adds the point r_p = 1 with D_p = m_t − m_s and corrects x_t before the
next prediction starts from it. The official implementation replaces the solve by a = ½ for UniP-2
and UniC-1 (a convention of the authors' code, kept here). The model output converted at a call
(x̂_0 or ε) is formed from the uncorrected sample it was given.

Order at call i: min(solver_order, i + 1) (warm-up), and with `lower_order_final` at most n − i;
the corrector of call i uses the order of call i − 1 and is skipped for indices in
`disable_corrector` (the call index minus one, as the config lists them).
"""
from __future__ import annotations

import math

import numpy as np

from .base import RefStep, as64
from .exp_integrator import ExponentialIntegratorReference, phi


class UniPCReference(ExponentialIntegratorReference):
    family, multistep, stochastic = "unipc", True, False
    DEFAULTS = {"solver_order": 2, "prediction_type": "epsilon", "thresholding": False,
                "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "predict_x0": True,
                "solver_type": "bh2", "lower_order_final": True, "disable_corrector": [], "solver_p": None,
                "use_karras_sigmas": False, "timestep_spacing": "linspace", "steps_offset": 0}
    SUPPORTED = {"solver_order": (1, 2, 3), "solver_type": ("bh1", "bh2", "midpoint", "heun", "logrho"),
                 "solver_p": (None,), "use_karras_sigmas": (False, None),
                 "timestep_spacing": ("linspace", "leading", "trailing")}

    def setup(self) -> None:
        self.setup_solver_grid(self.config["timestep_spacing"], self.config["steps_offset"])
        self.bh = "bh1" if self.config["solver_type"] == "bh1" else "bh2"   # ppdiffusers maps the rest to bh2
        self.m, self.last_x, self.last_order = [], None, None

    def _coefficients(self, h: float, rks, p: int, simplified: bool):
        hh = -h if self.config["predict_x0"] else h
        b_h = hh if self.bh == "bh1" else math.expm1(hh)
        g = np.array([hh * phi(j + 1, hh) * math.factorial(j) / b_h for j in range(1, p + 1)])
        if simplified:
            return hh, b_h, np.array([0.5])
        R = np.array([[r ** (j - 1) for r in rks] for j in range(1, p + 1)])
        return hh, b_h, np.linalg.solve(R, g)

    def _update(self, x_s, s: int, t: int, points, m_s, p: int, simplified: bool):
        """x_t from x_s with the earlier points [(r_k, D_k)] (UniP) or with r_p = 1 too (UniC)."""
        h = self.lam[t] - self.lam[s]
        hh, b_h, a = self._coefficients(h, [r for r, _ in points], p, simplified) if points else \
            (-h if self.config["predict_x0"] else h, 0.0, [])
        correction = sum(a_k * d for a_k, (_, d) in zip(a, points)) if points else 0.0
        if self.config["predict_x0"]:
            return self.sigma_t[t] / self.sigma_t[s] * x_s - self.alpha[t] * (math.expm1(hh) * m_s + b_h * correction)
        return self.alpha[t] / self.alpha[s] * x_s - self.sigma_t[t] * (math.expm1(hh) * m_s + b_h * correction)

    def _points(self, s: int, count: int):
        h_next = self.lam[s + 1] - self.lam[s]
        rks = [(self.lam[s - k] - self.lam[s]) / h_next for k in range(1, count)]
        return [(r, (self.m[s - k] - self.m[s]) / r) for k, r in enumerate(rks, start=1)]

    def step(self, i: int, model_output, sample, noise=None) -> RefStep:
        self._in_order(i)
        x = as64(sample)
        x0_raw = self.data_prediction(i, model_output, x)
        x0 = self.clip_x0(x0_raw)
        m_i = x0 if self.config["predict_x0"] else self.noise_prediction(i, model_output, x)
        if i > 0 and (i - 1) not in list(self.config["disable_corrector"] or []):
            p, s = self.last_order, i - 1
            points = self._points(s, p) + [(1.0, m_i - self.m[s])]
            x = self._update(self.last_x, s, i, points, self.m[s], p, simplified=p == 1)
        self.m.append(m_i)
        p = min(self.config["solver_order"], i + 1)
        if self.config["lower_order_final"]:
            p = min(p, self.num_inference_steps - i)
        self.last_x, self.last_order = x, p
        prev = self._update(x, i, i + 1, self._points(i, p), m_i, p - 1, simplified=p == 2)
        used = x0 if self.config["predict_x0"] else (as64(sample) - self.sigma_t[i] * m_i) / self.alpha[i]
        return RefStep(prev, used, x0_raw, 0.0)
