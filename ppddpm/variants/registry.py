"""The registry of step variants: `register_variant`, `get_variant`, `unregister_variant`, `variants`,
and the spec grammar `name(key=value, ...)` that names a variant with the step arguments it fixes.

A variant is a function with the contract of the `step` it replaces, e.g. `DDPMScheduler.step`:
`step(scheduler, model_output, timestep, sample, generator=None, return_dict=True)`, returning
the scheduler's output (`prev_sample`, `pred_original_sample`). The built-in variants are written
in `ppddpm.variants.stock` ("ppdiffusers"), `ppddpm.variants.ddpm` (the DDPM routes) and
`ppddpm.variants.ddim` (DDIM); importing `ppddpm.variants` (which any import of this module
does first) registers them, in that order. This module imports none of them.
"""
from __future__ import annotations

import ast
import inspect
import math
import re
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Optional

from ppddpm._moved import moved_names
from ppddpm.core.adapters import adapter_for, scheduler_of
from ppddpm.core.config import with_config
from ppddpm.errors import BadType, BadValue, Unknown


@dataclass
class Variant:
    name: str
    step: Callable      # step(scheduler, model_output, timestep, sample, **the scheduler's other step arguments)
    doc: str = ""
    families: Optional[tuple] = None     # sampler families (`ppddpm.core.adapters`) it applies to; None: any
    scheduler: Optional[str] = None      # the class `compare` builds for it from another family's config
    arguments: dict = field(default_factory=dict)   # step arguments fixed by its spec: "ddim(eta=1.0)"
    ranges: Optional[dict] = None        # {argument: (low, high)} it accepts beyond ARGUMENT_RANGES' defaults
    builtin: bool = False                # one of ppddpm's own: it cannot be unregistered

    @property
    def spec(self) -> str:
        """The variant as written: its name, with its arguments if any."""
        return format_spec(self.name, self.arguments)

    def bound(self, **arguments) -> "Variant":
        return replace(self, arguments=dict(self.arguments, **arguments))


_REGISTRY: Dict[str, Variant] = {}


def register_variant(name: str, *, replace: bool = False, families: Optional[tuple] = ("ddpm",),
                     scheduler: Optional[str] = "DDPMScheduler", ranges: Optional[dict] = None,
                     doc: Optional[str] = None, builtin: bool = False):
    """Decorator: register a step function under `name`.

        @ppddpm.register_variant("halved-noise")
        def halved(scheduler, model_output, timestep, sample, generator=None, return_dict=True):
            ...

    The function must keep the contract of the step it replaces (`DDPMScheduler.step`'s for
    the default `families=("ddpm",)`), and draw its noise like the stock step
    (`ppddpm.core.formulas.draw_noise`) if runs are to share z. `families=None` applies to any
    scheduler (the function then receives that scheduler's own step arguments). `scheduler`
    names the class `compare` builds for the variant when the pipeline's scheduler is of another
    family (None: the pipeline's own). `ranges` widens or narrows the values a spec may give an
    argument ({"eta": (0.0, 2.0)}); by default η must lie in [0, 1] (ARGUMENT_RANGES). `doc`
    replaces the function's docstring as the variant's one-line description (one function may be
    registered under two names); `builtin` marks ppddpm's own variants, which stay registered.
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise BadValue(f"variant name must be letters, digits, '-', '_' or '+', starting with a letter; got {name!r}")
    replace_existing = replace

    def decorate(fn):
        if name in _REGISTRY and not replace_existing:
            raise BadValue(f"variant {name!r} is already registered (pass replace=True to redefine it)")
        text = doc or fn.__doc__ or ""
        _REGISTRY[name] = Variant(name, fn, text.strip().splitlines()[0] if text.strip() else "",
                                  None if families is None else tuple(families), scheduler, ranges=ranges,
                                  builtin=builtin)
        return fn

    return decorate


NOT_SPEC_ARGUMENTS = ("generator", "variance_noise", "return_dict")   # data and plumbing, not a spec's


def check_arguments(variant: Variant, scheduler_cls=None) -> None:
    """The spec's arguments must be ones the step takes: the variant function's own keyword
    parameters, or — where it passes them on (`**step_arguments`) — those of the scheduler's step;
    and each of the type of that parameter's default (`LITERAL_KINDS`)."""

    def named(fn):
        params = inspect.signature(fn).parameters
        open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
        return {n: p.default for n, p in params.items() if p.default is not p.empty and n not in NOT_SPEC_ARGUMENTS}, \
            open_ended

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
    for key, value in variant.arguments.items():
        kind = next((k for k in LITERAL_KINDS if type(accepted[key]) in k[0]), None)
        if kind is not None and type(value) not in kind[1]:
            raise BadType(_wrong_type(variant, key, value, kind[2]))


# (types of a parameter's default, types a spec's value may have, what the one line calls them)
LITERAL_KINDS = (((bool,), (bool,), "True or False"), ((int,), (int,), "an integer"),
                 ((float,), (int, float), "a number"), ((str,), (str,), "a string"))


def _wrong_type(variant: Variant, key: str, value, accepted: str) -> str:
    shown = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}[type(value)]
    return f"variant {variant.spec!r}: {key} takes {accepted}, got {value!r} ({shown})"


# η of eq. (16): 0 is deterministic DDIM, 1 gives DDPM's σ_t² = β̃_t; above 1, σ_t² exceeds 1 − ᾱ_prev
# at some steps and eq. (12)'s √(1 − ᾱ_prev − σ_t²) is NaN; below 0 σ_t flips the noise's sign
ARGUMENT_RANGES = {"eta": (0.0, 1.0)}


def check_values(variant: Variant) -> None:
    """A spec's numbers are finite and within the argument's range (ARGUMENT_RANGES, or the
    variant's own `ranges`), and a ranged argument is a number: values that make NaN or a
    TypeError are refused before any step runs (and before paddle loads)."""
    ranges = dict(ARGUMENT_RANGES, **(variant.ranges or {}))
    for key, value in variant.arguments.items():
        if key in ranges and type(value) not in (int, float):
            raise BadType(_wrong_type(variant, key, value, f"a number in [{ranges[key][0]:g}, {ranges[key][1]:g}]"))
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
    if name in _REGISTRY and _REGISTRY[name].builtin:
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
        check_values(variant)            # no import: a ranged argument's type and range answered at once
        check_arguments(variant)
    return variant


def scheduler_for(variant, sched):
    """The scheduler a variant runs on: the (overridden) pipeline scheduler when the variant is of
    its family, else the variant's own class built from the same config (DDPM → DDIM carries the
    schedule, `clip_sample`, `thresholding`, `steps_offset`, `timestep_spacing`)."""
    import ppdiffusers

    if variant.families is None or adapter_for(sched).family in variant.families:
        lane = with_config(sched)
    elif variant.scheduler:
        lane = with_config(sched, cls=getattr(ppdiffusers, variant.scheduler))
    else:
        scheduler_of(sched, f"variant {variant.name!r}", families=variant.families)     # the one-line error
    check_arguments(variant, type(lane))
    return lane


# 0.3 names that live elsewhere now (ppddpm/_moved.py): answered with a DeprecationWarning
__getattr__ = moved_names(__name__)
