"""Storage: the Trajectory (arrays in memory or streamed to disk) and its file formats."""
from ppddpm._lazy import submodules_on_access

__getattr__ = submodules_on_access(__name__)
