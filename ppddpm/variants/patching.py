"""`patch_step`: run a step variant in place of a scheduler's `step`, without editing ppdiffusers."""
from __future__ import annotations

import contextlib

from ppddpm.core.adapters import scheduler_of
from ppddpm.core.intercept import Layer, intercept
from ppddpm.variants.registry import get_variant


@contextlib.contextmanager
def patch_step(target, variant):
    """Swap the step formula for the duration of the block.

        with ppddpm.patch_step(pipe.scheduler, "direct"):      # this instance only
            pipe(...)
        with ppddpm.patch_step(DDPMScheduler, "direct"):        # class-wide, for code that
            run_code_that_builds_its_own_scheduler()           # builds its own scheduler

    `target` may also be a pipeline (its scheduler is patched). `variant` is a registered
    name (`ppddpm.variants()`) or a function with the contract of the scheduler's `step`
    (`ppddpm.core.intercept`); a variant written for one family (DDPM's) refuses other schedulers.
    Restored on exit, also on exceptions; nestable (the innermost patch wins; an instance
    patch wins over a class patch); composes with `ppddpm.record` in either order.
    A class-wide patch is seen by every thread: prefer instance patches in threaded code.
    """
    v = get_variant(variant)
    scheduler = scheduler_of(target, "patch_step", families=v.families)
    with intercept(scheduler, Layer("formula", v.step, v.spec, v.arguments)):
        yield v
