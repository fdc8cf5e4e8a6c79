"""Step variants: the DDPM reverse step written out, formula by formula (MATH.md).

Every variant has the contract of `DDPMScheduler.step`:
`step(scheduler, model_output, timestep, sample, generator=None, return_dict=True)`
and returns a `DDPMSchedulerOutput(prev_sample, pred_original_sample)`.

Precision: variants compute their coefficients in **float32 from the scheduler's own
tensors, with the same operations as ppdiffusers**. So "posterior" is bitwise equal to the
stock step, and any difference between variants is the formula's, not a change of
precision. The float64 truth lives in `ppddpm.reference`.

Noise: every variant draws z exactly as the stock step does, one
`randn_tensor(model_output.shape, generator=generator, dtype=model_output.dtype)` per
step while t > 0, so two runs with one seed differ only by their formula.
"""
from __future__ import annotations

import re

from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Optional
from ppddpm.errors import BadValue, Unknown, Unsupported

# variance types whose σ_t needs more than the schedule: the model's extra variance channels
# ("learned", "learned_range"), or that ppdiffusers 0.29 itself gets wrong ("fixed_large_log":
# it takes the square root of log β_t, a NaN)
UNSUPPORTED_VARIANCE_TYPES = ("learned", "learned_range", "fixed_large_log")
SUPPORTED_PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


@dataclass
class Coefficients:
    """Section 1 of `DDPMScheduler.step`, for step t → prev_t (float32 0-d tensors).

    For strided sampling (num_inference_steps < T) α_t is replaced by ᾱ_t / ᾱ_prev and
    β_t by 1 − ᾱ_t / ᾱ_prev (MATH.md, "Strided sampling").
    """
    t: int
    prev_t: int
    alpha_prod_t: object          # ᾱ_t
    alpha_prod_t_prev: object     # ᾱ_{prev_t}  (1 at the last step)
    beta_prod_t: object           # 1 − ᾱ_t
    beta_prod_t_prev: object      # 1 − ᾱ_{prev_t}
    current_alpha_t: object       # α_t = ᾱ_t / ᾱ_{prev_t}
    current_beta_t: object        # β_t = 1 − α_t


def _int(t) -> int:
    return int(t.item()) if hasattr(t, "item") else int(t)


def coefficients(scheduler, timestep) -> Coefficients:
    t = timestep
    prev_t = scheduler.previous_timestep(t)
    alpha_prod_t = scheduler.alphas_cumprod[t]
    alpha_prod_t_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.one
    beta_prod_t = 1 - alpha_prod_t
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    current_alpha_t = alpha_prod_t / alpha_prod_t_prev
    current_beta_t = 1 - current_alpha_t
    return Coefficients(_int(t), _int(prev_t), alpha_prod_t, alpha_prod_t_prev, beta_prod_t,
                        beta_prod_t_prev, current_alpha_t, current_beta_t)


def check_supported(scheduler) -> None:
    """A clear error for configurations the written-out variants do not implement."""
    cfg = scheduler.config
    if scheduler.variance_type in UNSUPPORTED_VARIANCE_TYPES:
        raise Unsupported(
            f"variance_type={scheduler.variance_type!r} is not implemented by ppddpm's variants; they handle "
            f"fixed_small, fixed_small_log and fixed_large (and, like ppdiffusers, treat unknown names as "
            f"fixed_small). Use variant 'ppdiffusers' for the stock step.")
    if cfg.prediction_type not in SUPPORTED_PREDICTION_TYPES:
        raise BadValue(f"prediction_type={cfg.prediction_type!r} is not one of "
                       f"{', '.join(SUPPORTED_PREDICTION_TYPES)}")


def predict_start_from_noise(c: Coefficients, model_output, sample, prediction_type="epsilon"):
    """x̂_0 before any clipping, eq. (15) (TF `predict_start_from_noise`): `ppddpm.core.adapters.x0_by_eq15`
    at this step's ᾱ_t; "sample" and "v_prediction" as ppdiffusers."""
    from ppddpm.core.adapters import x0_by_eq15

    if prediction_type not in SUPPORTED_PREDICTION_TYPES:
        raise BadValue(f"prediction_type={prediction_type!r} is not one of {', '.join(SUPPORTED_PREDICTION_TYPES)}")
    return x0_by_eq15(c.alpha_prod_t, model_output, sample, prediction_type)


def predict_noise(c: Coefficients, model_output, sample, prediction_type="epsilon"):
    """ε_θ, the quantity eq. (11) needs: the model output itself for "epsilon"; otherwise
    eq. (15) inverted, ε = (x_t − √ᾱ_t x̂_0) / √(1−ᾱ_t), from the unclipped x̂_0."""
    if prediction_type == "epsilon":
        return model_output
    x0 = predict_start_from_noise(c, model_output, sample, prediction_type)
    return (sample - c.alpha_prod_t ** 0.5 * x0) / c.beta_prod_t ** 0.5


def threshold(x0, ratio: float, max_value: float):
    """Dynamic thresholding (Imagen, arXiv 2205.11487), per sample for any batch size.

    s = the `ratio` quantile of |x̂_0| over each sample, clipped to [1, max_value]; x̂_0 is
    clipped to [−s, s] and divided by s. ppdiffusers 0.29's `_threshold_sample` passes the
    per-sample bounds to `paddle.clip`, which rejects tensors for batch > 1
    (patches/fix-threshold-batch.diff); this computes the same values with min/max.
    """
    import numpy as np
    import paddle

    dtype = x0.dtype
    batch = x0.shape[0]
    flat = x0.cast("float32").reshape([batch, int(np.prod(x0.shape[1:]))])
    s = paddle.quantile(flat.abs(), ratio, axis=1)
    if max_value < 1:
        s = paddle.ones_like(s) * max_value
    else:
        s = paddle.clip(s, min=1, max=max_value)
    s = s.unsqueeze(1)
    flat = paddle.minimum(paddle.maximum(flat, -s), s) / s
    return flat.reshape(x0.shape).cast(dtype)


def modify_x0(scheduler, x0):
    """Section 3 of the stock step: threshold, or clip to ±clip_sample_range, or leave x̂_0 as is."""
    cfg = scheduler.config
    if cfg.thresholding:
        return threshold(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)
    if cfg.clip_sample:
        return x0.clip(-cfg.clip_sample_range, cfg.clip_sample_range)
    return x0


def sigma(scheduler, timestep):
    """σ_t, the standard deviation of the noise the step adds (0 at the last step).
    σ_t² = β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) β_t (eq. 7, "fixed_small") or β_t ("fixed_large")."""
    t = _int(timestep)
    if t <= 0:
        return 0.0
    variance = scheduler._get_variance(timestep)
    if scheduler.variance_type == "fixed_small_log":   # ppdiffusers returns the std here already
        return variance
    return variance ** 0.5


def add_noise(scheduler, mean, model_output, timestep, generator):
    """x_{t−1} = μ + σ_t z, z ~ N(0, I), no noise at the last step (Algorithm 2, line 4);
    z drawn exactly as the stock step draws it."""
    from ppdiffusers.utils.paddle_utils import randn_tensor

    if _int(timestep) > 0:
        z = randn_tensor(model_output.shape, generator=generator, dtype=model_output.dtype)
        return mean + sigma(scheduler, timestep) * z
    return mean + 0


def _output(prev_sample, pred_original_sample, return_dict):
    from ppdiffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput

    if not return_dict:
        return (prev_sample,)
    return DDPMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)


# --------------------------------------------------------------------------- registry

@dataclass
class Variant:
    name: str
    step: Callable      # step(scheduler, model_output, timestep, sample, **the scheduler's other step arguments)
    doc: str = ""
    families: Optional[tuple] = None     # sampler families (`ppddpm.core.adapters`) it applies to; None: any
    scheduler: Optional[str] = None      # the class `compare` builds for it from another family's config
    arguments: dict = field(default_factory=dict)   # step arguments fixed by its spec: "ddim(eta=1.0)"
    ranges: Optional[dict] = None        # {argument: (low, high)} it accepts beyond ARGUMENT_RANGES' defaults

    @property
    def spec(self) -> str:
        """The variant as written: its name, with its arguments if any."""
        return format_spec(self.name, self.arguments)

    def bound(self, **arguments) -> "Variant":
        return replace(self, arguments=dict(self.arguments, **arguments))


_REGISTRY: Dict[str, Variant] = {}


def register_variant(name: str, *, replace: bool = False, families: Optional[tuple] = ("ddpm",),
                     scheduler: Optional[str] = "DDPMScheduler", ranges: Optional[dict] = None):
    """Decorator: register a step function under `name`.

        @ppddpm.register_variant("halved-noise")
        def halved(scheduler, model_output, timestep, sample, generator=None, return_dict=True):
            ...

    The function must keep the contract of the step it replaces (`DDPMScheduler.step`'s for
    the default `families=("ddpm",)`), and draw its noise like the stock step
    (`ppddpm.variants.registry.add_noise`) if runs are to share z. `families=None` applies to any
    scheduler (the function then receives that scheduler's own step arguments). `scheduler`
    names the class `compare` builds for the variant when the pipeline's scheduler is of another
    family (None: the pipeline's own). `ranges` widens or narrows the values a spec may give an
    argument ({"eta": (0.0, 2.0)}); by default η must lie in [0, 1] (ARGUMENT_RANGES).
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise BadValue(f"variant name must be letters, digits, '-', '_' or '+', starting with a letter; got {name!r}")
    replace_existing = replace

    def decorate(fn):
        if name in _REGISTRY and not replace_existing:
            raise BadValue(f"variant {name!r} is already registered (pass replace=True to redefine it)")
        _REGISTRY[name] = Variant(name, fn, (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
                                  None if families is None else tuple(families), scheduler, ranges=ranges)
        return fn

    return decorate


NOT_SPEC_ARGUMENTS = ("generator", "variance_noise", "return_dict")   # data and plumbing, not a spec's


def check_arguments(variant: Variant, scheduler_cls=None) -> None:
    """The spec's arguments must be ones the step takes: the variant function's own keyword
    parameters, or — where it passes them on (`**step_arguments`) — those of the scheduler's step."""
    import inspect

    def named(fn):
        params = inspect.signature(fn).parameters
        open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
        return [n for n, p in params.items() if p.default is not p.empty and n not in NOT_SPEC_ARGUMENTS], open_ended

    accepted, open_ended = named(variant.step)
    if open_ended:
        if scheduler_cls is None and variant.scheduler:
            import ppdiffusers

            scheduler_cls = getattr(ppdiffusers, variant.scheduler)
        if scheduler_cls is None:
            return                                   # checked again against the scheduler it runs on
        accepted = named(scheduler_cls.step)[0]
    unknown = [k for k in variant.arguments if k not in accepted]
    if unknown:
        raise BadValue(f"variant {variant.name!r} takes no argument {', '.join(map(repr, unknown))}"
                       + (f"; it takes {', '.join(accepted)}" if accepted else "; it takes none"))


# η of eq. (16): 0 is deterministic DDIM, 1 gives DDPM's σ_t² = β̃_t; above 1, σ_t² exceeds 1 − ᾱ_prev
# at some steps and eq. (12)'s √(1 − ᾱ_prev − σ_t²) is NaN; below 0 σ_t flips the noise's sign
ARGUMENT_RANGES = {"eta": (0.0, 1.0)}


def check_values(variant: Variant) -> None:
    """A spec's numbers are finite and within the argument's range (ARGUMENT_RANGES, or the
    variant's own `ranges`): values that make NaN are refused before any step runs."""
    import math

    ranges = dict(ARGUMENT_RANGES, **(variant.ranges or {}))
    for key, value in variant.arguments.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            raise BadValue(f"variant {variant.spec!r}: {key} must be a finite number, got {value}")
        low, high = ranges.get(key, (-math.inf, math.inf))
        if not low <= value <= high:
            raise BadValue(f"variant {variant.spec!r}: {key} must lie in [{low:g}, {high:g}], got {value:g}"
                           + (" (η of eq. 16; above 1 the step is NaN)" if key == "eta" else ""))


NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*")
SPEC_FORM = "name or name(key=value, ...) with numbers, True/False or quoted strings, e.g. ddim(eta=1.0, " \
            "use_clipped_model_output=True)"


def parse_spec(spec: str):
    """`"ddim(eta=1.0, use_clipped_model_output=True)"` → ("ddim", {"eta": 1.0, "use_clipped_model_output": True}).

    Parsed as a Python expression tree and read, never evaluated: only a name, or a call of a
    name with keyword arguments whose values are literal numbers, booleans or strings."""
    import ast

    def bad(why):
        return BadValue(f"bad variant spec {spec!r}: {why}; the accepted form is {SPEC_FORM}")

    if not isinstance(spec, str) or not spec.strip():
        raise bad("empty")
    text = spec.strip()
    if NAME.fullmatch(text):
        return text, {}
    head = re.match(r"([A-Za-z][A-Za-z0-9_+\-]*)\s*\((.*)\)\s*$", text, re.S)
    if not head:
        raise bad("not a name or a call")
    name, inner = head.group(1), head.group(2)
    try:
        call = ast.parse(f"f({inner})", mode="eval").body
    except SyntaxError:
        raise bad("its arguments do not parse") from None
    if not isinstance(call, ast.Call) or call.args:
        raise bad("arguments must be given as key=value")
    arguments = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise bad("** is not accepted")
        value, sign = kw.value, 1
        if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub):
            value, sign = value.operand, -1
        literal = isinstance(value, ast.Constant) and isinstance(value.value, (int, float, bool, str))
        if not literal or (sign < 0 and (isinstance(value.value, (bool, str)))):
            raise bad(f"the value of {kw.arg} is not a literal number, True/False or string")
        arguments[kw.arg] = -value.value if sign < 0 else value.value
    return name, arguments


def format_spec(name: str, arguments: dict) -> str:
    if not arguments:
        return name
    return f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in arguments.items()) + ")"


def split_specs(text: str) -> list:
    """"ppdiffusers,ddim(eta=1.0, use_clipped_model_output=True)" → the two specs (commas inside
    parentheses do not split)."""
    specs, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            specs.append(text[start:i].strip())
            start = i + 1
    specs.append(text[start:].strip())
    return [s for s in specs if s]


def unregister_variant(name: str) -> None:
    if name in BUILTIN:
        raise BadValue(f"{name!r} is built in and cannot be removed")
    _REGISTRY.pop(name, None)


def variants() -> list:
    """Names of every registered variant, built-ins first."""
    return list(_REGISTRY)


def get_variant(spec) -> Variant:
    """A registered variant by spec — its name, or `name(key=value, …)` with the step arguments
    it fixes ("ddim(eta=1.0, use_clipped_model_output=True)") — or an unregistered step function
    wrapped as one."""
    if isinstance(spec, Variant):
        return spec
    if callable(spec):
        return Variant(getattr(spec, "__name__", "custom"), spec, families=None)
    name, arguments = parse_spec(spec)
    if name not in _REGISTRY:
        raise Unknown(f"unknown step variant {name!r}; known: {', '.join(_REGISTRY)} "
                      f"(add one with @ppddpm.register_variant)")
    variant = _REGISTRY[name].bound(**arguments)
    if arguments:
        check_arguments(variant)
        check_values(variant)
    return variant


# --------------------------------------------------------------------------- built-ins

@register_variant("ppdiffusers", families=None, scheduler=None)
def stock_step(scheduler, model_output, timestep, sample, **step_arguments):
    """ppdiffusers' own `step` of the scheduler's class, untouched: the reference."""
    from ppddpm.core.intercept import _class_original

    return _class_original(type(scheduler))(scheduler, model_output, timestep, sample, **step_arguments)


@register_variant("posterior")
def posterior_step(scheduler, model_output, timestep, sample, generator=None, return_dict=True):
    """Posterior route: x̂_0 by eq. (15) → clip/threshold → μ̃_t(x̂_0, x_t) by eq. (7) → + σ_t z."""
    check_supported(scheduler)
    c = coefficients(scheduler, timestep)
    x0 = modify_x0(scheduler, predict_start_from_noise(c, model_output, sample, scheduler.config.prediction_type))
    # eq. (7): μ̃_t = √ᾱ_{t−1} β_t / (1−ᾱ_t) · x̂_0 + √α_t (1−ᾱ_{t−1}) / (1−ᾱ_t) · x_t
    pred_original_sample_coeff = (c.alpha_prod_t_prev ** (0.5) * c.current_beta_t) / c.beta_prod_t
    current_sample_coeff = c.current_alpha_t ** (0.5) * c.beta_prod_t_prev / c.beta_prod_t
    mean = pred_original_sample_coeff * x0 + current_sample_coeff * sample
    return _output(add_noise(scheduler, mean, model_output, timestep, generator), x0, return_dict)


def _direct_mean(c: Coefficients, eps, sample):
    # eq. (11): μ_θ = 1/√α_t · (x_t − β_t / √(1−ᾱ_t) · ε_θ)
    return (sample - eps * c.current_beta_t / c.beta_prod_t ** 0.5) / c.current_alpha_t ** 0.5


@register_variant("direct")
def direct_step(scheduler, model_output, timestep, sample, generator=None, return_dict=True):
    """Direct route, eq. (11) (Algorithm 2), the article's edit made correct for strided
    schedules; never looks at the clipped x̂_0, which it reports only for comparison."""
    check_supported(scheduler)
    c = coefficients(scheduler, timestep)
    eps = predict_noise(c, model_output, sample, scheduler.config.prediction_type)
    x0 = modify_x0(scheduler, predict_start_from_noise(c, model_output, sample, scheduler.config.prediction_type))
    mean = _direct_mean(c, eps, sample)
    return _output(add_noise(scheduler, mean, model_output, timestep, generator), x0, return_dict)


@register_variant("direct-clip-consistent")
def direct_clip_consistent_step(scheduler, model_output, timestep, sample, generator=None, return_dict=True):
    """eq. (11) with ε re-derived from the clipped x̂_0 by inverting eq. (15): equal to the
    posterior route even when clipping fires (MATH.md, "The equivalence argument")."""
    check_supported(scheduler)
    c = coefficients(scheduler, timestep)
    x0 = modify_x0(scheduler, predict_start_from_noise(c, model_output, sample, scheduler.config.prediction_type))
    eps = (sample - c.alpha_prod_t ** 0.5 * x0) / c.beta_prod_t ** 0.5      # eq. (15) solved for ε
    mean = _direct_mean(c, eps, sample)
    return _output(add_noise(scheduler, mean, model_output, timestep, generator), x0, return_dict)


@register_variant("direct-article")
def direct_article_step(scheduler, model_output, timestep, sample, generator=None, return_dict=True):
    """The article's edit verbatim: eq. (11) with `scheduler.betas[t]` and `scheduler.alphas[t]`.
    Equal to "direct" at 1000 steps; wrong for strided schedules (num_inference_steps < T)."""
    check_supported(scheduler)
    c = coefficients(scheduler, timestep)
    t = timestep
    x0 = modify_x0(scheduler, predict_start_from_noise(c, model_output, sample, scheduler.config.prediction_type))
    eps = predict_noise(c, model_output, sample, scheduler.config.prediction_type)
    mean = (sample - eps * scheduler.betas[t] / (1 - scheduler.alphas_cumprod[t]) ** 0.5) / scheduler.alphas[t] ** 0.5
    return _output(add_noise(scheduler, mean, model_output, timestep, generator), x0, return_dict)


def scheduler_for(variant, sched):
    """The scheduler a variant runs on: the (overridden) pipeline scheduler when the variant is of
    its family, else the variant's own class built from the same config (DDPM → DDIM carries the
    schedule, `clip_sample`, `thresholding`, `steps_offset`, `timestep_spacing`)."""
    import ppdiffusers

    from ppddpm.core.config import with_config
    from ppddpm.core.adapters import adapter_for, scheduler_of

    if variant.families is None or adapter_for(sched).family in variant.families:
        lane = with_config(sched)
    elif variant.scheduler:
        lane = with_config(sched, cls=getattr(ppdiffusers, variant.scheduler))
    else:
        scheduler_of(sched, f"variant {variant.name!r}", families=variant.families)     # the one-line error
    check_arguments(variant, type(lane))
    return lane



from ppddpm.variants import ddim as ddim_variants  # noqa: E402,F401  (registers "ddim" and "ddim-written")

BUILTIN = tuple(_REGISTRY)
