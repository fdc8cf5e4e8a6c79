"""The 0.3 import paths, kept working: each old module path is the new module itself, with one
DeprecationWarning naming the new path (CHANGELOG 0.4.0 has the table; the policy: nothing public
disappears without a release of warnings).

    import ppddpm.plotting                    # warns once: ppddpm.plotting moved to ppddpm.pictures.plotting
    ppddpm.plotting is ppddpm.pictures.plotting                     # True: one module, two names
    from ppddpm.step_variants import coefficients                   # a name that left its 0.3 module: warns

One mechanism: `OldPaths`, a finder on `sys.meta_path` (after every real one, so a module that exists
is always found first), answers for the old names in MOVED and hands back the new module. Names
that left their 0.3 module for another are answered by that module's `__getattr__ = moved_names(__name__)`
from MOVED_NAMES. Nothing here imports more than the standard library: `import ppddpm` stays cheap.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings

# 0.3 module path → the module it is since 0.4. Not here: `ppddpm.cli`, still a package (its entry point is
# ppddpm.cli.main), and `ppddpm._launched`, a rank's script that `ppddpm --nproc` starts as the file
# ppddpm/cli/_launched.py (the launcher and the rank are always of one version: no one runs the old name)
MOVED = {
    "ppddpm.stepping": "ppddpm.core.intercept", "ppddpm.steps": "ppddpm.core.records",
    "ppddpm.samplers": "ppddpm.core.adapters", "ppddpm._transfer": "ppddpm.core.transfer",
    "ppddpm._rng": "ppddpm.core.rng", "ppddpm.config": "ppddpm.core.config",
    "ppddpm.distributed": "ppddpm.core.distributed", "ppddpm.recording": "ppddpm.core.recorder",
    "ppddpm.step_variants": "ppddpm.variants.registry", "ppddpm.ddim_variants": "ppddpm.variants.ddim",
    "ppddpm.patching": "ppddpm.variants.patching", "ppddpm.source_patches": "ppddpm.variants.source_patches",
    "ppddpm.pipeline": "ppddpm.pipelines.sampler", "ppddpm.latent": "ppddpm.pipelines.latent",
    "ppddpm.trajectory": "ppddpm.storage.trajectory", "ppddpm.comparison": "ppddpm.analysis.ab",
    "ppddpm.metrics": "ppddpm.analysis.metrics", "ppddpm.verify": "ppddpm.analysis.verify",
    "ppddpm.upstream": "ppddpm.analysis.upstream", "ppddpm._upstream_plugin": "ppddpm.analysis._upstream_plugin",
    "ppddpm.plotting": "ppddpm.pictures.plotting", "ppddpm.explorer": "ppddpm.pictures.explorer",
    "ppddpm.launch": "ppddpm.cli.launch", "ppddpm.demo": "ppddpm.cli.demo", "ppddpm.loading": "ppddpm.model.loading",
    "ppddpm.training": "ppddpm.model.training", "ppddpm.data": "ppddpm.model.data",
    "ppddpm.models": "ppddpm.model.builders",
}

_DDPM = "ppddpm.variants.ddpm"
# per new module: the names its 0.3 module had that live elsewhere now → where (module.name)
MOVED_NAMES = {
    "ppddpm.variants.registry": {           # 0.3's ppddpm.step_variants also held the DDPM step formulas
        **{name: f"{_DDPM}.{name}" for name in (
            "Coefficients", "SUPPORTED_PREDICTION_TYPES", "UNSUPPORTED_VARIANCE_TYPES", "add_noise",
            "check_supported", "coefficients", "direct_article_step", "direct_clip_consistent_step", "direct_step",
            "modify_x0", "posterior_step", "predict_noise", "predict_start_from_noise")},
        "sigma": "ppddpm.core.formulas.ddpm_noise_std",             # σ_t of DDPM's step, one home since 0.5
        "_output": f"{_DDPM}.ddpm_output", "stock_step": "ppddpm.variants.stock.stock_step",
        "threshold": "ppddpm.core.formulas.threshold"},
    "ppddpm.variants.ddim": {"ddim_stock_step": "ppddpm.variants.stock.stock_step"},   # the stock step of any class
    "ppddpm.cli.launch": {"inside_launch": "ppddpm.core.ranks.launched"},
    "ppddpm.model.loading": {"MAX_TRAIN_TIMESTEPS": "ppddpm.storage.meta.MAX_TRAIN_TIMESTEPS"},
    "ppddpm.pictures.plotting": {"explore": "ppddpm.pictures.explorer.explore"},
    # 0.5: recording a pipeline (which needs its family's support) is the pipelines layer's; core records steps
    "ppddpm.core.recorder": {name: f"ppddpm.pipelines.recording.{name}" for name in ("record", "sample_trajectory")},
    "ppddpm.analysis.verify": {"SIGMA_SPACE": "ppddpm.core.adapters.SIGMA_SPACE"},
    "ppddpm.storage.trajectory": {**{name: f"ppddpm.storage.format.{name}" for name in (
        "DTYPES", "FORMAT", "FORMAT_VERSION", "STAGES", "STORES")}, "META_KEY": "ppddpm.storage.npz.META_KEY"},
}

_REMOVAL = "the old path still works in 0.5, with this warning, and may be removed in 0.6"
_HERE = os.path.dirname(os.path.abspath(__file__))
_OURS = {os.path.join(_HERE, "_moved.py"), os.path.join(_HERE, "__init__.py")}


def _caller():
    """The frame that named the old path: the first outside the import machinery and this mechanism
    (a DeprecationWarning is shown by default only when it is attributed to `__main__`'s own line)."""
    frame = sys._getframe(1)
    while frame is not None and ("importlib" in frame.f_code.co_filename or
                                 os.path.abspath(frame.f_code.co_filename) in _OURS):
        frame = frame.f_back
    return frame


def _deprecated(message: str) -> None:
    frame = _caller()
    if frame is None:
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return
    scope, filename = frame.f_globals, frame.f_code.co_filename
    # module_globals lets the warning show the source line through the module's loader; a REPL's, `python -c`'s
    # or stdin's __main__ has none that can (BuiltinImporter raises ImportError), nor a file to read it from
    source = {"module_globals": scope} if os.path.isfile(filename) else {}
    warnings.warn_explicit(message, DeprecationWarning, filename, frame.f_lineno, module=scope.get("__name__"),
                           registry=scope.setdefault("__warningregistry__", {}), **source)


class OldPaths:
    """Finds the 0.3 module paths of MOVED. Loading one imports the new module and puts it in
    `sys.modules` under the old name too, which is what the import system then hands back (and binds
    on the parent package): the old name is the new module object. The finder answers only the first
    import of a name (later ones find it in `sys.modules`), so each old path warns once. (A finder and
    a loader by their methods: importlib.abc's base classes would cost `import ppddpm` ~30 ms.)"""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None                               # a placeholder; exec_module swaps in the new module

    def exec_module(self, module):
        old = module.__name__
        sys.modules[old] = importlib.import_module(MOVED[old])
        _deprecated(f"{old} moved to {MOVED[old]} in 0.4: import {MOVED[old]}; {_REMOVAL}")


def install() -> None:
    """Put the finder on `sys.meta_path`, once per interpreter (a reload of ppddpm adds no second one)."""
    if not any(type(finder).__name__ == "OldPaths" for finder in sys.meta_path):
        sys.meta_path.append(OldPaths())


def moved_names(module: str):
    """A module-level `__getattr__` for `module` that answers the names its 0.3 module had and that
    live elsewhere now (MOVED_NAMES), with a DeprecationWarning naming the new home."""
    table = MOVED_NAMES[module]

    def __getattr__(name: str):
        if name not in table:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        home, _, new_name = table[name].rpartition(".")
        old = next((o for o, n in MOVED.items() if n == module), module)
        _deprecated(f"{old}.{name} is {home}.{new_name} since 0.4: import it from there; {_REMOVAL}")
        return getattr(importlib.import_module(home), new_name)

    return __getattr__
