"""The `ppddpm` command line."""
from ppddpm._lazy import submodules_on_access

__getattr__ = submodules_on_access(__name__)
