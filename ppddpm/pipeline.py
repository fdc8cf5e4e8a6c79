"""`RecordingDDPMPipeline`: the drop-in for the article's edited ppdiffusers.

The article edited `pipeline_ddpm.py` so that `pipe(seed=777)` returned a triple; this
subclass gives the same triple without touching ppdiffusers:

    pipe = ppddpm.RecordingDDPMPipeline.from_pretrained(path_or_hub_id)
    output = pipe(seed=777)
    images = output[0].images          # the usual ImagePipelineOutput
    all_images = output[1]             # every x_t: all_images[i][0] is a PIL image
    all_x_0 = output[2]                # every x̂_0 (eq. 15)
"""
from __future__ import annotations

from ppdiffusers import DDPMPipeline

from . import _rng
from .recording import DEFAULT_FIELDS, record


class RecordingDDPMPipeline(DDPMPipeline):
    """A `DDPMPipeline` whose call records every step. `self.trajectory` keeps the last run
    as arrays (`ppddpm.Trajectory`)."""

    trajectory = None

    def __call__(self, batch_size: int = 1, generator=None, num_inference_steps: int = 1000,
                 output_type: str = "pil", return_dict: bool = True, seed=None, every: int = 1):
        """As `DDPMPipeline.__call__`, plus `seed=` (used when no generator is given) and
        `every=`; returns `(output, all_x_t, all_x0)`, each per recorded step a list of PIL images."""
        own = generator is None and seed is not None
        if own:
            generator = _rng.make_generator(seed)
        try:
            with record(self, every=every, fields=DEFAULT_FIELDS, meta={"seed": seed}) as traj:
                output = super().__call__(batch_size=batch_size, generator=generator,
                                          num_inference_steps=num_inference_steps,
                                          output_type=output_type, return_dict=return_dict)
        finally:
            if own:
                _rng.release_generator(generator)
        if output_type == "pil":
            traj.images = output.images if return_dict else output[0]
        self.trajectory = traj
        return output, traj.to_pil("prev_sample"), traj.to_pil("pred_original_sample")
