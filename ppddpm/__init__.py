"""ppddpm: watch diffusion sampling work, step by step, on real ppdiffusers pipelines and schedulers.

Equation numbers in docstrings are the DDPM paper's (Ho et al. 2020), restated in MATH.md.
The public names are imported lazily, so `import ppddpm` is cheap until one is used. The 0.3 module
paths (`ppddpm.plotting`, …) still import, each with one DeprecationWarning naming its new path (`_moved`).
"""
import importlib
import sys
import types
import warnings

from ppddpm import _moved, _requires

__version__ = "0.5.0"
_requires.check()           # paddle older than 3.0: one line (an ImportError; the CLI: exit 2)

# The public API, one table: name → the module it lives in (README's "Public API" lists each with its
# signature: docs/readme_blocks.py renders it from __all__, tests/test_public_api.py checks the two agree).
_EXPORTS = {
    # record a run, and what it makes
    "record": "pipelines.recording", "sample_trajectory": "pipelines.recording", "kept_steps": "core.recorder",
    "Trajectory": "storage.trajectory", "TrajectoryError": "storage.trajectory",
    "FIELDS": "storage.trajectory", "DEFAULT_FIELDS": "storage.trajectory", "StepRecord": "core.records",
    # pipelines and schedulers
    "load_pipeline": "model.loading", "PipelineLoadError": "model.loading",
    "SamplerPipeline": "pipelines.sampler", "RecordingDDPMPipeline": "pipelines.sampler",
    "with_sampler": "pipelines.sampler", "with_config": "core.config", "decode": "pipelines.latent",
    "upstream_fixes": "core.fixes",
    # step formulas
    "patch_step": "variants.patching", "get_variant": "variants.registry", "register_variant": "variants.registry",
    "unregister_variant": "variants.registry",
    # compare, verify, score
    "compare": "analysis.ab", "ABReport": "analysis.ab", "verify": "analysis.verify", "VerifyReport": "analysis.verify",
    "evaluate": "analysis.metrics", "EvalReport": "analysis.metrics", "score": "analysis.metrics",
    "sample_images": "analysis.metrics", "likelihood": "analysis",
    # pictures
    "plot_grid": "pictures.plotting", "plot_trajectory": "pictures.plotting", "plot_ab": "pictures.plotting",
    "plot_clip_map": "pictures.plotting", "clip_map": "pictures.plotting", "plot_forward": "pictures.plotting",
    "plot_schedule": "pictures.plotting", "plot_losses": "pictures.plotting", "contact_sheet": "pictures.plotting",
    "load_image": "pictures.plotting", "frames": "pictures.plotting", "animate": "pictures.plotting",
    "explore": "pictures.explorer", "Explorer": "pictures.explorer",
    # train, and small models built in code
    "train": "model.training", "TrainConfig": "model.training", "TrainResult": "model.training",
    "small_unet": "model.builders", "ddpm_scheduler": "model.builders", "tiny_latent_pipeline": "model.builders",
}
# the layers (README's "Architecture"): `ppddpm.pictures.plotting.plot_grid(...)` works after a bare `import ppddpm`
_SUBPACKAGES = {"core", "variants", "pipelines", "storage", "analysis", "pictures", "cli", "model", "reference"}
# `ppddpm.variants` is the package `ppddpm/variants/`, and calling it lists the registered variants
# (`ppddpm.variants()`, as `ppddpm.variants.registry.variants()`): one object whatever was imported first
__all__ = sorted(set(_EXPORTS) | {"variants"})


def _quiet_imports():
    """paddle warns "No ccache found" whenever it is imported (it matters only to someone compiling
    C++ extensions) and setuptools' distutils shim "Setuptools is replacing distutils" (paddle
    imports distutils): noise to a ppddpm user, in the CLI and in a notebook alike. Those two exact
    messages are filtered; every other warning stays."""
    warnings.filterwarnings("ignore", message="No ccache found")
    warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")


_quiet_imports()


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    if f"{__name__}.{name}" in _moved.MOVED:          # a 0.3 module path (`ppddpm.plotting`): warns once
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'ppddpm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | _SUBPACKAGES)


class _Package(types.ModuleType):
    """`ppddpm.verify` stays the function whatever was imported: importing the 0.3 module path
    `ppddpm.verify` (now `ppddpm.analysis.verify`) would bind that module on the package, as Python does
    for every submodule, over the public function of the same name."""

    def __setattr__(self, name, value):
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
_moved.install()
