"""ppddpm: watch diffusion sampling work, step by step, on real ppdiffusers pipelines and schedulers.

Equation numbers in docstrings are the DDPM paper's (Ho et al. 2020), restated in MATH.md.
The public names are imported lazily, so `import ppddpm` is cheap until one is used.
"""
import importlib
import warnings

__version__ = "0.4.1"

_EXPORTS = {
    "ABReport": "analysis.ab", "compare": "analysis.ab",
    "patch_step": "variants.patching",
    "RecordingDDPMPipeline": "pipelines.sampler", "SamplerPipeline": "pipelines.sampler",
    "with_sampler": "pipelines.sampler",
    "StepRecord": "core.records", "with_config": "core.config",
    "DEFAULT_FIELDS": "storage.trajectory", "FIELDS": "storage.trajectory", "Trajectory": "storage.trajectory",
    "TrajectoryError": "storage.trajectory", "kept_steps": "core.recorder", "record": "core.recorder",
    "sample_trajectory": "core.recorder",
    "get_variant": "variants.registry", "register_variant": "variants.registry",
    "unregister_variant": "variants.registry",
    "load_pipeline": "model.loading", "PipelineLoadError": "model.loading",
    "verify": "analysis.verify", "VerifyReport": "analysis.verify",
    "decode": "pipelines.latent",
}
# the layers (ARCHITECTURE.md): `ppddpm.pictures.plotting.plot_grid(...)` works after a bare `import ppddpm`
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
    raise AttributeError(f"module 'ppddpm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | _SUBPACKAGES)
