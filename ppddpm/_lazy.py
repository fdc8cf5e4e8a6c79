"""Submodules on attribute access, so `import ppddpm` stays cheap (paddle is imported by the first
module that needs it) while `ppddpm.pictures.plotting.plot_grid(...)` works after it."""
from __future__ import annotations

import importlib


def submodules_on_access(package: str):
    """A module-level `__getattr__` for `package` that imports `package.<name>` when asked for it."""

    def __getattr__(name: str):
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{package}.{name}":
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
            raise

    return __getattr__
