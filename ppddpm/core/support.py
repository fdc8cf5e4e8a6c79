"""The seam between the recorder and the kinds of pipeline it records: what a recording needs to know
about the pipeline that runs, beyond its scheduler.

`ppddpm.core.recorder.record_steps` asks the run's `RunSupport`:

- `unscaled_loop(scheduler)`  once the timesteps are set: why this pipeline's loop mis-scales this
                              sampler (a warning, `UnscaledLoopWarning`), or None;
- `rows(tensor)`              the rows of a stepped tensor that are the batch (DiT steps both halves of
                              its guided batch; the others step the batch itself);
- `step_fields(record, frame)` the step's fields (`frame`) cut to those rows, plus the fields the
                              pipeline adds (the guidance halves ε̂_uncond, ε̂_cond and their x̂_0);
- `decoded_shapes(batch)`, `chunk(shapes, itemsize)`, `decode(frames)`  fields decoded to pixels a
                              chunk of steps at a time (`fields` names them), and the chunk that fits them;
- `close()`                   the run ended (hooks on the model removed): called by whoever made it.

`meta` is added to the trajectory's metadata (a latent run's space, VAE and conditioning).
This class is the pixel-space pipeline's support (DDPMPipeline, DDIMPipeline, `SamplerPipeline`, or
a bare scheduler): every row is the batch, no fields of its own, nothing decoded.
`ppddpm.pipelines.latent` implements it for Stable Diffusion, LDM and DiT, and `ppddpm.record`
(`ppddpm.pipelines.recording`) picks the one that fits the pipeline — core knows no pipeline family.
"""
from __future__ import annotations

from typing import Optional


class RunSupport:
    fields: tuple = ()          # the fields `decode` adds (NAME_decoded)

    def __init__(self, pipe=None):
        self.pipe = pipe        # the pipeline whose loop runs (None: a bare scheduler)
        self.meta: dict = {}

    def unscaled_loop(self, scheduler) -> Optional[str]:
        """A `DDPMPipeline` / `DDIMPipeline` loop (a subclass whose loop scales, as `SamplerPipeline`'s
        does, says so by `scales_model_input`) skips init_noise_sigma and `scale_model_input`; every
        ppdiffusers scheduler whose `scale_model_input` is not the identity (Euler, Euler ancestral, LMS,
        Heun, KDPM2, …) has init_noise_sigma > 1, so this one number tells whether that matters."""
        from ppdiffusers import DDIMPipeline, DDPMPipeline

        pipe = self.pipe
        if not isinstance(pipe, (DDPMPipeline, DDIMPipeline)) or getattr(type(pipe), "scales_model_input", False):
            return None
        sigma = float(scheduler.init_noise_sigma)
        if sigma == 1.0:
            return None
        return (f"{type(pipe).__name__} skips init_noise_sigma ({sigma:.4g}) and scale_model_input, which "
                f"{type(scheduler).__name__} needs: its samples will be wrong. Use "
                f"ppddpm.SamplerPipeline(unet=…, scheduler=…) or ppddpm.with_sampler(pipe, family)")

    def rows(self, tensor):
        return tensor

    def step_fields(self, record, frame: dict) -> dict:
        return frame

    def decoded_shapes(self, batch: int) -> dict:
        return {}

    def chunk(self, shapes: dict, itemsize: dict) -> Optional[int]:
        """Steps per device → host transfer when decoded frames count too; None: the transfer's own choice."""
        return None

    def decode(self, frames: dict) -> dict:
        return {}

    def close(self):
        pass
