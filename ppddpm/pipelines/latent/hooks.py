"""What recording a latent pipeline needs beyond the step: `LatentSupport`, its implementation of the
recorder's seam (`ppddpm.core.support.RunSupport`).

The denoiser's output is *observed* by a forward post-hook (`DenoiserTap`, not recomputed) and split
into ε̂_uncond and ε̂_cond, whose x̂_0 are the step's own x̂_0 formula (`ppddpm.core.adapters`) applied
to each; DiT steps both halves of its guided batch, of which the first are the samples.
"""
from __future__ import annotations

from typing import Optional, Sequence

from ppddpm.core.adapters import GENERIC, adapter_for
from ppddpm.core.support import RunSupport
from ppddpm.errors import BadType, BadValue
from ppddpm.pipelines.latent.kinds import DEFAULT_GUIDANCE, conditioning, kind_of, latent_meta, supported_pipelines
from ppddpm.storage.format import GUIDANCE_FIELDS


def x0_of(scheduler, model_output, timestep, sample, ctx):
    """x̂_0 the step's formula makes of `model_output` at this step, before any clipping: eq. (15)
    for the ᾱ-schedulers, x − σ·ε in the σ-parameterisation of the Euler-type ones (MATH.md)."""
    adapter = adapter_for(scheduler)
    if adapter is GENERIC:
        raise BadType(f"the x̂_0 of a guidance half needs a scheduler ppddpm knows; {type(scheduler).__name__} "
                      f"is not one")
    return adapter.pred_original_sample_of(scheduler, model_output, timestep, sample, ctx)


class DenoiserTap:
    """A forward post-hook on the denoiser: keeps a reference to its last output (no copy, no
    host read), so the guidance halves are the values the pipeline combined, not a recomputation."""

    def __init__(self, model):
        self.last = None
        self.calls = 0
        self.handle = model.register_forward_post_hook(self._hook)

    def _hook(self, layer, inputs, output):
        self.last = output if hasattr(output, "shape") else (output[0] if isinstance(output, (tuple, list))
                                                             else output.sample)
        self.calls += 1

    def remove(self):
        self.handle.remove()


class LatentSupport(RunSupport):
    """The recorder's support for a latent pipeline (`ppddpm.core.support`): which rows of a step are the
    batch, the guidance fields of each recorded step, and the fields `decoder` decodes to pixels a chunk
    of steps at a time (`ppddpm.pipelines.latent.decode.ChunkDecoder`, or None); its metadata says the
    run is latent, what decoding needs, and the call's conditioning where `pipe_kwargs` are known."""

    def __init__(self, pipe, fields: Sequence[str], pipe_kwargs: Optional[dict] = None, decoder=None):
        super().__init__(pipe)
        self.kind = kind_of(pipe)
        self.decoder = decoder
        self.fields = decoder.names if decoder is not None else ()
        self.meta = {"space": "latent", "latent": latent_meta(pipe)}
        if pipe_kwargs is not None:                   # the call is known: its prompt / labels / guidance
            self.meta["conditioning"] = conditioning(pipe, pipe_kwargs)
        if decoder is not None:
            self.meta["decoded"] = decoder.describe()
        self.guided_fields = [f for f in fields if f in GUIDANCE_FIELDS]
        kwargs = pipe_kwargs or {}
        self.batch_rows = None
        if self.kind.steps_both_halves and "class_labels" in kwargs:
            scale = kwargs.get("guidance_scale", DEFAULT_GUIDANCE.get(self.kind.name, 1.0))
            self.batch_rows = len(kwargs["class_labels"]) if scale > 1 else None
        if self.guided_fields and self.kind.halves is None:
            raise BadValue(f"{type(pipe).__name__} runs no classifier-free guidance; the fields "
                           f"{', '.join(self.guided_fields)} exist for {supported_pipelines()} with guidance_scale > 1")
        if self.guided_fields and self.kind.steps_both_halves and self.batch_rows is None:
            raise BadValue(f"{', '.join(self.guided_fields)} need a guided {type(pipe).__name__} run: record it with "
                           f"pipe_kwargs={{'class_labels': [...], 'guidance_scale': g > 1}} (sample_trajectory does)")
        self.tap = DenoiserTap(getattr(pipe, self.kind.denoiser)) if self.guided_fields else None

    def close(self):
        if self.tap is not None:
            self.tap.remove()

    def decoded_shapes(self, batch: int) -> dict:
        return self.decoder.shapes(batch) if self.decoder is not None else {}

    def chunk(self, shapes: dict, itemsize: dict) -> Optional[int]:
        return self.decoder.chunk(shapes, itemsize) if self.decoder is not None else None

    def decode(self, frames: dict) -> dict:
        return self.decoder(frames) if self.decoder is not None else {}

    def unscaled_loop(self, scheduler) -> Optional[str]:
        """Once the timesteps are set: why the pipeline's loop mis-scales this σ-space sampler
        (init_noise_sigma ≠ 1: Euler, Heun, LMS, …), or None. DiTPipeline never multiplies x_T by
        init_noise_sigma and hands `scheduler.step` the *scaled* model input as the sample;
        LDMPipeline multiplies x_T by init_noise_sigma before set_timesteps, i.e. by σ_max of the
        full training schedule (ppdiffusers 0.29; StableDiffusionPipeline sets the timesteps first).
        The recorder warns with it (`ppddpm.core.recorder.UnscaledLoopWarning`)."""
        sigma = float(scheduler.init_noise_sigma)
        if sigma == 1.0 or self.kind.name == "stable-diffusion":
            return None
        why = ("never multiplies x_T by init_noise_sigma and passes scheduler.step the scaled model input as its "
               "sample" if self.kind.name == "dit" else
               "multiplies x_T by init_noise_sigma before set_timesteps (σ_max of the full schedule, not of these "
               "steps)")
        return (f"{type(self.pipe).__name__} {why}; with {type(scheduler).__name__} (init_noise_sigma "
                f"{sigma:.4g}) the run records what it ran, which is not that sampler's process")

    def rows(self, tensor):
        """The rows of a stepped tensor that are the batch (DiT: the first half of a guided run)."""
        return tensor if self.batch_rows is None or tensor is None else tensor[: self.batch_rows]

    def step_fields(self, rec, frame: dict) -> dict:
        """`frame` (the step's fields) cut to the batch's rows, plus the guidance fields."""
        frame = {k: self.rows(v) for k, v in frame.items()}
        if self.guided_fields:
            frame.update(self._guidance(rec))
        return frame

    def _guidance(self, rec) -> dict:
        out = self.tap.last
        channels, batch = rec.sample.shape[1], self.batch_rows or rec.sample.shape[0]
        if out is None or out.shape[0] != 2 * batch:
            raise BadValue(f"the guidance fields need classifier-free guidance (guidance_scale > 1): the denoiser "
                           f"saw {None if out is None else out.shape[0]} rows for a batch of {batch}")
        first, second = out[:batch, :channels], out[batch: 2 * batch, :channels]
        halves = dict(zip(self.kind.halves, (first, second)))
        sample = rec.sample[:batch]
        values = {"model_output_uncond": halves["uncond"], "model_output_cond": halves["cond"]}
        for half in ("uncond", "cond"):
            name = f"pred_original_sample_{half}"
            if name in self.guided_fields:
                values[name] = x0_of(rec.scheduler, halves[half], rec.t, sample, rec.ctx)
        return {k: values[k] for k in self.guided_fields}
