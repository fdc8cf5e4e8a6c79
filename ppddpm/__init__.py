"""ppddpm: watch diffusion sampling work, step by step, on real ppdiffusers pipelines and schedulers.

Equation numbers in docstrings are the DDPM paper's (Ho et al. 2020), restated in MATH.md.
The public names are imported lazily, so `import ppddpm` is cheap until one is used.
"""
__version__ = "0.3.0"

_EXPORTS = {
    "ABReport": "comparison", "compare": "comparison",
    "patch_step": "patching",
    "RecordingDDPMPipeline": "pipeline", "SamplerPipeline": "pipeline", "with_sampler": "pipeline",
    "StepRecord": "steps", "with_config": "config",
    "DEFAULT_FIELDS": "trajectory", "FIELDS": "trajectory", "Trajectory": "trajectory",
    "TrajectoryError": "trajectory", "kept_steps": "recording", "record": "recording",
    "sample_trajectory": "recording",
    "get_variant": "step_variants", "register_variant": "step_variants",
    "unregister_variant": "step_variants", "variants": "step_variants",
    "load_pipeline": "loading", "PipelineLoadError": "loading",
    "verify": "verify", "VerifyReport": "verify",
    "decode": "latent",
}
_SUBMODULES = {"comparison", "config", "data", "latent", "samplers", "steps", "demo", "loading", "metrics", "models", "patching", "pipeline", "plotting",
               "recording", "reference", "source_patches", "stepping", "step_variants", "training", "trajectory",
               "upstream", "verify"}
__all__ = sorted(_EXPORTS)


def _quiet_imports():
    """paddle warns "No ccache found" whenever it is imported (it matters only to someone compiling
    C++ extensions) and setuptools' distutils shim "Setuptools is replacing distutils" (paddle
    imports distutils): noise to a ppddpm user, in the CLI and in a notebook alike. Those two exact
    messages are filtered; every other warning stays."""
    import warnings

    warnings.filterwarnings("ignore", message="No ccache found")
    warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")


_quiet_imports()


def __getattr__(name):
    import importlib

    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:                      # `ppddpm.plotting.plot_grid(...)` after a bare `import ppddpm`
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ppddpm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
