"""The one sampling loop: x_T, then per timestep one denoiser call and every lane's `scheduler.step`.

    for step in sample_loop(denoise, schedulers, sources, shape, dtype, num_inference_steps):
        step.i, step.t, step.records[v][s]        # the StepRecord of variant v on seed s

A generator that yields each step as it is made, like improved-diffusion's
`p_sample_loop_progressive`, with one signature for every use, like k-diffusion's samplers
(`sample_euler(model, x, sigmas, …)`). `SamplerPipeline.__call__` runs it with one lane (its own
scheduler and generator) and keeps the last `prev_sample`; `compare` runs it with many lanes and
reduces the records to statistics. Neither has a loop of its own.

Lanes. `schedulers` is a grid [V][S]: V variants (step formulas, each patched into its own
schedulers beforehand) × S seeds. Every lane steps its own scheduler instance, so a sampler that
keeps state between steps (multistep history, step index) is never fed another lane's steps.

- mode="free": each variant drives its own trajectory: its `prev_sample` is its next x_t.
- mode="shadow": variant 0 drives; the others are applied to the same (x_t, ε̂, z) and their
  output goes no further (exact per-step discrepancy, one denoiser input per seed).
- batched=True: the denoiser inputs of all trajectories and seeds go into one `denoise` call per
  step; batched=False: one call per trajectory, each at its own batch size (paddle's float32
  kernels round differently at different batch sizes, so only this is bitwise each lane's solo run).

Noise is drawn here and nowhere else. `sources[s]` is seed s's source (`ppddpm.core.rng`): a
`SeedStream`, or `Draws(generator)` for a pipeline's own generator. After `set_timesteps`,
x_T = randn_tensor(shape, generator, dtype) · init_noise_sigma — init_noise_sigma is the σ of the
first step that runs, so it is read after (tests/test_initial_noise.py); the denoiser sees
`scale_model_input(x_t, t)`. Each step's draws of seed s happen inside `with source:`, all its
variants inside one `source.replaying()`, so every variant at a step consumes the same z; a
`SeedStream` thus gives bitwise the x_T and z of a solo `pipe(generator=Generator().manual_seed(s))`.

Records. observe=False: a lane's StepRecord holds what `step` returned (prev_sample, and
pred_original_sample where the scheduler returns one) and costs no device op. observe=True: each
lane's scheduler carries a `StepObserver` while the loop runs (`ppddpm.core.records`): x̂_0 as
the step used it, per sampler family, and x̂_0 before clipping on the lanes that drive a trajectory.
The observers (and `paddle.no_grad`) stay in place while the generator is suspended at a yield, and
leave when it ends or is closed.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence

from ppddpm.core.fixes import step_fixes
from ppddpm.core.records import StepObserver, StepRecord, observe as observing
from ppddpm.errors import BadValue

MODES = ("shadow", "free")


@dataclass
class LoopStep:
    """One timestep of a run: `records[v][s]` is variant v's StepRecord on seed s."""
    i: int
    t: Any
    records: List[List[StepRecord]]


def sample_loop(denoise: Callable, schedulers: Sequence[Sequence], sources: Sequence, shape: tuple, dtype,
                num_inference_steps: int, *, mode: str = "free", batched: bool = True,
                step_arguments: Optional[dict] = None, observe: bool = False,
                progress: Callable = iter) -> Iterator[LoopStep]:
    """Run `schedulers` [V][S] from x_T, yielding each step (module docstring).

    `denoise(x, t)`: ε̂ for model inputs x ([k·B, …]: k stacked batches of `shape`); `sources[s]`:
    seed s's noise; `step_arguments`: passed to every `step` that takes them (`eta`), with the
    source's generator; `progress`: wraps the timesteps (a progress bar)."""
    if mode not in MODES:
        raise BadValue(f"mode must be 'shadow' or 'free', got {mode!r}")
    import paddle
    from ppdiffusers.utils.paddle_utils import randn_tensor

    n_v, n_s = len(schedulers), len(sources)
    drivers = list(range(n_v)) if mode == "free" else [0]            # the variants that drive a trajectory
    for row in schedulers:
        for scheduler in row:
            scheduler.set_timesteps(num_inference_steps)              # before init_noise_sigma is read
    x = [[None] * n_s for _ in drivers]
    for s, source in enumerate(sources):
        with source:
            z = randn_tensor(shape, generator=source.generator, dtype=dtype)
        for lane, v in enumerate(drivers):
            x[lane][s] = z * schedulers[v][s].init_noise_sigma
    arguments = [[_accepted(sched, dict(step_arguments or {}, **src.step_arguments)) for sched, src in
                  zip(row, sources)] for row in schedulers]
    slots = [[[] for _ in range(n_s)] for _ in range(n_v)]
    with contextlib.ExitStack() as stack, paddle.no_grad():
        if observe:
            for v, row in enumerate(schedulers):
                for s, scheduler in enumerate(row):
                    stack.enter_context(observing(scheduler, StepObserver(
                        slots[v][s].append, want_unclipped=v in drivers), "loop"))
        for i, t in enumerate(progress(schedulers[0][0].timesteps)):
            inputs = [schedulers[v][s].scale_model_input(x[lane][s], t)
                      for lane, v in enumerate(drivers) for s in range(n_s)]
            eps = _denoise_all(denoise, inputs, t, batched)
            records = [[None] * n_s for _ in range(n_v)]
            for s, source in enumerate(sources):
                with source.replaying() if n_v > 1 else contextlib.nullcontext():
                    for v in range(n_v):
                        lane = v if mode == "free" else 0
                        records[v][s] = _step(schedulers[v][s], eps[lane * n_s + s], t, x[lane][s], source,
                                              arguments[v][s], i, slots[v][s] if observe else None)
                for lane, v in enumerate(drivers):                   # only after every variant saw x_t
                    x[lane][s] = records[v][s].prev_sample
            yield LoopStep(i, t, records)


def sample_shape(model, batch_size: int) -> tuple:
    """x_T's shape for a denoiser: [batch, in_channels, *sample_size] (an int sample_size is square)."""
    size = model.config.sample_size
    return (batch_size, model.config.in_channels) + ((size, size) if isinstance(size, int) else tuple(size))


def _accepted(scheduler, arguments: dict) -> dict:
    """The arguments `scheduler.step` takes, of those given."""
    taken = inspect.signature(scheduler.step).parameters
    return {k: v for k, v in arguments.items() if k in taken}


def _denoise_all(denoise, inputs: list, t, batched: bool) -> list:
    """ε̂ for each input: one call for all of them (batched), or one call each."""
    import paddle

    if len(inputs) == 1:
        return [denoise(inputs[0], t)]
    if batched:
        return paddle.split(denoise(paddle.concat(inputs, axis=0), t), len(inputs), axis=0)
    return [denoise(x, t) for x in inputs]


def _step(scheduler, model_output, t, sample, source, arguments: dict, i: int, slot: Optional[list]) -> StepRecord:
    """One lane's step, its draws from its source, inside its scheduler's upstream fixes (core/fixes.py);
    its StepRecord (observed, or from the output)."""
    with source, step_fixes(scheduler):
        out = scheduler.step(model_output, t, sample, **arguments)
    if slot is not None:
        return slot.pop()
    return StepRecord(i=i, t=t, stage="", sample=sample, model_output=model_output,
                      pred_original_sample=getattr(out, "pred_original_sample", None),
                      pred_original_sample_unclipped=None, prev_sample=out.prev_sample, noise=None,
                      scheduler=scheduler, extra=arguments)
