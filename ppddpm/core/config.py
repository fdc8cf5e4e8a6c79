"""Scheduler config overrides that hold.

ppdiffusers' `ConfigMixin` keeps `_use_default_values` in a scheduler's config: the keys that
were not given explicitly (every key of a scheduler built in code, every key a config file
omits). `from_config(config)` re-applies the *defaults* for those keys, so

    type(s).from_config(dict(s.config, clip_sample=False))     # can silently keep clip_sample=True

loses the override. `with_config` drops that list, so every value in force is passed on
explicitly and the override wins:

    sched = ppddpm.with_config(pipe.scheduler, clip_sample=False)
"""
from __future__ import annotations

import inspect

from ppddpm.errors import BadValue


def config_in_force(scheduler_or_config) -> dict:
    """The scheduler's config as values, without ppdiffusers' bookkeeping keys (`_class_name`,
    `_use_default_values`, …): what a copy must be given to be the same scheduler."""
    config = getattr(scheduler_or_config, "config", scheduler_or_config)
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def with_config(scheduler, cls=None, **overrides):
    """A new scheduler of `cls` (default: the scheduler's own class) with `scheduler`'s config in
    force and `overrides` applied, whatever `_use_default_values` says. Keys `cls` does not
    know are dropped by ppdiffusers as usual (DDPM → DDIM carries the schedule, not the
    variance type); an override `cls` does not know is an error."""
    cls = cls or type(scheduler)
    known = set(inspect.signature(cls.__init__).parameters)
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise BadValue(f"{cls.__name__} has no config key {', '.join(map(repr, unknown))}; "
                       f"its keys: {', '.join(sorted(known - {'self'}))}")
    values = {k: v for k, v in config_in_force(scheduler).items() if k in known}
    values.update(overrides)
    return cls(**values)
