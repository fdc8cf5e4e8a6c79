"""Models: loading pipelines (hub, folder, the bundled default) with their files checked before use
and no pickle loaded, building small ones in code, training, and the digits data."""
from ppddpm._lazy import submodules_on_access

__getattr__ = submodules_on_access(__name__)
