"""Latent pipelines: what a recorded Stable Diffusion, LDM or DiT run needs beyond the step.

A latent diffusion pipeline runs the same reverse process as `DDPMPipeline`, on a VAE's latents
z instead of pixels (Rombach et al. 2022, eq. 2: the diffusion model is trained on E(x)·s, s the
VAE's `scaling_factor`, and an image is D(z / s)). The recorder observes `scheduler.step` as for any
pipeline, so its frames are latents [B, C, h, w]; this package adds, one module per job:

- `kinds`     which pipelines are latent and how each is laid out (`kind_of`, `latent_meta`), the
              call `sample_trajectory` makes (`call_arguments`) and its `conditioning`;
- `hooks`     `LatentSupport`, the recorder's seam (`ppddpm.core.support`) for them: the batch's rows,
              the guidance halves observed on the denoiser, fields decoded while the run goes;
- `decode`    latents → pixels: the pipeline's VAE, or a fitted linear preview (`decode`,
              `approx_decoder`, `ChunkDecoder`), its gap to the VAE measured;
- `display`   what the pictures show of a latent run (`displayable`, `caption`): no paddle needed;
- `denoiser`  the guided ε̂ the pipeline's own loop makes, for `compare`'s loop.
"""
from ppddpm.pipelines.latent.decode import (METHODS, ApproxDecoder, ChunkDecoder, approx_decoder, decode,  # noqa: F401
                                            describe_gap, gap, vae_decode)
from ppddpm.pipelines.latent.denoiser import denoiser  # noqa: F401
from ppddpm.pipelines.latent.display import LATENT_RANGE, caption, channels_view, displayable  # noqa: F401
from ppddpm.pipelines.latent.hooks import DenoiserTap, LatentSupport, x0_of  # noqa: F401
from ppddpm.pipelines.latent.kinds import (CONDITIONING, DEFAULT_GUIDANCE, KINDS, LatentKind,  # noqa: F401
                                           call_arguments, conditioning, kind_of, latent_meta, supported_pipelines)
