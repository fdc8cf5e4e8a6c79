"""Tiny latent pipelines for tests/test_latent.py: `ppddpm.model.builders.tiny_latent_pipeline` (random weights,
nothing downloaded; 4x8x8 latents, 16x16 images). Stable Diffusion runs from `prompt_embeds` made by its
1-layer CLIPTextModel — ppdiffusers.transformers' (the pipeline reads `text_encoder.dtype`) — and has no
tokenizer unless asked."""
import paddle

from ppddpm.model.builders import tiny_latent_pipeline


def ldm_pipeline(seed=10):
    return tiny_latent_pipeline("ldm", seed)


def sd_pipeline(seed=11, tokenizer=False):
    return tiny_latent_pipeline("stable-diffusion", seed, tokenizer=tokenizer)


def dit_pipeline(seed=12):
    return tiny_latent_pipeline("dit", seed)


def prompt_embeds(pipe, ids):
    """The text encoder's output for token ids (what the pipeline makes of a tokenized prompt)."""
    with paddle.no_grad():
        return pipe.text_encoder(paddle.to_tensor([ids], dtype="int64"))[0]
