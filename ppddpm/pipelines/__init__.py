"""Pipelines: `SamplerPipeline` / `RecordingDDPMPipeline` for pixel-space UNets, and what latent
pipelines (Stable Diffusion, LDM, DiT) need: their denoiser, conditioning and decoding."""
from ppddpm._lazy import submodules_on_access

__getattr__ = submodules_on_access(__name__)
