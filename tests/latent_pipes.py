"""Tiny latent pipelines built in code (random weights, nothing downloaded) for tests/test_latent.py.

Each is the smallest real ppdiffusers pipeline of its kind: a 2-level VAE (8/16 channels) that
turns 8x8x4 latents into 16x16 RGB images, a 2-level UNet (or a 1-layer DiT transformer) on those
latents. Stable Diffusion runs from `prompt_embeds` made by a 1-layer CLIPTextModel (no tokenizer):
ppdiffusers.transformers' CLIPTextModel, since the pipeline reads `text_encoder.dtype`.
"""
import paddle
from ppdiffusers import (AutoencoderKL, DDIMScheduler, DiTPipeline, LDMPipeline, StableDiffusionPipeline,
                         Transformer2DModel, UNet2DConditionModel, UNet2DModel, VQModel)
from ppdiffusers.transformers import CLIPTextConfig, CLIPTextModel

VAE_ARGS = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                latent_channels=4, norm_num_groups=4, sample_size=16)
UNET_ARGS = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
                 norm_num_groups=4)


def _eval(*models):
    for m in models:
        m.eval()
    return models


def scheduler():
    return DDIMScheduler(clip_sample=False, steps_offset=1)


def ldm_pipeline(seed=10):
    paddle.seed(seed)
    vq = VQModel(num_vq_embeddings=16, vq_embed_dim=4, **VAE_ARGS)
    unet = UNet2DModel(down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, **UNET_ARGS)
    _eval(vq, unet)
    pipe = LDMPipeline(vqvae=vq, unet=unet, scheduler=scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd_pipeline(seed=11):
    paddle.seed(seed)
    vae = AutoencoderKL(**VAE_ARGS)
    unet = UNet2DConditionModel(down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=2, **UNET_ARGS)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=100, hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=8))
    _eval(vae, unet, text)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=None, unet=unet, scheduler=scheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prompt_embeds(pipe, ids):
    """The text encoder's output for token ids (what the pipeline makes of a tokenized prompt)."""
    with paddle.no_grad():
        return pipe.text_encoder(paddle.to_tensor([ids], dtype="int64"))[0]


def dit_pipeline(seed=12):
    paddle.seed(seed)
    vae = AutoencoderKL(**VAE_ARGS)
    transformer = Transformer2DModel(num_attention_heads=2, attention_head_dim=4, in_channels=4, out_channels=8,
                                     num_layers=1, sample_size=8, patch_size=2, norm_type="ada_norm_zero",
                                     num_embeds_ada_norm=1000, norm_num_groups=4)
    _eval(vae, transformer)
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler(),
                       id2label={"1": "goldfish, Carassius auratus", "7": "cock"})
    pipe.set_progress_bar_config(disable=True)
    return pipe
