"""Noise schedules and timestep grids in float64, derived from a scheduler's config by meaning.

Every sampler reference starts here: the training betas β_t (from the config's `beta_schedule`
or `trained_betas`), ᾱ_t = ∏_{s≤t}(1 − β_s) (Ho et al. 2020, eq. 4's notation), the inference
grid of timesteps (`spaced_timesteps`), and the σ-parameterisation σ_t = √((1−ᾱ_t)/ᾱ_t) that
the Euler-type samplers integrate in (Karras et al. 2022, Table 1, "VP": σ(t) with x = x_t/√ᾱ_t).

Timesteps are 0-indexed like ppdiffusers' (its t is the DDPM paper's t+1).

Conventions that are in no sampler paper, written from their documented meaning:
- the three timestep spacings "linspace", "leading", "trailing" are Lin et al. 2023 ("Common
  Diffusion Noise Schedules and Sample Steps are Flawed", arXiv 2305.08891), Table 2;
  `steps_offset` shifts the "leading" grid only (Stable Diffusion's offset of 1, documented in
  ppdiffusers' scheduler docstrings as "an offset added to the inference steps").
- σ at a non-integer timestep (the "linspace" grid of the Euler-type schedulers is not rounded) is
  the linear interpolation in t between the two neighbouring training timesteps (`sigma_at`).
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

# The beta-schedule keys every ppdiffusers scheduler shares, with their defaults.
BETA_DEFAULTS = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                 "trained_betas": None}
SPACINGS = ("linspace", "leading", "trailing")


def cosine_alpha_bar(t: float, s: float = 0.008) -> float:
    """Nichol & Dhariwal 2021, eq. (17) without the normalisation: f(t) = cos²((t + s)/(1 + s) · π/2), t in [0, 1]."""
    return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2


def betas_from_config(config: Mapping) -> np.ndarray:
    """β_1..β_T in float64 from a scheduler config (missing keys take BETA_DEFAULTS).

    - trained_betas: the given values;
    - linear: β from beta_start to beta_end evenly (Ho et al. 2020, §4);
    - scaled_linear: √β evenly from √beta_start to √beta_end, squared (Rombach et al. 2022, latent diffusion);
    - squaredcos_cap_v2: Nichol & Dhariwal 2021 eq. (17), β_t = 1 − ᾱ(t/T)/ᾱ((t−1)/T) capped at 0.999
      ("we clip β_t to be no larger than 0.999", §3.2);
    - sigmoid: β from a sigmoid over [−6, 6] rescaled to [beta_start, beta_end] (GeoDiff, Xu et al. 2022).
    `rescale_betas_zero_snr` (Lin et al. 2023, Alg. 1) is not covered: it makes σ_T infinite."""
    cfg = {**BETA_DEFAULTS, **{k: v for k, v in dict(config).items() if k in BETA_DEFAULTS}}
    if dict(config).get("rescale_betas_zero_snr", False):
        raise NotImplementedError("rescale_betas_zero_snr=True (zero terminal SNR) is not covered by the float64 "
                                  "references")
    T, kind = int(cfg["num_train_timesteps"]), cfg["beta_schedule"]
    if cfg["trained_betas"] is not None:
        return np.asarray(cfg["trained_betas"], np.float64)
    if kind == "linear":
        return np.linspace(cfg["beta_start"], cfg["beta_end"], T, dtype=np.float64)
    if kind == "scaled_linear":
        return np.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, T, dtype=np.float64) ** 2
    if kind == "squaredcos_cap_v2":
        return np.array([min(1 - cosine_alpha_bar((i + 1) / T) / cosine_alpha_bar(i / T), 0.999) for i in range(T)])
    if kind == "sigmoid":
        return 1 / (1 + np.exp(-np.linspace(-6, 6, T))) * (cfg["beta_end"] - cfg["beta_start"]) + cfg["beta_start"]
    raise NotImplementedError(f"beta_schedule={kind!r} is not covered by the float64 references "
                              "(linear, scaled_linear, squaredcos_cap_v2, sigmoid, or trained_betas)")


def alphas_cumprod_from_betas(betas) -> np.ndarray:
    """ᾱ_t = ∏_{s≤t} (1 − β_s) (Ho et al. 2020, notation of eq. 4)."""
    return np.cumprod(1.0 - np.asarray(betas, np.float64))


def spaced_timesteps(num_train_timesteps: int, num_inference_steps: int, spacing: str, steps_offset: int = 0,
                     round_linspace: bool = True) -> np.ndarray:
    """The n timesteps a sampler visits, in call order (descending), float64. Lin et al. 2023, Table 2:
    - "linspace": n points evenly from 0 to T−1 inclusive (rounded to integers when `round_linspace`;
      the Euler-type schedulers keep them fractional and interpolate σ, see `sigma_at`);
    - "leading":  k · ⌊T/n⌋ for k = 0..n−1, plus `steps_offset` (the grid starts at 0, leaves the top);
    - "trailing": round(T − k · T/n) − 1 for k = 0..n−1 (the grid starts at T−1, leaves the bottom).
    Lin et al.'s Table 2 is 1-indexed; these are ppdiffusers' 0-indexed timesteps."""
    T, n = int(num_train_timesteps), int(num_inference_steps)
    if not 1 <= n <= T:
        raise ValueError(f"num_inference_steps must be between 1 and num_train_timesteps={T}; got {n}")
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, n, dtype=np.float64)
        ts = np.round(ts) if round_linspace else ts
    elif spacing == "leading":
        ts = np.arange(n, dtype=np.float64) * (T // n) + steps_offset
    elif spacing == "trailing":
        # Lin et al. write it with arange(T, 0, −T/n), whose floating step decides the ties at .5; by
        # rounding, arange can also give n + 1 points (n = 61, 103, ...): the grid has n.
        return np.round(np.arange(T, 0, -T / n, dtype=np.float64))[:n] - 1
    else:
        raise NotImplementedError(f"timestep_spacing={spacing!r} is not one of {', '.join(SPACINGS)}")
    return ts[::-1].copy()


def solver_timesteps(num_train_timesteps: int, num_inference_steps: int, spacing: str,
                     steps_offset: int = 0) -> np.ndarray:
    """The n timesteps of the exponential-integrator solvers (DPM-Solver, DEIS, UniPC): they step from
    the first timestep to the data end, so their "linspace" and "leading" grids have n + 1 points
    with both ends and the model is called at all but the last (t = 0); "trailing" is Table 2's grid
    of n. A convention of the implementations, written from that meaning. With n = T the n + 1
    points of "linspace" round to repeated timesteps, as they do in ppdiffusers."""
    T, n = int(num_train_timesteps), int(num_inference_steps)
    if not 1 <= n <= T:
        raise ValueError(f"num_inference_steps must be between 1 and num_train_timesteps={T}; got {n}")
    if spacing == "trailing":
        return spaced_timesteps(T, n, "trailing")
    if spacing == "linspace":
        return np.round(np.linspace(0, T - 1, n + 1, dtype=np.float64))[::-1][:-1].copy()
    if spacing == "leading":
        return (np.arange(n + 1, dtype=np.float64) * (T // (n + 1)))[::-1][:-1] + steps_offset
    raise NotImplementedError(f"timestep_spacing={spacing!r} is not one of {', '.join(SPACINGS)}")


def sigmas_from_alphas_cumprod(alphas_cumprod) -> np.ndarray:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t): the noise level of x_t/√ᾱ_t (Karras et al. 2022, Table 1, VP; Song et al.
    2021, the VE form of a VP process)."""
    ab = np.asarray(alphas_cumprod, np.float64)
    return np.sqrt((1.0 - ab) / ab)


def sigma_at(timesteps, sigmas) -> np.ndarray:
    """σ at (possibly fractional) timesteps: linear interpolation in t between the integer training
    timesteps. A convention of the Euler-type schedulers (k-diffusion's `t_to_sigma` for discrete
    models, kept by ppdiffusers 0.29), not a paper's formula."""
    return np.interp(np.asarray(timesteps, np.float64), np.arange(len(sigmas), dtype=np.float64), sigmas)


def alpha_sigma_from_sigma(sigma):
    """(α_t, σ_t) of the VP process from the σ-parameterisation s = √((1−ᾱ)/ᾱ): α_t = √ᾱ = 1/√(s²+1),
    σ_t = √(1−ᾱ) = s/√(s²+1) (Lu et al. 2022's α_t, σ_t)."""
    alpha = 1.0 / np.sqrt(np.asarray(sigma, np.float64) ** 2 + 1.0)
    return alpha, sigma * alpha
