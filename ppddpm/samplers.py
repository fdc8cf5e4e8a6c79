"""One adapter per scheduler family: what a step of that sampler *is*, said in one vocabulary.

Every ppdiffusers sampler turns (x_t, model output) into a guess of x_0 and a next sample
(MATH.md, "Other samplers"). An adapter tells, for its family:

- `x0_raw`   x̂_0 before any clipping: eq. (15) for the variance-preserving schedulers
             (DDPM, DDIM, PNDM, DPMSolver), `x − σ·ε` in the σ-parameterisation of the
             Euler-type schedulers (`σ = √((1−ᾱ)/ᾱ)`, the same guess written in their space);
- `x0_used`  x̂_0 as the step used it: returned by the step (DDPM, DDIM, Euler, …), or read
             from the state the step keeps (DPMSolver's data prediction), or reconstructed;
- `sigma`    the standard deviation of the noise the step added (0 for ODE samplers), given
             the step's t as a host number: a number or a 0-d device tensor, never a host read;
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

from typing import Dict, List, Optional

from . import _rng
from .errors import BadType, BadValue


def x0_by_eq15(alpha_prod_t, model_output, sample, prediction_type="epsilon"):
    """x̂_0 before any clipping. eq. (15): x̂_0 = (x_t − √(1−ᾱ_t) ε_θ) / √ᾱ_t (TF `predict_start_from_noise`).

    The other prediction types as ppdiffusers: "sample" predicts x_0 itself, "v_prediction"
    gives x̂_0 = √ᾱ_t x_t − √(1−ᾱ_t) v. Same float32 operations as the schedulers' steps.
    """
    beta_prod_t = 1 - alpha_prod_t
    if prediction_type == "epsilon":
        return (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
    if prediction_type == "sample":
        return model_output
    if prediction_type == "v_prediction":
        return (alpha_prod_t ** 0.5) * sample - (beta_prod_t ** 0.5) * model_output
    raise BadValue(f"prediction_type={prediction_type!r} is not one of epsilon, sample, v_prediction")


def x0_by_sigma(sigma, model_output, sample, prediction_type="epsilon"):
    """x̂_0 in the σ-parameterisation of the Euler-type schedulers: x − σ·ε (eq. 15 divided
    through by √ᾱ_t); v-prediction as ppdiffusers: v·(−σ/√(σ²+1)) + x/(σ²+1)."""
    if prediction_type == "epsilon":
        return sample - sigma * model_output
    if prediction_type == "v_prediction":
        return model_output * (-sigma / (sigma ** 2 + 1) ** 0.5) + (sample / (sigma ** 2 + 1))
    if prediction_type in ("sample", "original_sample"):
        return model_output
    raise BadValue(f"prediction_type={prediction_type!r} is not one of epsilon, v_prediction, sample")


def _int(t) -> int:
    return int(t.item()) if hasattr(t, "item") else int(t)


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
    draws = "unknown"            # how z reaches the step: "never", "rng" (global/named stream), "argument"
    clipping: tuple = ()         # the config switches of x̂_0 clipping its step honours

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
    def x0_raw(self, scheduler, model_output, timestep, sample, ctx, out):
        return self.x0_used(scheduler, model_output, timestep, sample, ctx, out)

    def x0_used(self, scheduler, model_output, timestep, sample, ctx, out):
        return getattr(out, "pred_original_sample", None)

    def sigma(self, scheduler, t, extra, ctx, tables):
        """std of the noise added at host timestep `t`: a number or a 0-d device tensor."""
        return 0.0

    def __repr__(self):
        return f"<ppddpm sampler adapter {self.family}>"


class DDPMAdapter(Adapter):
    family, classes, stateful, draws = "ddpm", ("DDPMScheduler", "DDPMParallelScheduler"), False, "rng"
    clipping = ("thresholding", "clip_sample")
    LEARNED = ("learned", "learned_range")

    def _split(self, scheduler, model_output, sample):
        if model_output.shape[1] == sample.shape[1] * 2 and scheduler.variance_type in self.LEARNED:
            return model_output[:, : sample.shape[1]], model_output[:, sample.shape[1]:]
        return model_output, None

    def adds_noise(self, scheduler, timestep, extra, ctx):
        return _int(timestep) > 0                    # Algorithm 2, line 4: no noise at the last step

    def x0_raw(self, scheduler, model_output, timestep, sample, ctx, out):
        eps, _ = self._split(scheduler, model_output, sample)
        return x0_by_eq15(scheduler.alphas_cumprod[timestep], eps, sample, scheduler.config.prediction_type)

    def sigma(self, scheduler, t, extra, ctx, tables):
        """σ_t as the stock step takes it from `_get_variance` (eq. 7's β̃_t for fixed_small, β_t
        for fixed_large); for learned variances the mean over elements of the per-element σ."""
        if t <= 0:
            return 0.0
        import paddle

        _, predicted = self._split(scheduler, ctx["model_output"], ctx["sample"]) if ctx else (None, None)
        variance = scheduler._get_variance(int(t), predicted_variance=predicted)
        if scheduler.variance_type == "fixed_small_log":      # ppdiffusers returns the std here already
            return variance
        if scheduler.variance_type == "learned_range":
            return paddle.exp(0.5 * variance).mean()
        std = variance ** 0.5
        return std.mean() if hasattr(std, "mean") else std

    def before(self, scheduler, model_output, timestep, sample, extra):
        if scheduler.variance_type in self.LEARNED:      # σ then depends on the model's output
            return {"model_output": model_output, "sample": sample}
        return {}


class DDIMAdapter(Adapter):
    """DDIM (Song et al. 2020): takes its noise as an argument, `variance_noise`."""

    family, classes, stateful, draws = "ddim", ("DDIMScheduler", "DDIMParallelScheduler"), False, "argument"
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
            from ppdiffusers.utils.paddle_utils import randn_tensor

            z = randn_tensor(model_output.shape, generator=extra.get("generator"), dtype=model_output.dtype)
            return call(variance_noise=z, generator=None), z
        return call(), z

    def x0_raw(self, scheduler, model_output, timestep, sample, ctx, out):
        return x0_by_eq15(scheduler.alphas_cumprod[timestep], model_output, sample, scheduler.config.prediction_type)

    def sigma(self, scheduler, t, extra, ctx, tables):
        """eq. (16): σ_t(η) = η·√(_get_variance(t, prev)), the std the step multiplies z by."""
        eta = extra.get("eta", 0.0)
        if not eta > 0:
            return 0.0
        prev = int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        return eta * scheduler._get_variance(int(t), prev) ** 0.5


class PNDMAdapter(Adapter):
    """PNDM: Runge–Kutta warm-up (4 calls per step) then linear multistep; returns no x̂_0, so it
    is eq. (15) on the model output of this call."""

    family, classes, stateful, draws = "pndm", ("PNDMScheduler",), True, "never"

    def before(self, scheduler, model_output, timestep, sample, extra):
        prk = scheduler.counter < len(scheduler.prk_timesteps) and not scheduler.config.skip_prk_steps
        return {"stage": f"prk{scheduler.counter % 4 + 1}" if prk else "plms"}

    def stage(self, scheduler, ctx):
        return ctx["stage"]

    def x0_used(self, scheduler, model_output, timestep, sample, ctx, out):
        return x0_by_eq15(scheduler.alphas_cumprod[timestep], model_output, sample, scheduler.config.prediction_type)


class _SigmaAdapter(Adapter):
    """Euler-type schedulers: samples live in the σ-parameterisation (x = x_t/√ᾱ_t,
    `init_noise_sigma`, `scale_model_input`); the step index is kept between calls."""

    stateful, draws = True, "never"

    def before(self, scheduler, model_output, timestep, sample, extra):
        if scheduler.step_index is None:
            scheduler._init_step_index(timestep)      # what the step does first; idempotent
        return {"index": scheduler.step_index}

    def x0_raw(self, scheduler, model_output, timestep, sample, ctx, out):
        return x0_by_sigma(scheduler.sigmas[ctx["index"]], model_output, sample, scheduler.config.prediction_type)


class EulerAdapter(_SigmaAdapter):
    """Euler (Karras et al. 2022, Alg. 2): draws z at every step; adds it only with s_churn > 0."""

    family, classes, draws = "euler", ("EulerDiscreteScheduler",), "rng"

    def _gamma(self, scheduler, extra, ctx, tables):
        sigma = float(tables("sigmas")[ctx["index"]])
        s_churn, s_tmin, s_tmax = (extra.get(k, d) for k, d in (("s_churn", 0.0), ("s_tmin", 0.0),
                                                               ("s_tmax", float("inf"))))
        gamma = min(s_churn / (len(scheduler.sigmas) - 1), 2 ** 0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
        return sigma, gamma

    def adds_noise(self, scheduler, timestep, extra, ctx):
        return True                                   # the draw happens whatever γ is

    def x0_raw(self, scheduler, model_output, timestep, sample, ctx, out):
        return out.pred_original_sample               # from the churned sample; Euler never clips

    def sigma(self, scheduler, t, extra, ctx, tables):
        """s_noise·√(σ̂² − σ²), σ̂ = σ(1+γ): the std of the churn noise (0 without churn)."""
        sigma, gamma = self._gamma(scheduler, extra, ctx, tables)
        if gamma <= 0:
            return 0.0
        sigma_hat = sigma * (gamma + 1)
        return extra.get("s_noise", 1.0) * (sigma_hat ** 2 - sigma ** 2) ** 0.5


class EulerAncestralAdapter(_SigmaAdapter):
    family, classes, draws = "euler-ancestral", ("EulerAncestralDiscreteScheduler",), "rng"

    def adds_noise(self, scheduler, timestep, extra, ctx):
        return True

    def sigma(self, scheduler, t, extra, ctx, tables):
        """σ_up = √(σ_to² (σ_from² − σ_to²) / σ_from²), the std of the ancestral noise."""
        s_from, s_to = (float(tables("sigmas")[ctx["index"] + k]) for k in (0, 1))
        return (s_to ** 2 * (s_from ** 2 - s_to ** 2) / s_from ** 2) ** 0.5


class LMSAdapter(_SigmaAdapter):
    family, classes = "lms", ("LMSDiscreteScheduler",)


class HeunAdapter(_SigmaAdapter):
    """Heun (Karras et al. 2022, Alg. 1): two model evaluations per timestep. The first call of a
    timestep is the Euler "predictor", the second the "corrector" (trapezoidal average); both take
    x̂_0 = x − σ·ε with σ = sigmas[step_index] read before the call. The step returns no x̂_0."""

    family, classes, clipping = "heun", ("HeunDiscreteScheduler",), ("clip_sample",)

    def before(self, scheduler, model_output, timestep, sample, extra):
        ctx = super().before(scheduler, model_output, timestep, sample, extra)
        ctx["stage"] = "predictor" if scheduler.state_in_first_order else "corrector"
        return ctx

    def stage(self, scheduler, ctx):
        return ctx["stage"]

    def x0_used(self, scheduler, model_output, timestep, sample, ctx, out):
        x0 = self.x0_raw(scheduler, model_output, timestep, sample, ctx, out)
        cfg = scheduler.config
        if cfg.get("clip_sample", False):
            return x0.clip(-cfg.clip_sample_range, cfg.clip_sample_range)
        return x0


class DPMSolverMultistepAdapter(Adapter):
    """DPM-Solver(++) multistep (Lu et al. 2022): the step keeps its data prediction x̂_0 (for the
    ++ algorithms) or noise prediction in `model_outputs[-1]`; x̂_0 is read from there."""

    family, classes, stateful, draws = "dpmsolver-multistep", ("DPMSolverMultistepScheduler",), True, "rng"
    clipping = ("thresholding",)         # applied to the data prediction of the ++ algorithms

    def before(self, scheduler, model_output, timestep, sample, extra):
        if scheduler.step_index is None:
            scheduler._init_step_index(timestep)
        return {"index": scheduler.step_index}

    def adds_noise(self, scheduler, timestep, extra, ctx):
        return scheduler.config.algorithm_type in ("sde-dpmsolver", "sde-dpmsolver++")

    def _alpha_sigma(self, scheduler, ctx):
        return scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas[ctx["index"]])

    def x0_raw(self, scheduler, model_output, timestep, sample, ctx, out):
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

    def x0_used(self, scheduler, model_output, timestep, sample, ctx, out):
        kept = scheduler.model_outputs[-1]
        if scheduler.config.algorithm_type in ("dpmsolver++", "sde-dpmsolver++"):
            return kept                                   # the data prediction the update used
        alpha_t, sigma_t = self._alpha_sigma(scheduler, ctx)
        return (sample - sigma_t * kept) / alpha_t        # from the noise prediction it used


ADAPTERS: List[Adapter] = [DDPMAdapter(), DDIMAdapter(), PNDMAdapter(), EulerAdapter(), EulerAncestralAdapter(),
                           LMSAdapter(), HeunAdapter(), DPMSolverMultistepAdapter()]
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


def clipped_share(scheduler, x0_raw) -> float:
    """Share of x̂_0's values that the step's clipping changes, measured on x̂_0 before it:
    |x̂_0| > clip_sample_range with `clip_sample`; with `thresholding`, |x̂_0| above the sample's
    threshold s = clip(quantile(|x̂_0|, ratio), 1, sample_max_value) (Imagen, as ppdiffusers'
    `_threshold_sample` computes it). 0 when neither is on, or the scheduler's step honours
    neither (a DDPM config carried over to Euler keeps `clip_sample`, which Euler's step ignores)."""
    share = clipped_share_on_device(scheduler, x0_raw)
    return float(share) if hasattr(share, "place") else share


def clipped_share_on_device(scheduler, x0_raw):
    """`clipped_share` as a 0-d device tensor (or 0.0), without reading it from the host."""
    import paddle

    honoured = adapter_for(scheduler).clipping
    config = scheduler.config
    if x0_raw is None:
        return 0.0
    if "thresholding" in honoured and config.get("thresholding", False):
        x = x0_raw.cast("float32").abs().reshape([x0_raw.shape[0], -1])
        s = paddle.quantile(x, config.dynamic_thresholding_ratio, axis=1, keepdim=True)
        s = (paddle.ones_like(s) * config.sample_max_value if config.sample_max_value < 1 else
             paddle.clip(s, min=1, max=config.sample_max_value))
        return (x > s).astype("float32").mean()
    if "clip_sample" in honoured and config.get("clip_sample", False):
        return (x0_raw.abs() > config.get("clip_sample_range", 1.0)).astype("float32").mean()
    return 0.0


def in_sigma_space(family: str) -> bool:
    """Whether the samples of this family live in the σ-parameterisation (x = x_t/√ᾱ_t, which
    `scale_model_input` divides by √(σ² + 1) before the model sees it): the Euler-type ones."""
    return any(isinstance(a, _SigmaAdapter) for a in ADAPTERS if a.family == family)


def rebuild_scheduler(traj):
    """(scheduler, n) for a recorded run: the scheduler that made it, rebuilt from its meta (class
    and config), with `set_timesteps(n)` for the n sampling steps the run made — the n whose
    timesteps are as many as the run's step calls (`meta["num_inference_steps"]`; Heun calls its
    step 2n − 1 times, PNDM more than n). None where that fails (a class or config this
    ppdiffusers does not know)."""
    import ppdiffusers

    calls = int(traj.meta.get("num_inference_steps", len(traj)))
    config = {k: v for k, v in (traj.meta.get("scheduler_config") or {}).items() if not k.startswith("_")}
    try:
        scheduler = getattr(ppdiffusers, traj.scheduler).from_config(config)   # drops keys the class does not take
        low = high = traj.meta.get("set_timesteps")          # the n asked for, where the file keeps it
        if not low:
            low, high = 1, calls                 # else searched: len(timesteps) grows with n and is at least n
        while low < high:
            middle = (low + high) // 2
            scheduler.set_timesteps(middle)
            low, high = (middle + 1, high) if len(scheduler.timesteps) < calls else (low, middle)
        scheduler.set_timesteps(low)
    except Exception:                          # an unknown class or config: the caller does without
        return None
    return (scheduler, low) if len(scheduler.timesteps) == calls else None
