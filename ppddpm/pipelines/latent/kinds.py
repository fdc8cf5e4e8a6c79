"""The latent pipelines ppddpm knows and how each is laid out (Rombach et al. 2022: a diffusion model on
a VAE's latents z, trained on E(x)·s, s the VAE's `scaling_factor`, an image being D(z / s)).

- `LatentKind` / `kind_of(pipe)`: each known pipeline class's denoiser (`unet` / `transformer`), its VAE
  (`vae` / `vqvae`), the argument that sets the batch, and the order of the unconditional and
  conditional halves of a classifier-free-guided model call (Stable Diffusion: uncond first; DiT:
  cond first, and the scheduler steps both halves);
- `latent_meta(pipe)`: what decoding needs (VAE class, scaling_factor, latent and image shapes),
  stored in the trajectory's metadata with `space="latent"`;
- `call_arguments`: `sample_trajectory`'s pipeline call (batch_size, num_images_per_prompt or
  class_labels), and `conditioning`, what it records of it (prompt, negative prompt, guidance scale, labels).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ppddpm.errors import BadValue


@dataclass(frozen=True)
class LatentKind:
    name: str
    classes: tuple              # pipeline class names (and their subclasses)
    denoiser: str               # attribute of the model that predicts the noise
    vae: str                    # attribute of the autoencoder
    batch_argument: Optional[str]   # the call argument that sets the batch (None: class_labels does)
    halves: Optional[tuple]     # order of the halves of a guided denoiser call; None: no guidance
    steps_both_halves: bool = False   # the scheduler steps the guided batch (2B rows), not B
    reciprocal: bool = False    # the pipeline decodes (1/s)·z, not z / s (the same number, other float32 bits)


KINDS = [
    LatentKind("stable-diffusion", ("StableDiffusionPipeline",), "unet", "vae", "num_images_per_prompt",
               ("uncond", "cond")),
    LatentKind("ldm", ("LDMPipeline",), "unet", "vqvae", "batch_size", None),
    LatentKind("dit", ("DiTPipeline",), "transformer", "vae", None, ("cond", "uncond"), steps_both_halves=True,
               reciprocal=True),
]


def kind_of(pipe) -> Optional[LatentKind]:
    """The LatentKind of a pipeline instance (None: a pixel-space or unknown pipeline)."""
    names = {k.__name__ for k in type(pipe).__mro__}
    return next((kind for kind in KINDS if names & set(kind.classes)), None)


def supported_pipelines() -> str:
    return ", ".join(c for kind in KINDS for c in kind.classes)


def _vae(pipe, kind):
    return getattr(pipe, kind.vae)


def latent_meta(pipe) -> Optional[dict]:
    """What decoding a recorded latent needs: the VAE's class and scaling_factor, the latent shape
    [C, h, w] the denoiser works on, the image shape [3, H, W] the VAE makes (h · 2^(levels−1))."""
    kind = kind_of(pipe)
    if kind is None:
        return None
    vae, model = _vae(pipe, kind), getattr(pipe, kind.denoiser)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    size = model.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return {"pipeline": type(pipe).__name__, "kind": kind.name, "vae_class": type(vae).__name__,
            "vae_attribute": kind.vae, "scaling_factor": float(vae.config.scaling_factor),
            "latent_shape": [int(model.config.in_channels), int(h), int(w)], "vae_scale_factor": factor,
            "image_shape": [int(vae.config.out_channels), int(h) * factor, int(w) * factor],
            "denoiser": type(model).__name__, "unscale": "reciprocal" if kind.reciprocal else "divide"}


def _describe(value):
    """A call argument as metadata: numbers, strings and lists as they are; a tensor by its shape."""
    if hasattr(value, "shape") and hasattr(value, "place"):
        return f"tensor {list(value.shape)} ({str(value.dtype).replace('paddle.', '')})"
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    return value if isinstance(value, (bool, int, float, str, type(None))) else str(value)


CONDITIONING = ("prompt", "negative_prompt", "prompt_embeds", "negative_prompt_embeds", "guidance_scale",
                "class_labels", "eta", "guidance_rescale")
DEFAULT_GUIDANCE = {"stable-diffusion": 7.5, "dit": 4.0}


def conditioning(pipe, pipe_kwargs: dict) -> dict:
    """The conditioning of a call as metadata: prompt / class labels (and their names, where the
    pipeline knows them), negative prompt, guidance scale (the pipeline's default when not given)."""
    kind = kind_of(pipe)
    out = {k: _describe(v) for k, v in pipe_kwargs.items() if k in CONDITIONING}
    if kind is not None and kind.name in DEFAULT_GUIDANCE:
        out.setdefault("guidance_scale", DEFAULT_GUIDANCE[kind.name])
    labels = getattr(pipe, "labels", None)
    if kind is not None and kind.name == "dit" and labels and "class_labels" in pipe_kwargs:
        names = {v: k for k, v in labels.items()}
        out["class_names"] = [names.get(int(c), str(c)) for c in pipe_kwargs["class_labels"]]
    return out


def call_arguments(pipe, batch_size: int, generator, num_inference_steps: int, pipe_kwargs: Optional[dict]):
    """The keyword arguments `sample_trajectory` calls `pipe` with. Pixel pipelines (DDPM, DDIM,
    SamplerPipeline): batch_size, generator, num_inference_steps, then pipe_kwargs, as ever.
    Stable Diffusion: batch_size becomes num_images_per_prompt; DiT: the batch is class_labels."""
    kwargs = dict(pipe_kwargs or {})
    kind = kind_of(pipe)
    base = {"generator": generator, "num_inference_steps": num_inference_steps}
    if kind is None:
        return dict(base, batch_size=batch_size, **kwargs)
    if kind.name == "dit":
        labels = kwargs.get("class_labels")
        if labels is None or isinstance(labels, (str, int)) or not len(labels):
            raise BadValue("DiTPipeline needs pipe_kwargs={'class_labels': [...]}: a list of class ids "
                           "(the batch is one sample per label)")
        if batch_size != 1 and batch_size != len(labels):
            raise BadValue(f"with DiTPipeline the batch is class_labels ({len(labels)} labels); leave batch_size "
                           f"at 1 or make it {len(labels)}, got {batch_size}")
        return dict(base, **kwargs)
    if kind.name == "stable-diffusion" and kwargs.get("prompt") is None and kwargs.get("prompt_embeds") is None:
        raise BadValue("StableDiffusionPipeline needs pipe_kwargs={'prompt': '…'} (or 'prompt_embeds': a tensor, "
                       "for a pipeline without a tokenizer)")
    if kind.name == "stable-diffusion" and kwargs.get("prompt") is not None and pipe.tokenizer is None:
        raise BadValue("this StableDiffusionPipeline has no tokenizer (it was saved without one), so it cannot read "
                       "a prompt; in Python pass prompt_embeds= (and negative_prompt_embeds=) from its text encoder")
    kwargs.setdefault(kind.batch_argument, batch_size)
    return dict(base, **kwargs)
