"""The small UNet and scheduler ppddpm trains and ships (ppdiffusers parts, nothing custom)."""
from __future__ import annotations

from typing import Sequence


def small_unet(resolution: int = 16, channels: int = 1, block_out_channels: Sequence[int] = (32, 64),
               layers_per_block: int = 1, attention: bool = True):
    """A ~0.7M-parameter `UNet2DModel`: two resolution levels, self-attention at the lower one.

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
        out_channels=channels,
        layers_per_block=layers_per_block,
        block_out_channels=tuple(block_out_channels),
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=8,
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
