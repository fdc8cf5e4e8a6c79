"""Pipelines: recording any of them (`recording`: `ppddpm.record`, `ppddpm.sample_trajectory`; `to_file`),
`SamplerPipeline` / `RecordingDDPMPipeline` for pixel-space UNets (`sampler`), and what latent pipelines
(Stable Diffusion, LDM, DiT) need (`latent/`): their layout, recording support, decoding, display, denoiser."""
from ppddpm._lazy import submodules_on_access

__getattr__ = submodules_on_access(__name__)
