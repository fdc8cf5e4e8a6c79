"""Pixel-space pipelines around a UNet: the one sampling loop for any scheduler, and the article's drop-in.

- `SamplerPipeline`: `DDPMPipeline`'s loop written for any scheduler (x_T × init_noise_sigma, the UNet
  on `scale_model_input`), which Euler-type samplers need and `DDPMPipeline` skips; it runs
  `ppddpm.core.loop.sample_loop` with one lane, as `compare` runs it with many;
- `with_sampler(pipe, family)`: `pipe`'s UNet in a `SamplerPipeline` with a scheduler of another family;
- `RecordingDDPMPipeline`: the drop-in for the article's edited ppdiffusers, which edited
  `pipeline_ddpm.py` so that `pipe(seed=777)` returned a triple; this subclass gives the same triple
  without touching ppdiffusers:

    pipe = ppddpm.RecordingDDPMPipeline.from_pretrained(path_or_hub_id)
    output = pipe(seed=777)
    images = output[0].images          # the usual ImagePipelineOutput
    all_images = output[1]             # every x_t: all_images[i][0] is a PIL image
    all_x_0 = output[2]                # every x̂_0 (eq. 15)
"""
from __future__ import annotations

import contextlib

from ppdiffusers import DDPMPipeline

from ppddpm.core import rng as _rng
from ppddpm.core.adapters import adapter_for, families
from ppddpm.core.config import with_config
from ppddpm.core.loop import sample_loop, sample_shape
from ppddpm.core.rng import Draws
from ppddpm.errors import BadValue
from ppddpm.pipelines.recording import record
from ppddpm.storage.format import DEFAULT_FIELDS


class RecordingDDPMPipeline(DDPMPipeline):
    """A `DDPMPipeline` whose call records every step. `self.trajectory` keeps the last run
    as arrays (`ppddpm.Trajectory`)."""

    trajectory = None

    def __call__(self, batch_size: int = 1, generator=None, num_inference_steps: int = 1000,
                 output_type: str = "pil", return_dict: bool = True, seed=None, every: int = 1):
        """As `DDPMPipeline.__call__`, plus `seed=` (used when no generator is given) and
        `every=`; returns `(output, all_x_t, all_x0)`, each per recorded step a list of PIL images."""
        own = generator is None and seed is not None
        with _rng.seeded(seed) if own else contextlib.nullcontext(generator) as generator:
            with record(self, every=every, fields=DEFAULT_FIELDS, meta={"seed": seed}) as traj:
                output = super().__call__(batch_size=batch_size, generator=generator,
                                          num_inference_steps=num_inference_steps,
                                          output_type=output_type, return_dict=return_dict)
        if output_type == "pil":
            traj.images = output.images if return_dict else output[0]
        self.trajectory = traj
        return output, traj.to_pil("prev_sample"), traj.to_pil("pred_original_sample")


class SamplerPipeline(DDPMPipeline):
    """`DDPMPipeline`'s loop written for any scheduler, as ppdiffusers' latent-diffusion pipelines
    write it: x_T is scaled by `scheduler.init_noise_sigma`, the UNet sees
    `scheduler.scale_model_input(x_t, t)`, and `step` gets `eta` and `generator` where it takes
    them: the one sampling loop (`ppddpm.core.loop.sample_loop`) with one lane. For DDPM and DDIM
    (init_noise_sigma 1, scale_model_input the identity) it gives the same samples as `DDPMPipeline`
    / `DDIMPipeline`; for Euler-type schedulers it is what makes their samples right (`DDPMPipeline`
    skips both scalings).

        pipe = ppddpm.SamplerPipeline(unet=unet, scheduler=EulerAncestralDiscreteScheduler.from_config(cfg))
        traj = ppddpm.sample_trajectory(pipe, seed=0, num_inference_steps=50)
    """

    # its loop applies init_noise_sigma and scale_model_input (the recorder's UnscaledLoopWarning reads this)
    scales_model_input = True

    def __call__(self, batch_size: int = 1, generator=None, num_inference_steps: int = 1000, eta: float = 0.0,
                 output_type: str = "pil", return_dict: bool = True):
        from ppdiffusers.pipelines.pipeline_utils import ImagePipelineOutput

        image = None
        for step in sample_loop(lambda x, t: self.unet(x, t).sample, [[self.scheduler]], [Draws(generator)],
                                sample_shape(self.unet, batch_size), self.unet.dtype, num_inference_steps,
                                step_arguments={"eta": eta}, progress=self.progress_bar):
            image = step.records[0][0].prev_sample
        image = (image / 2 + 0.5).clip(0, 1).transpose([0, 2, 3, 1]).cpu().numpy()
        if output_type == "pil":
            image = self.numpy_to_pil(image)
        return ImagePipelineOutput(images=image) if return_dict else (image,)


def with_sampler(pipe, family: str):
    """`pipe`'s UNet with a scheduler of `family` ("ddim", "euler-ancestral", … — `ppddpm.core.adapters`)
    made from its scheduler's config (`ppddpm.with_config`), in a `SamplerPipeline`; `pipe` itself
    when its scheduler already is of that family."""
    import ppdiffusers

    known = families()
    if family not in known:
        raise BadValue(f"unknown sampler {family!r}; choose from {', '.join(known)}")
    if adapter_for(pipe.scheduler).family == family:
        return pipe
    scheduler = with_config(pipe.scheduler, cls=getattr(ppdiffusers, known[family][0]))
    new = SamplerPipeline(unet=pipe.unet, scheduler=scheduler)
    new.set_progress_bar_config(disable=True)
    return new
