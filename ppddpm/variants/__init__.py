"""Step variants: formulas that replace what `scheduler.step` computes (the registry and its spec
grammar, the stock step, the DDPM and DDIM variants), applied with `patch_step`, and the source
patches of `patches/`.

Importing this package registers the built-in variants, in the order `ppddpm.variants()` lists
them: the stock step, the DDPM routes, DDIM. The registry itself imports none of them; every
import of `ppddpm.variants.<module>` runs this file first, so they are registered whenever the
registry is used.
"""
from ppddpm._lazy import submodules_on_access
from ppddpm.variants import stock, ddpm, ddim  # noqa: F401  (they register themselves, in this order)

__getattr__ = submodules_on_access(__name__)
