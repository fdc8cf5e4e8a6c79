"""Analysis: A/B comparison of step variants (ab), verification against the float64 references
(verify), sample quality (metrics), and ppdiffusers' own scheduler suites run under ppddpm (upstream)."""
from ppddpm._lazy import submodules_on_access

__getattr__ = submodules_on_access(__name__)
