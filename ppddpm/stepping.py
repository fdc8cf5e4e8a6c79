"""The one mechanism: intercepting `scheduler.step`.

Recording, patching and comparing all work by adding a *layer* around the `step` of one
scheduler instance (or, for patches, of a scheduler class). ppdiffusers' source is never
edited. A layer is one of two kinds:

- a **formula** replaces what `step` computes: `fn(scheduler, model_output, timestep,
  sample, generator=None, return_dict=True)`, the contract of `DDPMScheduler.step`.
  The most recent formula on the instance wins, else the most recent on its class, else
  the class's own `step`.
- an **observer** sees every call: `fn(call, scheduler, model_output, timestep, sample,
  generator)` where `call()` runs the formula (or the next observer) and returns a
  `DDPMSchedulerOutput`. Observers always wrap the formula in force, whatever the order in
  which the contexts were entered, so a patched and recorded run records the patch's values.

Layers are removed by identity, so contexts may exit in any order (threads, generators),
and the instance's original `step` comes back when the last layer leaves, exceptions too.
The installed `step` keeps `DDPMScheduler.step`'s signature (ppdiffusers' own scheduler
tests inspect it).
"""
from __future__ import annotations

import contextlib
import functools
import threading
import types

_LOCK = threading.RLock()
_ATTR = "_ppddpm_layers"
_ORIGINAL = "_ppddpm_original_step"


class Layer:
    __slots__ = ("kind", "fn", "name")

    def __init__(self, kind: str, fn, name: str = ""):
        if kind not in ("formula", "observer"):
            raise ValueError(f"layer kind must be 'formula' or 'observer', got {kind!r}")
        self.kind, self.fn, self.name = kind, fn, name

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
    raise TypeError(f"{cls.__name__} has no step method")


def formula_in_force(scheduler):
    """(name, fn) of the formula a call to `scheduler.step` would run now."""
    for layer in reversed(scheduler.__dict__.get(_ATTR, [])):
        if layer.kind == "formula":
            return layer.name, layer.fn
    for layer in reversed(_class_layers(type(scheduler))):
        if layer.kind == "formula":
            return layer.name, layer.fn
    return "ppdiffusers", _class_original(type(scheduler))


def _dispatch(scheduler, model_output, timestep, sample, generator=None, return_dict=True):
    """Run the formula in force inside every observer (instance observers outermost)."""
    _, formula = formula_in_force(scheduler)
    observers = [l.fn for l in _class_layers(type(scheduler)) if l.kind == "observer"]
    observers += [l.fn for l in scheduler.__dict__.get(_ATTR, []) if l.kind == "observer"]

    def call_formula():
        return formula(scheduler, model_output, timestep, sample, generator=generator, return_dict=True)

    call = call_formula
    for obs in observers:
        call = functools.partial(obs, call, scheduler, model_output, timestep, sample, generator)
    out = call()
    return out if return_dict else (out.prev_sample,)


def _make_step(original):
    """A fresh `step` with `original`'s signature and docstring that dispatches through the layers."""
    @functools.wraps(original)
    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        return _dispatch(self, model_output, timestep, sample, generator=generator, return_dict=return_dict)

    return step


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


def ddpm_scheduler_of(target, what: str = "ppddpm"):
    """The DDPM scheduler behind `target` (a pipeline, a scheduler, or with `allow_class`
    a scheduler class), or a clear error saying what is accepted."""
    from ppdiffusers import DDPMScheduler

    scheduler = getattr(target, "scheduler", target)
    if isinstance(scheduler, type):
        if issubclass(scheduler, DDPMScheduler):
            return scheduler
    elif isinstance(scheduler, DDPMScheduler):
        return scheduler
    name = scheduler.__name__ if isinstance(scheduler, type) else type(scheduler).__name__
    raise TypeError(f"{what} needs a DDPM scheduler (ppdiffusers.DDPMScheduler, a subclass, or a pipeline "
                    f"whose .scheduler is one); got {name}, whose step follows another formula")
