"""DPM-Solver / DPM-Solver++ singlestep, orders 1–3 (Lu et al., "DPM-Solver", NeurIPS 2022, Algs. 1–2:
DPM-Solver-2 and -3 with general r_1, r_2; "DPM-Solver++", arXiv 2211.01095, Alg. 1 DPM-Solver++(2S)).

A k-th order step from s to t (h = λ_t − λ_s) evaluates the model k − 1 more times at intermediate
points. Here they are the next grid points: calls run in groups 1, 2(, 3); an order-1 call starts a
group at s (keeps x_s, a first-order step to the next grid point, the model's next input), the
order-j call of the group steps from the kept x_s to the grid point after it with the outputs
D_s, D_{u1}(, D_{u2}) of the group, r_j = (λ_{u_j} − λ_s)/h. In the exponential-integrator form
(their eq. 3.6 expanded in λ − λ_s, φ as in exp_integrator.phi, hh = −h for data prediction,
+h for noise prediction):
    DPM-Solver++ (D = x̂_0):  x_t = (σ_t/σ_s) x_s − α_t hh [φ_1 D_0 + φ_2 D_1 + φ_3 D_2]
    DPM-Solver   (D = ε):    x_t = (α_t/α_s) x_s − σ_t hh [φ_1 D_0 + φ_2 D_1 + φ_3 D_2]
with D_0 = D_s and the divided differences in λ/h:
    order 2 (u = u1, r = r_1):   "heun": D_1 = (D_u − D_s)/r;  "midpoint" (the papers' algorithms,
        their (1 − 1/(2r)) D_s + 1/(2r) D_u): φ_2 D_1 replaced by ½ φ_1 (D_u − D_s)/r;
    order 3 (u1, u2 = r_1, r_2): "heun": D_1, D_2 the first and second derivative estimates of
        the quadratic through (0, D_s), (r_1, D_u1), (r_2, D_u2) (D_2 = 2·second divided difference);
        "midpoint" (DPM-Solver-3's Alg. 2 form): φ_2 (D_u2 − D_s)/r_2 only, no φ_3 term.
Order 1 is DDIM in λ (their eq. 4.1 / ++'s first-order update).

The order pattern (ppdiffusers' `lower_order_final`, from its meaning: whole groups, shortened at
the end so that the last step is of low order; without it the groups must divide n) and the last
step landing on t = 0 (exp_integrator.py).
"""
from __future__ import annotations

from .base import RefStep, as64
from .exp_integrator import ExponentialIntegratorReference, phi


def order_pattern(n: int, order: int, lower_order_final: bool) -> list:
    """The order of each of n calls: groups 1..order; with `lower_order_final` the tail is cut so the
    run ends on a short group (order 3: …, 1, 2, 1 when 3 | n; …, 1 or …, 1, 2 otherwise)."""
    if order == 1:
        return [1] * n
    group = list(range(1, order + 1))
    if not lower_order_final and n % order == 0:
        return group * (n // order)
    if order == 2:
        return group * (n // 2) + [1] * (n % 2)
    tail = {0: [1, 2, 1], 1: [1], 2: [1, 2]}[n % 3]
    return group * ((n - len(tail)) // 3) + tail


class DPMSolverSinglestepReference(ExponentialIntegratorReference):
    family, multistep, stochastic = "dpmsolver-singlestep", True, False
    DEFAULTS = {"solver_order": 2, "prediction_type": "epsilon", "thresholding": False,
                "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "algorithm_type": "dpmsolver++",
                "solver_type": "midpoint", "lower_order_final": True, "use_karras_sigmas": False,
                "lambda_min_clipped": -float("inf"), "variance_type": None}
    SUPPORTED = {"solver_order": (1, 2, 3), "algorithm_type": ("dpmsolver++", "dpmsolver"),
                 "solver_type": ("midpoint", "heun"), "use_karras_sigmas": (False, None),
                 "lambda_min_clipped": (-float("inf"),),
                 # only "learned" variances change the step (the model's variance channels are dropped)
                 "variance_type": (None, "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")}

    def setup(self) -> None:
        self.setup_solver_grid("linspace")
        self.orders = order_pattern(self.num_inference_steps, self.config["solver_order"],
                                    self.config["lower_order_final"])
        self.outputs, self.kept = {}, None

    def taylor_terms(self, s: int, order: int, h: float, hh: float):
        """φ_1 D_0 + φ_2 D_1 + φ_3 D_2 for the group starting at call s (see the module docstring)."""
        d, midpoint = [self.outputs[s + j] for j in range(order)], self.config["solver_type"] == "midpoint"
        r = [(self.lam[s + j] - self.lam[s]) / h for j in range(order)]
        total = phi(1, hh) * d[0]
        if order == 2:
            slope = (d[1] - d[0]) / r[1]
            total = total + (0.5 * phi(1, hh) if midpoint else phi(2, hh)) * slope
        elif order == 3 and midpoint:
            total = total + phi(2, hh) * (d[2] - d[0]) / r[2]
        elif order == 3:
            s1, s2 = (d[1] - d[0]) / r[1], (d[2] - d[0]) / r[2]
            second = 2 * (s2 - s1) / (r[2] - r[1])                   # D_2: twice the second divided difference
            total = total + phi(2, hh) * (s1 - second / 2 * r[1]) + phi(3, hh) * second
        return total

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
        hh = -h if plus else h
        scale, carry = (self.alpha[t], self.sigma_t[t] / self.sigma_t[s]) if plus else \
            (self.sigma_t[t], self.alpha[t] / self.alpha[s])
        prev = carry * self.kept - scale * hh * self.taylor_terms(s, order, h, hh)
        used = x0 if plus else (x - self.sigma_t[i] * self.outputs[i]) / self.alpha[i]
        return RefStep(prev, used, x0_raw, 0.0)
