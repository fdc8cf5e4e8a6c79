"""Step variants: formulas that replace what `scheduler.step` computes (registry and spec grammar,
the DDPM and DDIM variants), applied with `patch_step`, and the source patches of `patches/`."""
from ppddpm._lazy import submodules_on_access

__getattr__ = submodules_on_access(__name__)
