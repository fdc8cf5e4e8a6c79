"""The small UNet and scheduler ppddpm trains and ships (ppdiffusers parts, nothing custom)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Sequence

from ppddpm.errors import BadValue


NORM_GROUPS = 8     # GroupNorm groups of small_unet: every level's channels must be a multiple of it


def small_unet(resolution: int = 16, channels: int = 1, block_out_channels: Sequence[int] = (32, 64),
               layers_per_block: int = 1, attention: bool = True, out_channels: int = None):
    """A ~0.7M-parameter `UNet2DModel`: two resolution levels, self-attention at the lower one.
    `out_channels`: the image's channels by default; twice that for a learned variance (learned_range).

    Sized for a 2-core CPU: at 16x16 one forward pass at batch 1 takes ~13 ms, so a
    1000-step DDPM sample takes ~15 s.
    """
    from ppdiffusers import UNet2DModel

    levels = len(block_out_channels)
    down = ["DownBlock2D"] * levels
    up = ["UpBlock2D"] * levels
    if attention and levels > 1:
        down[-1] = "AttnDownBlock2D"
        up[0] = "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=resolution,
        in_channels=channels,
        out_channels=out_channels or channels,
        layers_per_block=layers_per_block,
        block_out_channels=tuple(block_out_channels),
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=NORM_GROUPS,
    )


def ddpm_scheduler(num_train_timesteps: int = 1000, **overrides):
    """The paper's schedule (MATH.md, Notation): T=1000, β linear 1e-4 → 0.02, σ_t² = β̃_t.

    `clip_sample=True` is ppdiffusers' default and what hub DDPM checkpoints ship with.
    """
    from ppdiffusers import DDPMScheduler

    config = dict(num_train_timesteps=num_train_timesteps, beta_start=1e-4, beta_end=0.02,
                  beta_schedule="linear", variance_type="fixed_small", clip_sample=True)
    config.update(overrides)
    return DDPMScheduler(**config)


# --------------------------------------------------------------------------- tiny latent pipelines

LATENT_KINDS = ("stable-diffusion", "ldm", "dit")


def tiny_latent_pipeline(kind: str = "stable-diffusion", seed: int = 0, tokenizer: bool = True):
    """The smallest real ppdiffusers latent pipeline of `kind`, random weights, built offline: a
    2-level VAE (8/16 channels; a VQModel for "ldm") turning 4x8x8 latents into 16x16 RGB images, and
    a 2-level UNet on them ("dit": a 1-layer Transformer2DModel, classes 0–999). For Stable Diffusion a
    1-layer CLIP text encoder and (tokenizer=True) a CLIP tokenizer of single letters
    (`tiny_clip_tokenizer`). Made to run recording, decoding and pictures in seconds on a CPU — their
    images are noise, as the weights are."""
    import paddle
    from ppdiffusers import (AutoencoderKL, DDIMScheduler, DiTPipeline, LDMPipeline, StableDiffusionPipeline,
                             Transformer2DModel, UNet2DConditionModel, UNet2DModel, VQModel)

    if kind not in LATENT_KINDS:
        raise BadValue(f"kind must be one of {', '.join(LATENT_KINDS)}, got {kind!r}")
    paddle.seed(seed)
    vae_args = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                    up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                    latent_channels=4, norm_num_groups=4, sample_size=16)
    unet_args = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
                     norm_num_groups=4)
    scheduler = DDIMScheduler(clip_sample=False, steps_offset=1)
    if kind == "ldm":
        parts = dict(vqvae=VQModel(num_vq_embeddings=16, vq_embed_dim=4, **vae_args),
                     unet=UNet2DModel(down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                                      **unet_args))
        pipe = LDMPipeline(scheduler=scheduler, **parts)
    elif kind == "dit":
        parts = dict(vae=AutoencoderKL(**vae_args), transformer=Transformer2DModel(
            num_attention_heads=2, attention_head_dim=4, in_channels=4, out_channels=8, num_layers=1, sample_size=8,
            patch_size=2, norm_type="ada_norm_zero", num_embeds_ada_norm=1000, norm_num_groups=4))
        pipe = DiTPipeline(scheduler=scheduler, id2label={"1": "goldfish, Carassius auratus", "7": "cock"}, **parts)
    else:
        from ppdiffusers.transformers import CLIPTextConfig, CLIPTextModel

        parts = dict(vae=AutoencoderKL(**vae_args), unet=UNet2DConditionModel(
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=16, attention_head_dim=2, **unet_args),
            text_encoder=CLIPTextModel(CLIPTextConfig(vocab_size=100, hidden_size=16, intermediate_size=16,
                                                      num_hidden_layers=1, num_attention_heads=2,
                                                      max_position_embeddings=16)))
        pipe = StableDiffusionPipeline(scheduler=scheduler, tokenizer=tiny_clip_tokenizer() if tokenizer else None,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False,
                                       **parts)
    for model in parts.values():
        model.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_clip_tokenizer():
    """A CLIP tokenizer written on the spot: single letters and no merges (a word is its letters), 54
    ids, prompts cut to 16 tokens (the tiny text encoder's length)."""
    from ppdiffusers.transformers import CLIPTokenizer

    letters = list("abcdefghijklmnopqrstuvwxyz")
    tokens = letters + [c + "</w>" for c in letters]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens + ["<|startoftext|>", "<|endoftext|>"]))}
    folder = Path(tempfile.mkdtemp(prefix="ppddpm-tokenizer-"))   # kept: save_pretrained copies the files from it
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
