"""One adapter per scheduler family: what a step of that sampler *is*, said in one vocabulary.

Every ppdiffusers sampler turns (x_t, model output) into a guess of x_0 and a next sample
(MATH.md, "Other samplers"). An adapter tells, for its family:

- `pred_original_sample_unclipped`   x̂_0 before any clipping: eq. (15) for the variance-preserving
             schedulers (DDPM, DDIM, PNDM, DPMSolver), `x − σ·ε` in the σ-parameterisation of the
             Euler-type schedulers (`σ = √((1−ᾱ)/ᾱ)`, the same guess written in their space);
- `pred_original_sample`   x̂_0 as the step used it: returned by the step (DDPM, DDIM, Euler, …), or
             read from the state the step keeps (DPMSolver's data prediction), or reconstructed;
- `clip_fraction`   the share of x̂_0's values the step's clipping or thresholding changes;
- `numbers`  the step's per-step columns (`ppddpm.core.columns`) that the family knows, given the
             step's t as a host number: `noise_std`, the std of the noise the step added (0 for ODE
             samplers), and ᾱ_t, ᾱ_prev (variance-preserving samplers) or σ_t, σ_prev (σ-space
             samplers) — numbers or 0-d device tensors, never a host read;
- `run`      calls the step and observes the noise z it added: passed in as data where the
             scheduler takes it (`variance_noise`), else replayed from the RNG state the draw
             started from — the only place in ppddpm that rewinds a random stream;
- `stage`    which evaluation of a timestep this is (Heun: "predictor" then "corrector");
- `stateful` whether the scheduler keeps state between steps (history, stage, step index),
             so that `compare` gives every variant its own copy.

`adapter_for(scheduler)` picks the adapter; `scheduler_of(target)` finds a supported scheduler
behind a pipeline, or says in one line what is supported.
"""
from __future__ import annotations

import math
import warnings

from typing import Dict, List, Optional

from ppddpm.core import rng as _rng
from ppddpm.core.formulas import (clip_fraction, clip_x0, clipping_in_force, ddim_alphas, ddim_previous_timestep,
                                  ddpm_noise_std, draw_noise, x0_by_eq15, x0_by_sigma)
from ppddpm.errors import BadType, BadValue
from ppddpm.storage.format import timestep_value


class HostTables:
    """Host copies of a scheduler's constant tables (`sigmas`), each read from the device once
    per table object, so that per-step σ arithmetic (Euler's churn, the ancestral σ_up) reads nothing."""

    def __init__(self, scheduler):
        self.scheduler, self._copies = scheduler, {}

    def __call__(self, name: str):
        table = getattr(self.scheduler, name)
        kept = self._copies.get(name)
        if kept is None or kept[0] is not table:      # set_timesteps makes a new table
            kept = self._copies[name] = (table, table.numpy() if hasattr(table, "numpy") else table)
        return kept[1]


class Adapter:
    """The generic fallback: any scheduler whose step returns `pred_original_sample`."""

    family = "generic"
    classes: tuple = ()          # scheduler class names this adapter serves (and their subclasses)
    stateful = True              # unknown: assume it keeps state
    draws = "unknown"            # how z reaches the step: "never", "rng" (global/named stream), "argument",
                                 # "tree" (a Brownian-tree noise sampler the scheduler keeps)
    clipping: tuple = ()         # the config switches of x̂_0 clipping its step honours
    columns: tuple = ("noise_std",)      # the per-step columns `numbers` fills (`ppddpm.core.columns`)
    noise = "std of the noise the step added"   # what `noise_std` is for this family, as pictures label it

    def matches(self, cls) -> bool:
        return any(k.__name__ in self.classes for k in cls.__mro__)

    # ---- before the call
    def before(self, scheduler, model_output, timestep, sample, extra) -> dict:
        """What must be read before the step changes the scheduler's state."""
        return {}

    def stage(self, scheduler, ctx) -> str:
        return ""

    # ---- the step itself, with its noise observed
    def adds_noise(self, scheduler, timestep, extra, ctx) -> bool:
        return False

    def run(self, call, scheduler, model_output, timestep, sample, extra, ctx, want_noise: bool):
        """(output, z): z is None when the step added no noise or it was not asked for."""
        if want_noise and self.draws == "rng" and self.adds_noise(scheduler, timestep, extra, ctx):
            generator = extra.get("generator")
            with _rng.STEP_LOCK:
                before = _rng.snapshot(generator)
                out = call()
                z = _rng.replay_noise(generator, before, model_output.shape, model_output.dtype)
            return out, z
        return call(), None

    # ---- after the call
    def pred_original_sample_unclipped(self, scheduler, model_output, timestep, sample, ctx, out):
        return self.pred_original_sample(scheduler, model_output, timestep, sample, ctx, out)

    def pred_original_sample(self, scheduler, model_output, timestep, sample, ctx, out):
        return getattr(out, "pred_original_sample", None)

    def pred_original_sample_of(self, scheduler, model_output, timestep, sample, ctx):
        """x̂_0 before clipping that this call's formula makes of `model_output` — another output than the
        one the step took, such as a half of a guided batch — without running the step."""
        return self.pred_original_sample_unclipped(scheduler, model_output, timestep, sample, ctx, None)

    def clip_fraction(self, scheduler, unclipped, groups: Optional[int] = None):
        """The share of x̂_0's values (`unclipped`: before clipping) that the step's clipping changes —
        of each of `groups` batches stacked in it — as a device tensor (0.0: nothing clipped, or x̂_0
        before clipping unknown); the switches this family's step honours (`clipping`)."""
        if unclipped is None:
            return 0.0
        return clip_fraction(scheduler.config, unclipped, self.clipping, groups)

    def noise_std(self, scheduler, t, extra, ctx, tables):
        """std of the noise added at host timestep `t`: a number or a 0-d device tensor."""
        return 0.0

    def numbers(self, scheduler, t, extra, ctx, tables) -> dict:
        """The family's per-step columns (`columns`) of the call at host timestep `t`, by name."""
        return {"noise_std": self.noise_std(scheduler, t, extra, ctx, tables)}

    def __repr__(self):
        return f"<ppddpm sampler adapter {self.family}>"


class VPAdapter(Adapter):
    """Samplers that step x_t of the variance-preserving process itself: their numbers add ᾱ_t of the
    step's input and ᾱ_prev of its output (`alphas`)."""

    columns = ("noise_std", "alpha_bar", "alpha_bar_prev")

    def alphas(self, scheduler, t, ctx, tables) -> tuple:
        """(ᾱ_t, ᾱ_prev) of the call at host timestep `t`: numbers or 0-d device tensors."""
        raise NotImplementedError

    def numbers(self, scheduler, t, extra, ctx, tables) -> dict:
        alpha_bar, alpha_bar_prev = self.alphas(scheduler, t, ctx, tables)
        return dict(super().numbers(scheduler, t, extra, ctx, tables), alpha_bar=alpha_bar,
                    alpha_bar_prev=alpha_bar_prev)


class DDPMAdapter(VPAdapter):
    family, classes, stateful, draws = "ddpm", ("DDPMScheduler", "DDPMParallelScheduler"), False, "rng"
    noise = "σ_t, std of the added noise (Alg. 2, line 4; σ_t² = β̃_t, eq. 7)"
    clipping = ("thresholding", "clip_sample")
    LEARNED = ("learned", "learned_range")

    def _split(self, scheduler, model_output, sample):
        if model_output.shape[1] == sample.shape[1] * 2 and scheduler.variance_type in self.LEARNED:
            return model_output[:, : sample.shape[1]], model_output[:, sample.shape[1]:]
        return model_output, None

    def adds_noise(self, scheduler, timestep, extra, ctx):
        return timestep_value(timestep) > 0          # Algorithm 2, line 4: no noise at the last step

    def pred_original_sample_unclipped(self, scheduler, model_output, timestep, sample, ctx, out):
        eps, _ = self._split(scheduler, model_output, sample)
        return x0_by_eq15(scheduler.alphas_cumprod[timestep], eps, sample, scheduler.config.prediction_type)

    def noise_std(self, scheduler, t, extra, ctx, tables):
        """σ_t as the stock step takes it from `_get_variance` (`ppddpm.core.formulas.ddpm_noise_std`);
        for learned variances the mean over elements of the per-element σ."""
        _, predicted = self._split(scheduler, ctx["model_output"], ctx["sample"]) if ctx else (None, None)
        std = ddpm_noise_std(scheduler, int(t), predicted_variance=predicted)
        return std.mean() if hasattr(std, "mean") else std

    def alphas(self, scheduler, t, ctx, tables):
        """ᾱ_t and ᾱ of the timestep the step goes to (`previous_timestep`; 1 past the end), as `step` reads them."""
        prev = scheduler.previous_timestep(int(t))
        return scheduler.alphas_cumprod[int(t)], scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.one

    def before(self, scheduler, model_output, timestep, sample, extra):
        if scheduler.variance_type in self.LEARNED:      # σ then depends on the model's output
            return {"model_output": model_output, "sample": sample}
        return {}


class DDIMAdapter(VPAdapter):
    """DDIM (Song et al. 2020): takes its noise as an argument, `variance_noise`."""

    family, classes, stateful, draws = "ddim", ("DDIMScheduler", "DDIMParallelScheduler"), False, "argument"
    noise = "σ_t(η) = η·√((1−ᾱ_prev)/(1−ᾱ_t)·(1−ᾱ_t/ᾱ_prev)), std of the added noise (eq. 16)"
    clipping = ("thresholding", "clip_sample")

    def adds_noise(self, scheduler, timestep, extra, ctx):
        return extra.get("eta", 0.0) > 0            # the stock step draws (and adds σ z) only when η > 0

    def run(self, call, scheduler, model_output, timestep, sample, extra, ctx, want_noise):
        """Noise as data: the z DDIM would draw (`randn_tensor(model_output.shape, generator)`)
        is drawn here, the same draw, and handed to the step as `variance_noise`."""
        if not self.adds_noise(scheduler, timestep, extra, ctx):
            return call(), None
        z = extra.get("variance_noise")
        if z is None:
            z = draw_noise(model_output, extra.get("generator"))
            return call(variance_noise=z, generator=None), z
        return call(), z

    def pred_original_sample_unclipped(self, scheduler, model_output, timestep, sample, ctx, out):
        return x0_by_eq15(scheduler.alphas_cumprod[timestep], model_output, sample, scheduler.config.prediction_type)

    def noise_std(self, scheduler, t, extra, ctx, tables):
        """eq. (16): σ_t(η) = η·√(_get_variance(t, prev)), the std the step multiplies z by."""
        eta = extra.get("eta", 0.0)
        if not eta > 0:
            return 0.0
        return eta * scheduler._get_variance(int(t), ddim_previous_timestep(scheduler, int(t))) ** 0.5

    def alphas(self, scheduler, t, ctx, tables):
        return ddim_alphas(scheduler, int(t), ddim_previous_timestep(scheduler, int(t)))


class PNDMAdapter(VPAdapter):
    """PNDM: Runge–Kutta warm-up (4 calls per step) then linear multistep; returns no x̂_0, so it
    is eq. (15) on the model output of this call."""

    family, classes, stateful, draws = "pndm", ("PNDMScheduler",), True, "never"
    noise = "std of the added noise (none: PNDM is an ODE solver)"

    def before(self, scheduler, model_output, timestep, sample, extra):
        prk = scheduler.counter < len(scheduler.prk_timesteps) and not scheduler.config.skip_prk_steps
        return {"stage": f"prk{scheduler.counter % 4 + 1}" if prk else "plms", "counter": scheduler.counter}

    def stage(self, scheduler, ctx):
        return ctx["stage"]

    def pred_original_sample(self, scheduler, model_output, timestep, sample, ctx, out):
        return x0_by_eq15(scheduler.alphas_cumprod[timestep], model_output, sample, scheduler.config.prediction_type)

    def alphas(self, scheduler, t, ctx, tables):
        """ᾱ at the call's t and at the timestep its update goes to, as `step_prk` / `step_plms` take it: a
        PRK call goes half a step (odd calls: none), a PLMS call a step (the second: none, it redoes t)."""
        ratio, counter = scheduler.config.num_train_timesteps // scheduler.num_inference_steps, ctx["counter"]
        if ctx["stage"] != "plms":
            prev = int(t) - (0 if counter % 2 else ratio // 2)
        else:
            prev = int(t) if counter == 1 else int(t) - ratio
        prev_alpha = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod
        return scheduler.alphas_cumprod[int(t)], prev_alpha


class _SigmaAdapter(Adapter):
    """Euler-type schedulers: samples live in the σ-parameterisation (x = x_t/√ᾱ_t,
    `init_noise_sigma`, `scale_model_input`); the step index is kept between calls. Their numbers
    add the noise level σ of the step's input and of its output (`levels`)."""

    stateful, draws = True, "never"
    columns = ("noise_std", "noise_level", "noise_level_prev")
    noise = "std of the added noise (none: an ODE step)"

    def before(self, scheduler, model_output, timestep, sample, extra):
        if scheduler.step_index is None:
            scheduler._init_step_index(timestep)      # what the step does first; idempotent
        return {"index": scheduler.step_index}

    def pred_original_sample_unclipped(self, scheduler, model_output, timestep, sample, ctx, out):
        return x0_by_sigma(scheduler.sigmas[ctx["index"]], model_output, sample, scheduler.config.prediction_type)

    def levels(self, scheduler, ctx, tables) -> tuple:
        """(σ of the step's input x_t, σ of the x_{t−1} it makes): one step along `sigmas`."""
        sigmas, i = tables("sigmas"), ctx["index"]
        return float(sigmas[i]), float(sigmas[i + 1])

    def numbers(self, scheduler, t, extra, ctx, tables) -> dict:
        level, level_prev = self.levels(scheduler, ctx, tables)
        return dict(super().numbers(scheduler, t, extra, ctx, tables), noise_level=level, noise_level_prev=level_prev)


class EulerAdapter(_SigmaAdapter):
    """Euler (Karras et al. 2022, Alg. 2): draws z at every step; adds it only with s_churn > 0."""

    family, classes, draws = "euler", ("EulerDiscreteScheduler",), "rng"
    noise = "std of the churn noise, s_noise·√(σ̂² − σ²) (0 without s_churn)"

    def _gamma(self, scheduler, extra, ctx, tables):
        sigma = float(tables("sigmas")[ctx["index"]])
        s_churn, s_tmin, s_tmax = (extra.get(k, d) for k, d in (("s_churn", 0.0), ("s_tmin", 0.0),
                                                               ("s_tmax", float("inf"))))
        gamma = min(s_churn / (len(scheduler.sigmas) - 1), 2 ** 0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
        return sigma, gamma

    def adds_noise(self, scheduler, timestep, extra, ctx):
        return True                                   # the draw happens whatever γ is

    def pred_original_sample_unclipped(self, scheduler, model_output, timestep, sample, ctx, out):
        return out.pred_original_sample               # from the churned sample; Euler never clips

    def pred_original_sample_of(self, scheduler, model_output, timestep, sample, ctx):
        """x − σ·ε at the step's σ (before any churn: the step's own output is not there to say σ̂)."""
        return _SigmaAdapter.pred_original_sample_unclipped(self, scheduler, model_output, timestep, sample, ctx, None)

    def noise_std(self, scheduler, t, extra, ctx, tables):
        """s_noise·√(σ̂² − σ²), σ̂ = σ(1+γ): the std of the churn noise (0 without churn)."""
        sigma, gamma = self._gamma(scheduler, extra, ctx, tables)
        if gamma <= 0:
            return 0.0
        sigma_hat = sigma * (gamma + 1)
        return extra.get("s_noise", 1.0) * (sigma_hat ** 2 - sigma ** 2) ** 0.5


class EulerAncestralAdapter(_SigmaAdapter):
    family, classes, draws = "euler-ancestral", ("EulerAncestralDiscreteScheduler",), "rng"
    noise = "σ_up = √(σ_to² (σ_from² − σ_to²) / σ_from²), std of the ancestral noise"

    def adds_noise(self, scheduler, timestep, extra, ctx):
        return True

    def noise_std(self, scheduler, t, extra, ctx, tables):
        """σ_up = √(σ_to² (σ_from² − σ_to²) / σ_from²), the std of the ancestral noise."""
        s_from, s_to = (float(tables("sigmas")[ctx["index"] + k]) for k in (0, 1))
        return (s_to ** 2 * (s_from ** 2 - s_to ** 2) / s_from ** 2) ** 0.5


class LMSAdapter(_SigmaAdapter):
    family, classes = "lms", ("LMSDiscreteScheduler",)


class _TwoCallAdapter(_SigmaAdapter):
    """σ-space samplers with two model evaluations per timestep (Heun, KDPM2, DPM-Solver-SDE): the
    first call of a timestep is the "predictor" (a first-order step from x_σ), the second the
    "corrector" (the evaluation that makes the step second order); the state between them is
    `scheduler.sample`, None while the next call is a first one (`state_in_first_order`)."""

    def before(self, scheduler, model_output, timestep, sample, extra):
        ctx = super().before(scheduler, model_output, timestep, sample, extra)
        ctx["stage"] = "predictor" if scheduler.state_in_first_order else "corrector"
        return ctx

    def stage(self, scheduler, ctx):
        return ctx["stage"]


class HeunAdapter(_TwoCallAdapter):
    """Heun (Karras et al. 2022, Alg. 1): two model evaluations per timestep. The first call of a
    timestep is the Euler "predictor", the second the "corrector" (trapezoidal average); both take
    x̂_0 = x − σ·ε with σ = sigmas[step_index] read before the call. The step returns no x̂_0."""

    family, classes, clipping = "heun", ("HeunDiscreteScheduler",), ("clip_sample",)

    def pred_original_sample(self, scheduler, model_output, timestep, sample, ctx, out):
        x0 = self.pred_original_sample_unclipped(scheduler, model_output, timestep, sample, ctx, out)
        return clip_x0(scheduler.config, x0, self.clipping)


class KDPM2Adapter(_TwoCallAdapter):
    """KDPM2 (Karras et al. 2022's "DPM-2": the DPM-Solver-2 midpoint in log σ). Per timestep the
    "predictor" call takes an Euler step from σ_i to the midpoint σ_mid = √(σ_i σ_{i+1}) (the mean
    of log σ), the "corrector" call evaluates the model there and steps from the kept x_{σ_i} to
    σ_{i+1} with that slope; the last timestep (σ_{i+1} = 0) is the predictor alone. The step returns
    no x̂_0: it is x − σ·ε with the σ of that call (sigmas[step_index] for the predictor,
    sigmas_interpol[step_index] for the corrector), as the step forms it. No clipping."""

    family, classes = "kdpm2", ("KDPM2DiscreteScheduler",)

    def _sigma_of_call(self, scheduler, ctx):
        if ctx["stage"] == "predictor":
            return scheduler.sigmas[ctx["index"]]
        return scheduler.sigmas_interpol[ctx["index"]]

    def pred_original_sample_unclipped(self, scheduler, model_output, timestep, sample, ctx, out):
        return x0_by_sigma(self._sigma_of_call(scheduler, ctx), model_output, sample,
                           scheduler.config.prediction_type)

    pred_original_sample = pred_original_sample_unclipped

    def levels(self, scheduler, ctx, tables):
        """The predictor goes from σ_i to the midpoint (`sigmas_interpol[i + 1]`), the corrector from
        there (the σ its x̂_0 and `scale_model_input` take) to σ_{i+1} (`sigmas[i]`, interleaved)."""
        i = ctx["index"]
        if ctx["stage"] == "predictor":
            return float(tables("sigmas")[i]), float(tables("sigmas_interpol")[i + 1])
        return float(tables("sigmas_interpol")[i]), float(tables("sigmas")[i])


class KDPM2AncestralAdapter(KDPM2Adapter):
    """KDPM2 ancestral: DPM-2 to σ_down, then σ_up·z (the ancestral split of Euler ancestral,
    MATH.md). The step draws z from `generator` at *every* call and adds it only in the corrector:
    z is replayed from the RNG there (`ppddpm.core.rng`), and the predictor records none. Its midpoint
    is between σ_i and σ_down, so the corrector's σ is sigmas_interpol[step_index − 1]."""

    family, classes, draws = "kdpm2-ancestral", ("KDPM2AncestralDiscreteScheduler",), "rng"
    noise = "σ_up of the timestep, std of the ancestral noise (added by the corrector)"

    def _sigma_of_call(self, scheduler, ctx):
        if ctx["stage"] == "predictor":
            return scheduler.sigmas[ctx["index"]]
        return scheduler.sigmas_interpol[ctx["index"] - 1]

    def adds_noise(self, scheduler, timestep, extra, ctx):
        return ctx["stage"] == "corrector"

    def noise_std(self, scheduler, t, extra, ctx, tables):
        """σ_up = √(σ_{i+1}² (σ_i² − σ_{i+1}²) / σ_i²) of this timestep, added by the corrector only."""
        if ctx["stage"] != "corrector":
            return 0.0
        return float(tables("sigmas_up")[ctx["index"] - 1])

    def levels(self, scheduler, ctx, tables):
        """The predictor goes from σ_i to its midpoint (`sigmas_interpol[i]`, between σ_i and σ_down), the
        corrector from there to σ_{i+1} (`sigmas[i]`: σ_down plus σ_up·z)."""
        i = ctx["index"]
        if ctx["stage"] == "predictor":
            return float(tables("sigmas")[i]), float(tables("sigmas_interpol")[i])
        return float(tables("sigmas_interpol")[i - 1]), float(tables("sigmas")[i])


class DPMSolverSDEAdapter(_TwoCallAdapter):
    """DPM-Solver++ SDE (k-diffusion's `sample_dpmpp_sde`, after Lu et al. 2022 and Karras et al.
    2022): per timestep a "predictor" call from σ_i to the midpoint (t = −log σ halfway) and a
    "corrector" call there that steps from the kept x_{σ_i} to σ_{i+1}; each is a first-order
    data-prediction step to σ_down followed by σ_up·s_noise·z (the ancestral split). The last
    timestep (σ_{i+1} = 0) is one noiseless Euler step.

    z comes from a Brownian tree the scheduler keeps (`noise_sampler`, made at the first step and
    seeded from paddle's global RNG unless `noise_sampler_seed` is set), not from a draw this code
    could replay: the adapter observes the value the noise sampler returned during the call (its
    `__call__` is watched while the step runs, under `_rng.STEP_LOCK`), so z is exactly what was
    added. x̂_0 = x − σ·ε with σ_i (predictor) or the midpoint σ the predictor kept
    (`mid_point_sigma`, read before the corrector clears it). No clipping.

    On a CPU build every query of that tree reseeds paddle's global RNG (paddlesde draws with
    `paddle.Generator().manual_seed(s)`, which ppdiffusers' CPU Generator turns into `paddle.seed(s)`)
    and registers a new generator name (about 100 per timestep): draws made after such a step do not
    depend on the seed set before the run."""

    family, classes, draws = "dpmsolver-sde", ("DPMSolverSDEScheduler",), "tree"
    noise = "s_noise·σ_up, std of the ancestral noise (from a Brownian tree)"

    def before(self, scheduler, model_output, timestep, sample, extra):
        ctx = super().before(scheduler, model_output, timestep, sample, extra)
        ctx["mid_sigma"] = scheduler.mid_point_sigma
        return ctx

    def pred_original_sample_unclipped(self, scheduler, model_output, timestep, sample, ctx, out):
        sigma = scheduler.sigmas[ctx["index"]] if ctx["stage"] == "predictor" else ctx["mid_sigma"]
        return x0_by_sigma(sigma, model_output, sample, scheduler.config.prediction_type)

    pred_original_sample = pred_original_sample_unclipped

    def levels(self, scheduler, ctx, tables):
        """The predictor goes from σ_i to the midpoint √(σ_i σ_{i+1}) (halfway in −log σ; to 0 at the last
        timestep), the corrector from that midpoint (kept by the predictor) to σ_{i+1}."""
        sigmas, i = tables("sigmas"), ctx["index"]
        if ctx["stage"] == "predictor":
            return float(sigmas[i]), float((sigmas[i] * sigmas[i + 1]) ** 0.5)
        return ctx["mid_sigma"], float(sigmas[i])

    def run(self, call, scheduler, model_output, timestep, sample, extra, ctx, want_noise):
        if not want_noise:
            return call(), None
        from ppdiffusers.schedulers import scheduling_dpmsolver_sde as sde

        sampler_cls, seen = sde.BrownianTreeNoiseSampler, []
        original = sampler_cls.__dict__["__call__"]

        def watched(sampler, *args, **kwargs):
            z = original(sampler, *args, **kwargs)
            seen.append((sampler, z))
            return z

        with _rng.STEP_LOCK:
            sampler_cls.__call__ = watched
            try:
                out = call()
            finally:
                sampler_cls.__call__ = original
        mine = [z for sampler, z in seen if sampler is scheduler.noise_sampler]
        return out, (mine[-1] if mine else None)

    def noise_std(self, scheduler, t, extra, ctx, tables):
        """s_noise·σ_up, σ_up = min(σ_to, √(σ_to² (σ_from² − σ_to²) / σ_from²)) from σ_i to the
        midpoint (predictor) or from σ_i to σ_{i+1} (corrector); 0 for the final Euler step."""
        sigmas, i = tables("sigmas"), ctx["index"]
        s_from, s_next = (float(sigmas[i]), float(sigmas[i + 1])) if ctx["stage"] == "predictor" else \
            (float(sigmas[i - 1]), float(sigmas[i]))
        if s_next == 0:
            return 0.0
        s_to = (s_from * s_next) ** 0.5 if ctx["stage"] == "predictor" else s_next   # midpoint in −log σ
        s_up = min(s_to, (s_to ** 2 * (s_from ** 2 - s_to ** 2) / s_from ** 2) ** 0.5)
        return extra.get("s_noise", 1.0) * s_up


class EDMEulerAdapter(EulerAdapter):
    """EDMEuler (Karras et al. 2022, Alg. 2 with EDM's own preconditioning): x̂_0 is the step's
    D(x; σ) = c_skip x + c_out F, returned; z drawn at every step, added only with churn.
    It needs a model trained with EDM's c_in, c_noise = ¼ ln σ and σ_data (its own σ config):
    a DDPM ε-model such as the bundled one runs through it, but its outputs mean nothing there."""

    family, classes = "edm-euler", ("EDMEulerScheduler",)


class LCMAdapter(VPAdapter):
    """LCM (Luo et al. 2023): x̂_0 by eq. (15) (clipped / thresholded as configured), then the
    consistency boundary condition f(x, t) = c_skip(t) x + c_out(t) x̂_0 — the step's `denoised`,
    which is the x̂_0 it used — and x_prev = √ᾱ_prev f + √(1−ᾱ_prev) z, with z drawn from
    `generator` at every step but the last (replayed as DDPM's)."""

    family, classes, stateful, draws = "lcm", ("LCMScheduler",), True, "rng"
    noise = "√(1 − ᾱ_prev), std of the noise the consistency step adds back"
    clipping = ("thresholding", "clip_sample")

    def before(self, scheduler, model_output, timestep, sample, extra):
        if scheduler.step_index is None:
            scheduler._init_step_index(timestep)
        return {"index": scheduler.step_index}

    def adds_noise(self, scheduler, timestep, extra, ctx):
        return ctx["index"] != scheduler.num_inference_steps - 1

    def pred_original_sample_unclipped(self, scheduler, model_output, timestep, sample, ctx, out):
        return x0_by_eq15(scheduler.alphas_cumprod[timestep], model_output, sample, scheduler.config.prediction_type)

    def pred_original_sample(self, scheduler, model_output, timestep, sample, ctx, out):
        return out.denoised

    def noise_std(self, scheduler, t, extra, ctx, tables):
        """√(1 − ᾱ_prev), ᾱ_prev of the next timestep of the schedule (no noise at the last step)."""
        if not self.adds_noise(scheduler, t, extra, ctx):
            return 0.0
        return (1 - self.alphas(scheduler, t, ctx, tables)[1]) ** 0.5

    def alphas(self, scheduler, t, ctx, tables):
        """ᾱ_t and ᾱ of the schedule's next timestep (`final_alpha_cumprod` after the last)."""
        timesteps, i = tables("timesteps"), ctx["index"]
        prev_t = int(timesteps[i + 1]) if i + 1 < len(timesteps) else -1
        alpha_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.final_alpha_cumprod
        return scheduler.alphas_cumprod[int(t)], alpha_prev


class DPMSolverMultistepAdapter(VPAdapter):
    """DPM-Solver(++) multistep (Lu et al. 2022): the step keeps its data prediction x̂_0 (for the
    ++ algorithms) or noise prediction in `model_outputs[-1]`; x̂_0 is read from there."""

    family, classes, stateful, draws = "dpmsolver-multistep", ("DPMSolverMultistepScheduler",), True, "rng"
    noise = "std of the SDE solvers' noise (DPM-Solver++ §5; 0 for the ODE solvers)"
    clipping = ("thresholding",)         # applied to the data prediction of the ++ algorithms

    def before(self, scheduler, model_output, timestep, sample, extra):
        if scheduler.step_index is None:
            scheduler._init_step_index(timestep)
        return {"index": scheduler.step_index}

    def adds_noise(self, scheduler, timestep, extra, ctx):
        return scheduler.config.algorithm_type in ("sde-dpmsolver", "sde-dpmsolver++")

    def keeps_data_prediction(self, scheduler) -> bool:
        """Whether `model_outputs[-1]` is x̂_0 (else it is the noise prediction ε)."""
        return scheduler.config.algorithm_type in ("dpmsolver++", "sde-dpmsolver++")

    def _alpha_sigma(self, scheduler, ctx):
        return scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas[ctx["index"]])

    def noise_std(self, scheduler, t, extra, ctx, tables):
        """The SDE solvers' noise std on the step s → t (DPM-Solver++ §5): σ_t √(1 − e^{−2h}) with the
        data prediction, σ_t √(e^{2h} − 1) with the noise prediction, h = λ_t − λ_s. The scheduler's
        `sigmas` are √((1−ᾱ)/ᾱ), so σ_t = s/√(s²+1) and h = log(s_from/s_to). 0 for the ODE solvers."""
        if not self.adds_noise(scheduler, t, extra, ctx):
            return 0.0
        s_from, s_to = (float(tables("sigmas")[ctx["index"] + k]) for k in (0, 1))
        sigma_to, h = s_to / (s_to ** 2 + 1) ** 0.5, math.log(s_from / s_to)
        if self.keeps_data_prediction(scheduler):
            return sigma_to * (-math.expm1(-2 * h)) ** 0.5
        return sigma_to * math.expm1(2 * h) ** 0.5

    def alphas(self, scheduler, t, ctx, tables):
        """ᾱ = 1/(σ² + 1) of `sigmas[i]` and `sigmas[i + 1]` (the scheduler's σ = √((1−ᾱ)/ᾱ))."""
        sigmas, i = tables("sigmas"), ctx["index"]
        return tuple(1.0 / (float(sigmas[k]) ** 2 + 1.0) for k in (i, i + 1))

    def pred_original_sample_unclipped(self, scheduler, model_output, timestep, sample, ctx, out):
        """eq. (15) in DPM-Solver's notation: x̂_0 = (x_t − σ_t ε) / α_t (before thresholding)."""
        alpha_t, sigma_t = self._alpha_sigma(scheduler, ctx)
        kind = scheduler.config.prediction_type
        if kind == "epsilon":
            return (sample - sigma_t * model_output) / alpha_t
        if kind == "sample":
            return model_output
        if kind == "v_prediction":
            return alpha_t * sample - sigma_t * model_output
        raise BadValue(f"prediction_type={kind!r} is not one of epsilon, sample, v_prediction")

    def pred_original_sample(self, scheduler, model_output, timestep, sample, ctx, out):
        kept = scheduler.model_outputs[-1]
        if self.keeps_data_prediction(scheduler):
            return kept                                   # the data prediction the update used
        alpha_t, sigma_t = self._alpha_sigma(scheduler, ctx)
        return (sample - sigma_t * kept) / alpha_t        # from the noise prediction it used


class DPMSolverSinglestepAdapter(DPMSolverMultistepAdapter):
    """DPM-Solver(++) singlestep (Lu et al. 2022, Algs. 1/2 for DPM-Solver-2/3): orders cycle
    1, 2(, 3) over the timesteps, an order-k call finishing the step that began k − 1 calls earlier
    from the kept `sample`. x̂_0 as in the multistep family (kept in `model_outputs[-1]`). ODE only."""

    family, classes, draws = "dpmsolver-singlestep", ("DPMSolverSinglestepScheduler",), "never"
    noise = "std of the added noise (none: an ODE solver)"

    def adds_noise(self, scheduler, timestep, extra, ctx):
        return False

    def keeps_data_prediction(self, scheduler) -> bool:
        return scheduler.config.algorithm_type == "dpmsolver++"


class UniPCAdapter(DPMSolverSinglestepAdapter):
    """UniPC (Zhao et al. 2023): each call first corrects the sample it is given with UniC (using
    this call's model output), then predicts the next one with UniP. x̂_0 is the converted model
    output it keeps (`model_outputs[-1]`: the data prediction with `predict_x0`, else ε), formed
    from the uncorrected input sample, as the step forms it."""

    family, classes = "unipc", ("UniPCMultistepScheduler",)

    def keeps_data_prediction(self, scheduler) -> bool:
        return bool(scheduler.predict_x0)


class DEISAdapter(DPMSolverSinglestepAdapter):
    """DEIS (Zhang & Chen 2023, the ρAB multistep exponential integrator in log ρ): the step keeps
    ε re-derived from the (thresholded) data prediction in `model_outputs[-1]`; x̂_0 is
    reconstructed from it by eq. (15)."""

    family, classes = "deis", ("DEISMultistepScheduler",)

    def keeps_data_prediction(self, scheduler) -> bool:
        return False


ADAPTERS: List[Adapter] = [DDPMAdapter(), DDIMAdapter(), PNDMAdapter(), EulerAdapter(), EulerAncestralAdapter(),
                           LMSAdapter(), HeunAdapter(), DPMSolverMultistepAdapter(), KDPM2Adapter(),
                           KDPM2AncestralAdapter(), UniPCAdapter(), DEISAdapter(), DPMSolverSinglestepAdapter(),
                           DPMSolverSDEAdapter(), LCMAdapter(), EDMEulerAdapter()]
GENERIC = Adapter()
_BY_CLASS: Dict[type, Adapter] = {}       # adapter_for runs at every step: look the class up once


def supported() -> str:
    names = [c for a in ADAPTERS for c in a.classes]
    return (", ".join(names) + ", or any scheduler whose step returns pred_original_sample")


def adapter_for(scheduler_or_class) -> Adapter:
    """The adapter of a scheduler (instance or class); the generic one for any other scheduler
    whose output has `pred_original_sample` (checked on its first step)."""
    cls = scheduler_or_class if isinstance(scheduler_or_class, type) else type(scheduler_or_class)
    found = _BY_CLASS.get(cls)
    if found is None:
        found = _BY_CLASS[cls] = next((a for a in ADAPTERS if a.matches(cls)), GENERIC)
    return found


def is_scheduler(obj) -> bool:
    from ppdiffusers.schedulers.scheduling_utils import SchedulerMixin

    cls = obj if isinstance(obj, type) else type(obj)
    return issubclass(cls, SchedulerMixin) and callable(getattr(cls, "step", None))


def scheduler_of(target, what: str = "ppddpm", families: Optional[tuple] = None):
    """The scheduler behind `target` (a pipeline, a scheduler, or a scheduler class), or a
    one-line error saying what is accepted. `families` narrows the accepted adapters."""
    scheduler = getattr(target, "scheduler", target)
    if scheduler is None or not is_scheduler(scheduler):
        name = scheduler.__name__ if isinstance(scheduler, type) else type(scheduler).__name__
        raise BadType(f"{what} needs a ppdiffusers scheduler, a scheduler class, or a pipeline whose .scheduler is "
                      f"one (supported: {supported()}); got {name}")
    if families is not None and adapter_for(scheduler).family not in families:
        name = scheduler.__name__ if isinstance(scheduler, type) else type(scheduler).__name__
        wanted = [c for a in ADAPTERS if a.family in families for c in a.classes]
        raise BadType(f"{what} needs {' or '.join(wanted)} (or a subclass); got {name}, whose step follows "
                      f"another formula")
    return scheduler


def families() -> Dict[str, tuple]:
    return {a.family: a.classes for a in ADAPTERS}


def by_family(family: str) -> Adapter:
    """The adapter of a sampler family named in a run's metadata (`meta["sampler"]`); the generic one for
    a name this version does not know."""
    return next((a for a in ADAPTERS if a.family == family), GENERIC)


def clipped_share(scheduler, x0_raw) -> float:
    """Deprecated (0.4): `adapter_for(scheduler).clip_fraction(scheduler, x0_raw)`, read to the host."""
    warnings.warn("ppddpm.core.adapters.clipped_share is Adapter.clip_fraction since 0.5: "
                  "adapter_for(scheduler).clip_fraction(scheduler, unclipped)", DeprecationWarning, stacklevel=2)
    share = adapter_for(scheduler).clip_fraction(scheduler, x0_raw)
    return float(share) if hasattr(share, "place") else share


def clipped_share_on_device(scheduler, x0_raw, groups=None):
    """Deprecated (0.4): `adapter_for(scheduler).clip_fraction(scheduler, x0_raw, groups)`."""
    warnings.warn("ppddpm.core.adapters.clipped_share_on_device is Adapter.clip_fraction since 0.5: "
                  "adapter_for(scheduler).clip_fraction(scheduler, unclipped, groups)", DeprecationWarning,
                  stacklevel=2)
    return adapter_for(scheduler).clip_fraction(scheduler, x0_raw, groups)


def clipping_of(scheduler) -> Optional[str]:
    """The clipping of x̂_0 this scheduler's step applies ("thresholding", "clip_sample") or None."""
    return clipping_in_force(scheduler.config, adapter_for(scheduler).clipping)


# the families whose samples live in the σ-parameterisation (x = x_t/√ᾱ_t, which `scale_model_input` divides
# by √(σ² + 1) before the model sees it): the Euler-type ones
SIGMA_SPACE = tuple(a.family for a in ADAPTERS if isinstance(a, _SigmaAdapter))


def in_sigma_space(family: str) -> bool:
    """Whether the samples of `family` live in the σ-parameterisation (`SIGMA_SPACE`)."""
    return family in SIGMA_SPACE
