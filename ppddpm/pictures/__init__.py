"""Pictures: matplotlib plots of trajectories, schedules and A/B reports, and the HTML explorer."""
from ppddpm._lazy import submodules_on_access

__getattr__ = submodules_on_access(__name__)
