"""The stock step as a variant: ppdiffusers' own `step` of the scheduler's class, untouched.

Registered as "ppdiffusers" (any scheduler: the reference every written-out variant is held
against) and, by `ppddpm.variants.ddim`, as "ddim" (on a DDIMScheduler).
"""
from __future__ import annotations

from ppddpm.core.intercept import _class_original
from ppddpm.variants.registry import register_variant


@register_variant("ppdiffusers", families=None, scheduler=None, builtin=True)
def stock_step(scheduler, model_output, timestep, sample, **step_arguments):
    """ppdiffusers' own `step` of the scheduler's class, untouched: the reference."""
    return _class_original(type(scheduler))(scheduler, model_output, timestep, sample, **step_arguments)
