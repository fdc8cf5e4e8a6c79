"""One step record, for every sampler, and the observer that makes it.

    StepRecord(i, t, stage, sample, model_output, pred_original_sample, pred_original_sample_unclipped,
               prev_sample, noise, …)

is what a step of any ppdiffusers scheduler did, in one vocabulary (`ppddpm.core.adapters` says how
each family maps onto it). `StepObserver` is an observer layer (`ppddpm.core.intercept`) that turns
every call of `scheduler.step` into a StepRecord and hands it to a consumer — k-diffusion's
"one small dict per step to a callback". `record` / `sample_trajectory` (into a Trajectory) and
`compare` (into an ABReport, through the one sampling loop `ppddpm.core.loop`) are such consumers,
so they cannot drift apart.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ppddpm.core.adapters import GENERIC, HostTables, adapter_for, supported
from ppddpm.core.fixes import step_fixes
from ppddpm.core.intercept import Layer, intercept
from ppddpm.errors import BadType, BadValue


@dataclass
class StepRecord:
    """One call of `scheduler.step` (paddle tensors, as the step saw and made them)."""
    i: int                   # 0-based index of the call in this run
    t: Any                   # the timestep passed to the step (int, or float for Euler-type schedulers)
    stage: str               # "" for one call per timestep; Heun: "predictor" / "corrector"; PNDM: "prk1"… / "plms"
    sample: Any              # x_t, the step's input (in the scheduler's own parameterisation)
    model_output: Any        # ε̂ (or v̂, x̂_0) from the model
    pred_original_sample: Any                # x̂_0 as the step used it (after clip / threshold)
    pred_original_sample_unclipped: Any      # x̂_0 before any clipping (eq. 15, or x − σε)
    prev_sample: Any                         # the step's output: x_{t-1}
    noise: Any               # z the step added (None: no noise added, or not observed)
    scheduler: Any = None    # the scheduler that stepped, and what its adapter read around the call:
    extra: Any = None        # the step's other arguments (eta, generator, s_churn, …)
    ctx: Any = None

    def numbers(self, t, tables=None) -> dict:
        """The per-step columns the sampler's adapter knows (`ppddpm.core.adapters.Adapter.numbers`: the
        std of the noise the step added, ᾱ_t and ᾱ_prev or σ_t and σ_prev) at host timestep `t` (the
        record's t, read from the device): numbers or 0-d device tensors, never a host read of their
        own (`tables`: `ppddpm.core.adapters.HostTables` of the scheduler)."""
        return self.numbers_later()(t, tables)

    def sigma(self, t, tables=None):
        """Deprecated: `numbers(t, tables)["noise_std"]`, the std of the noise the step added."""
        warnings.warn("StepRecord.sigma(t) is StepRecord.numbers(t)['noise_std'] (the std of the noise the step "
                      "added); the old name goes in a later release", DeprecationWarning, stacklevel=2)
        return self.numbers(t, tables)["noise_std"]

    def numbers_later(self):
        """`numbers` as a function of (t, tables) that keeps only what they need — not the record's
        frames, so that a recorder waiting for t to reach the host holds no image memory."""
        scheduler, ctx = self.scheduler, self.ctx
        extra = {k: v for k, v in (self.extra or {}).items() if not hasattr(v, "place")}     # η, s_churn, …
        adapter = adapter_for(scheduler)
        return lambda t, tables=None: adapter.numbers(scheduler, t, extra, ctx, tables or HostTables(scheduler))


class StepObserver:
    """Turns each `scheduler.step` call into a StepRecord for `consume(record)`.

    want_noise  observe z (a replay of the RNG where the scheduler cannot take z as an
                argument: costs one extra draw, so only when asked; `keep(i)` says when).
    keep(i)     whether call i is recorded at all (the others run untouched).
    every_call  `every_call(i, timestep, output, recorded)` after every call; `recorded` is False
                for the calls `keep` skips (their StepRecord is not made).
    want_unclipped False leaves `pred_original_sample_unclipped` None, saving its paddle ops where the
                consumer does not use it.

    Nothing here reads a device tensor from the host (except the noise replay of the schedulers
    that draw from an RNG, when `want_noise`): the noise std, ᾱ and σ are computed by the consumer
    once it has t (`StepRecord.numbers`), so a recorder can keep every number on the device
    (`ppddpm.core.transfer`).
    """

    def __init__(self, consume: Callable[[StepRecord], None], want_noise: bool = False,
                 keep: Optional[Callable[[int], bool]] = None, every_call: Optional[Callable] = None,
                 want_unclipped: bool = True):
        self.consume, self.want_noise, self.keep = consume, want_noise, keep or (lambda i: True)
        self.every_call, self.want_unclipped = every_call, want_unclipped
        self.calls = 0

    def __call__(self, call, scheduler, model_output, timestep, sample, extra):
        adapter = adapter_for(scheduler)
        i = self.calls
        keep = self.keep(i)
        ctx = adapter.before(scheduler, model_output, timestep, sample, extra) if keep else {}
        if keep and adapter is GENERIC and self.want_noise:
            raise BadValue(f"the noise of {type(scheduler).__name__}'s step cannot be observed (ppddpm knows "
                           f"how for {supported()}); record without the 'noise' field")
        with step_fixes(scheduler):           # an upstream bug that would stop the step (core/fixes.py)
            if keep:
                out, z = adapter.run(call, scheduler, model_output, timestep, sample, extra, ctx, self.want_noise)
            else:
                out, z = call(), None
        self.calls += 1
        if self.every_call is not None:
            self.every_call(i, timestep, out, keep)
        if not keep:
            return out
        x0 = adapter.pred_original_sample(scheduler, model_output, timestep, sample, ctx, out)
        if x0 is None and adapter is GENERIC:
            raise BadType(f"{type(scheduler).__name__}.step returns no pred_original_sample, and ppddpm has no "
                          f"adapter for it; supported: {supported()}")
        record = StepRecord(
            i=i, t=timestep, stage=adapter.stage(scheduler, ctx), sample=sample, model_output=model_output,
            pred_original_sample=x0,
            pred_original_sample_unclipped=adapter.pred_original_sample_unclipped(scheduler, model_output, timestep,
                                                                                  sample, ctx, out)
            if self.want_unclipped else None,
            prev_sample=out.prev_sample, noise=z, scheduler=scheduler, extra=extra, ctx=ctx)
        self.consume(record)
        return out


def observe(scheduler, observer: StepObserver, name: str = "observe"):
    """Context: `observer` sees every step of this scheduler instance (or class)."""
    return intercept(scheduler, Layer("observer", observer, name))
