"""Float64 references of the samplers ppddpm records, written from the papers (MATH.md, "References").

numpy only: nothing of ppdiffusers, paddle, or the rest of ppddpm is imported here, so a test or
`ppddpm verify` that holds a float32 run against these measures the formula, not shared code.

- ddpm.py       Ho et al. 2020 in the original TF code's names (q_sample, p_sample, ...), DDIM's
                `generalized_step`, and `DDPMReference`;
- ddim.py       `DDIMReference` (Song et al. 2021, eqs. 12 and 16);
- pndm.py       `PNDMReference` (Liu et al. 2022: PRK warm-up, PLMS, the transfer φ of eq. 11);
- karras.py     `EulerReference`, `EulerAncestralReference`, `HeunReference`, `LMSReference`
                (Karras et al. 2022, Algs. 1-2, in σ-space);
- dpmsolver.py  `DPMSolverMultistepReference` (Lu et al. 2022, DPM-Solver(++) multistep, and the SDE
                solvers of DPM-Solver++ §5);
- exp_integrator.py  the grid and α/σ/λ tables of the exponential integrators, used by
                dpmsolver_singlestep.py (Lu et al. 2022, singlestep), deis.py (Zhang & Chen 2023, ρAB-DEIS)
                and unipc.py (Zhao et al. 2023, UniP/UniC);
- sigma_space.py  two-call σ-space samplers, used by kdpm2.py (DPM-2 and its ancestral form, Karras et
                al. 2022's notation) and dpmsolver_sde.py (DPM-Solver++(2S), ancestral);
- lcm.py        `LCMReference` (Luo et al. 2023, consistency boundary conditions);
- edm.py        `EDMEulerReference` (Karras et al. 2022, eq. 5 and Table 1);
- schedules.py  β / ᾱ / σ tables and timestep grids from a scheduler config;
- bound.py      the variational bound term by term (Ho et al. 2020, eqs. 3, 5, 12, 13; the TF code's
                `normal_kl`, `discretized_gaussian_log_likelihood`, `_vb_terms_bpd`, `_prior_bpd`);
- base.py       `SamplerReference` (the interface) and `RefStep` (what a step returns).

`REFERENCES` maps each sampler family name of `ppddpm.core.adapters` to its reference class;
`reference_for(family, config, num_inference_steps, **step_kwargs)` builds one.
"""
from __future__ import annotations

from typing import Mapping

from .base import (RefStep, SamplerReference, SigmaReference, VPReference, dynamic_threshold, eps_from_x0,
                   x0_from_prediction)
from .ddim import DDIMReference
from .dpmsolver import DPMSolverMultistepReference
from .karras import EulerAncestralReference, EulerReference, HeunReference, LMSReference, lagrange_integral
from .pndm import PNDMReference, pndm_transfer
from .ddpm import (DDPMReference, Schedule, compute_alpha, ddim_sigma, ddim_update, generalized_step,
                   p_mean_direct, p_mean_variance, p_sample, posterior_coefficients, posterior_coefficients_of,
                   predict_start_from_noise,
                   q_posterior_mean_variance, q_sample, q_step, training_losses)
from .bound import (approx_standard_normal_cdf, discretized_gaussian_log_likelihood, eq12_constant, eq12_weight,
                    model_log_variance, normal_kl, posterior_log_variance_clipped, prior_bpd, q_posterior,
                    standard_normal_cdf, vb_terms_bpd)
from .deis import DEISReference
from .dpmsolver_sde import DPMSolverSDEReference
from .dpmsolver_singlestep import DPMSolverSinglestepReference
from .edm import EDMEulerReference
from .kdpm2 import KDPM2AncestralReference, KDPM2Reference
from .lcm import LCMReference
from .unipc import UniPCReference
from .schedules import (alpha_sigma_from_sigma, alphas_cumprod_from_betas, betas_from_config, sigma_at,
                        sigmas_from_alphas_cumprod, spaced_timesteps)

REFERENCES = {cls.family: cls for cls in (DDPMReference, DDIMReference, PNDMReference, EulerReference,
                                          EulerAncestralReference, HeunReference, LMSReference,
                                          DPMSolverMultistepReference)}
REFERENCES.update({cls.family: cls for cls in (KDPM2Reference, KDPM2AncestralReference, DEISReference,
                                                DPMSolverSinglestepReference, UniPCReference, LCMReference,
                                                DPMSolverSDEReference, EDMEulerReference)})


def reference_for(family: str, config: Mapping, num_inference_steps: int, **step_kwargs) -> SamplerReference:
    """The float64 reference of sampler `family` (a `ppddpm.core.adapters` family name) for a scheduler
    config and a number of inference steps; step_kwargs as the pipeline passed them to `step`."""
    cls = REFERENCES.get(family)
    if cls is None:
        raise NotImplementedError(f"no float64 reference for sampler family {family!r}; "
                                  f"references exist for: {', '.join(REFERENCES)}")
    return cls(config, num_inference_steps, **step_kwargs)


__all__ = ["REFERENCES", "RefStep", "SamplerReference", "SigmaReference", "VPReference", "reference_for",
           "DDIMReference", "DPMSolverMultistepReference", "EulerAncestralReference", "EulerReference",
           "HeunReference", "LMSReference", "PNDMReference", "lagrange_integral", "pndm_transfer",
           "DDPMReference", "Schedule", "compute_alpha", "ddim_sigma", "ddim_update", "generalized_step",
           "p_mean_direct", "p_mean_variance", "p_sample", "posterior_coefficients", "posterior_coefficients_of",
           "predict_start_from_noise",
           "q_posterior_mean_variance", "q_sample", "q_step", "training_losses", "alpha_sigma_from_sigma",
           "alphas_cumprod_from_betas", "betas_from_config", "sigma_at", "sigmas_from_alphas_cumprod",
           "spaced_timesteps", "dynamic_threshold", "eps_from_x0", "x0_from_prediction",
           "approx_standard_normal_cdf", "discretized_gaussian_log_likelihood", "eq12_constant", "eq12_weight",
           "model_log_variance", "normal_kl", "posterior_log_variance_clipped", "prior_bpd", "q_posterior",
           "standard_normal_cdf", "vb_terms_bpd"]
