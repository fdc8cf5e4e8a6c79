"""The reverse process written out by hand over `scheduler.step`: the oracle of every bitwise
recording test (SamplerPipeline, `record`, `sample_trajectory`).

It is deliberately ppddpm-free: no pipeline, no recorder, no ppddpm helper — only paddle,
ppdiffusers' `randn_tensor` and the scheduler's own `set_timesteps`, `init_noise_sigma`,
`scale_model_input` and `step`, in the order ppdiffusers' pipelines call them. What ppddpm records
must be this loop's values bit for bit (same seed, same generator, same float32 operations).
"""
import inspect
import uuid
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import paddle
from ppdiffusers.utils.paddle_utils import randn_tensor


@dataclass
class HandRun:
    timesteps: np.ndarray            # the t of every step call, as ints
    prev_sample: np.ndarray          # x_{t-1} of every call, stacked: (calls, batch, C, H, W)
    returned_x0: List[Optional[np.ndarray]]   # the step's own pred_original_sample per call (None: it returns none)

    @property
    def pred_original_sample(self) -> np.ndarray:
        return np.stack(self.returned_x0)


def predict(model, x, t):
    """The model output at (x, t): a UNet2DModel's `.sample`, or what a plain function returns."""
    out = model(x, t)
    return getattr(out, "sample", out)


def hand_loop(model, scheduler, seed, steps, *, batch_size=1, step_kwargs=None, scaled=True, x_T=None) -> HandRun:
    """`steps` sampling steps of `scheduler` on `model` (a UNet2DModel, or any function (x, t) → output).

    As a pipeline writes it: a generator seeded with `seed`; `set_timesteps(steps)` (before
    `init_noise_sigma`, which depends on it); x_T drawn from the generator with the UNet's shape and
    `batch_size` (or given as `x_T`), times `init_noise_sigma`; each step's model input through
    `scale_model_input`; `generator` passed to the step where its signature takes one, with
    `step_kwargs`. `scaled=False` is DDPMPipeline's loop, which skips both scalings.
    """
    generator = paddle.Generator().manual_seed(seed, generator_name=f"hand-loop-{seed}-{uuid.uuid4()}")
    scheduler.set_timesteps(steps)
    if x_T is None:
        size = model.config.sample_size
        x_T = randn_tensor((batch_size, model.config.in_channels, size, size), generator=generator, dtype=model.dtype)
    x = x_T * scheduler.init_noise_sigma if scaled else x_T
    kwargs = dict(step_kwargs or {})
    if "generator" in inspect.signature(type(scheduler).step).parameters:
        kwargs["generator"] = generator
    timesteps, prev, x0 = [], [], []
    with paddle.no_grad():
        for t in scheduler.timesteps:
            out = scheduler.step(predict(model, scheduler.scale_model_input(x, t) if scaled else x, t), t, x, **kwargs)
            x = out.prev_sample
            timesteps.append(int(t))
            prev.append(x.numpy())
            returned = getattr(out, "pred_original_sample", None)
            x0.append(None if returned is None else returned.numpy())
    return HandRun(np.array(timesteps), np.stack(prev), x0)
