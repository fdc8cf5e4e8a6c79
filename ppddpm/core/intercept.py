"""The one mechanism: intercepting `scheduler.step`, for any ppdiffusers scheduler.

Recording, patching and comparing all work by adding a *layer* around the `step` of one
scheduler instance (or, for patches, of a scheduler class). ppdiffusers' source is never
edited. A layer is one of two kinds:

- a **formula** replaces what `step` computes: `fn(scheduler, model_output, timestep,
  sample, **extra)`, where `extra` holds the other arguments of *that scheduler's* `step`
  exactly as the caller passed them (`generator` for DDPM; `eta`, `use_clipped_model_output`,
  `generator`, `variance_noise` for DDIM; `s_churn` … for Euler) plus `return_dict=True`. It
  returns the scheduler's output object. The most recent formula on the instance wins, else
  the most recent on its class, else the class's own `step`.
- an **observer** sees every call: `fn(call, scheduler, model_output, timestep, sample, extra)`
  where `call(**overrides)` runs the formula (or the next observer) with `extra` updated by
  `overrides` and returns the output object. Observers always wrap the formula in force,
  whatever the order in which the contexts were entered, so a patched and recorded run records
  the patch's values. An observer may hand the step its noise as data (`variance_noise=z`
  where the scheduler takes it) but must not otherwise change what the step computes.

Layers are removed by identity, so contexts may exit in any order (threads, generators),
and the instance's original `step` comes back when the last layer leaves, exceptions too.
The installed `step` binds its arguments with the original's signature — positional or by
keyword, an unknown one is the original's TypeError — and exposes that signature
(ppdiffusers' own scheduler tests inspect it).
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import types
from ppddpm.errors import BadType, BadValue

_LOCK = threading.RLock()
_ATTR = "_ppddpm_layers"
_ORIGINAL = "_ppddpm_original_step"


class Layer:
    """`arguments` (formula layers): step arguments the formula fixes, e.g. {"eta": 1.0} for the
    spec "ddim(eta=1.0)"; they replace the caller's before any observer sees the call."""
    __slots__ = ("kind", "fn", "name", "arguments")

    def __init__(self, kind: str, fn, name: str = "", arguments: dict = None):
        if kind not in ("formula", "observer"):
            raise BadValue(f"layer kind must be 'formula' or 'observer', got {kind!r}")
        self.kind, self.fn, self.name, self.arguments = kind, fn, name, dict(arguments or {})

    def __repr__(self):
        return f"Layer({self.kind}, {self.name or self.fn!r})"


_MISSING = object()


def _class_layers(cls):
    for klass in cls.__mro__:
        if _ATTR in klass.__dict__:
            return klass.__dict__[_ATTR]
    return []


def _class_original(cls):
    """The `step` function `cls` had before any ppddpm patch."""
    for klass in cls.__mro__:
        original = klass.__dict__.get(_ORIGINAL, None)
        if original is not None:
            if original is _MISSING:
                continue
            return original
        if "step" in klass.__dict__:
            return klass.__dict__["step"]
    raise BadType(f"{cls.__name__} has no step method")


def formula_layer(scheduler) -> Layer:
    """The formula layer a call to `scheduler.step` would run now (the class's own step if none)."""
    for layer in reversed(scheduler.__dict__.get(_ATTR, [])):
        if layer.kind == "formula":
            return layer
    for layer in reversed(_class_layers(type(scheduler))):
        if layer.kind == "formula":
            return layer
    return Layer("formula", _class_original(type(scheduler)), "ppdiffusers")


def formula_in_force(scheduler):
    """(name, fn) of the formula a call to `scheduler.step` would run now."""
    layer = formula_layer(scheduler)
    return layer.name, layer.fn


_CORE = ("self", "model_output", "timestep", "sample", "return_dict")


def _dispatch(scheduler, model_output, timestep, sample, extra: dict, return_dict=True):
    """Run the formula in force inside every observer (instance observers outermost)."""
    layer = formula_layer(scheduler)
    formula, extra = layer.fn, dict(extra, **layer.arguments)
    observers = [layer.fn for layer in _class_layers(type(scheduler)) if layer.kind == "observer"]
    observers += [layer.fn for layer in scheduler.__dict__.get(_ATTR, []) if layer.kind == "observer"]

    def call_formula(**overrides):
        return formula(scheduler, model_output, timestep, sample, **dict(extra, **overrides), return_dict=True)

    call = call_formula
    for obs in observers:
        call = _observed(obs, call, scheduler, model_output, timestep, sample, extra)
    out = call()
    return out if return_dict else (out.prev_sample,)


def _observed(obs, inner, scheduler, model_output, timestep, sample, extra):
    """`call(**overrides)` for the observer `obs` wrapped around `inner`."""
    def call(**overrides):
        merged = dict(extra, **overrides)
        return obs(lambda **more: inner(**dict(overrides, **more)), scheduler, model_output, timestep, sample, merged)
    return call


def _make_step(original):
    """A fresh `step` with `original`'s signature and docstring that dispatches through the layers."""
    signature = inspect.signature(original)
    parameters = signature.parameters.values()
    # the names a plain call fills, in order; none (every call through `bind`) where a parameter is positional-only
    named = [] if any(p.kind == p.POSITIONAL_ONLY for p in parameters) else \
        [p.name for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD]
    required = {p.name for p in parameters if p.default is p.empty and p.kind in
                (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    @functools.wraps(original)
    def step(self, *args, **kwargs):
        arguments = _bound(signature, named, required, self, args, kwargs)
        core = {name: arguments.pop(name) for name in _CORE if name in arguments}
        return _dispatch(self, core["model_output"], core["timestep"], core["sample"], arguments,
                         return_dict=core.get("return_dict", True))

    step.__signature__ = signature        # what inspect.signature(step, follow_wrapped=False) reports
    return step


def _bound(signature, named: list, required: set, self, args: tuple, kwargs: dict) -> dict:
    """The call's arguments by name, as `signature.bind(self, *args, **kwargs).arguments`. A well-formed
    call by plain names (every step call a pipeline or the loop makes) is mapped directly, saving the
    ~20 µs of `bind`; any other call goes through `bind`, and so gets the original's TypeError."""
    if len(args) < len(named) and kwargs.keys() <= set(named[len(args) + 1:]):
        arguments = dict(zip(named, (self,) + args), **kwargs)
        if required <= arguments.keys():
            return arguments
    return signature.bind(self, *args, **kwargs).arguments


@contextlib.contextmanager
def intercept(target, layer: Layer):
    """Add `layer` to a scheduler instance, or a scheduler class, for the duration of the block."""
    if isinstance(target, type):
        owner, state = target, target.__dict__   # a mappingproxy: writes go through setattr

        def install():
            setattr(target, _ORIGINAL, state.get("step", _MISSING))
            setattr(target, _ATTR, [])
            setattr(target, "step", _make_step(_class_original(target)))

        def uninstall():
            original = state[_ORIGINAL]
            delattr(target, _ATTR)
            delattr(target, _ORIGINAL)
            if original is _MISSING:
                delattr(target, "step")
            else:
                setattr(target, "step", original)
    else:
        owner, state = target, target.__dict__

        def install():
            state[_ORIGINAL] = state.get("step", _MISSING)
            state[_ATTR] = []
            state["step"] = types.MethodType(_make_step(_class_original(type(target))), target)

        def uninstall():
            original = state.pop(_ORIGINAL)
            del state[_ATTR]
            if original is _MISSING:
                del state["step"]
            else:
                state["step"] = original

    with _LOCK:
        if _ATTR not in owner.__dict__:
            install()
        owner.__dict__[_ATTR].append(layer)
    try:
        yield layer
    finally:
        with _LOCK:
            layers = owner.__dict__[_ATTR]
            layers.remove(layer)
            if not layers:
                uninstall()
