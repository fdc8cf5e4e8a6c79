"""ppddpm: watch DDPM work, step by step, on real ppdiffusers pipelines.

Equation numbers in docstrings are the DDPM paper's (Ho et al. 2020), restated in MATH.md.
"""
__version__ = "0.1.0"

from .comparison import ABReport, compare  # noqa: E402
from .patching import patch_step  # noqa: E402
from .pipeline import RecordingDDPMPipeline  # noqa: E402
from .recording import (DEFAULT_FIELDS, FIELDS, Trajectory, TrajectoryError, kept_steps, record,  # noqa: E402
                        sample_trajectory)
from .variants import get_variant, register_variant, unregister_variant, variants  # noqa: E402

__all__ = [
    "ABReport", "compare", "DEFAULT_FIELDS", "FIELDS", "RecordingDDPMPipeline", "Trajectory", "TrajectoryError", "get_variant",
    "kept_steps", "patch_step", "record", "register_variant", "sample_trajectory", "unregister_variant",
    "variants",
]
