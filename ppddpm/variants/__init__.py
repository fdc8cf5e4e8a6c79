"""Step variants: formulas that replace what `scheduler.step` computes (the registry and its spec
grammar, the stock step, the DDPM and DDIM variants), applied with `patch_step`, and the source
patches of `patches/`.

Importing this package registers the built-in variants, in the order `ppddpm.variants()` lists
them: the stock step, the DDPM routes, DDIM. The registry itself imports none of them; every
import of `ppddpm.variants.<module>` runs this file first, so they are registered whenever the
registry is used.
"""
import sys
import types

from ppddpm._lazy import submodules_on_access
from ppddpm.variants import stock, ddpm, ddim  # noqa: F401  (they register themselves, in this order)
from ppddpm.variants.registry import variants as _registered_names

__getattr__ = submodules_on_access(__name__)


class _CallablePackage(types.ModuleType):
    """`ppddpm.variants` is this package (`ppddpm.variants.registry`, …), and `ppddpm.variants()` lists
    the registered variants, built-ins first (README's API since 0.1): the package is callable, so the
    one name means one object whichever module was imported first."""

    def __call__(self) -> list:
        return _registered_names()


sys.modules[__name__].__class__ = _CallablePackage
