"""Whether a long call shows a progress bar when the caller did not say: yes where someone is
watching (a terminal, a Jupyter / AI Studio kernel), no under pytest or with PPDDPM_PROGRESS=0."""
from __future__ import annotations

import os
import sys
from typing import Optional


def wanted(progress: Optional[bool]) -> bool:
    if progress is not None:
        return bool(progress)
    if os.environ.get("PPDDPM_PROGRESS", "").strip() == "0" or "PYTEST_CURRENT_TEST" in os.environ:
        return False
    if "ipykernel" in sys.modules:
        return True
    return bool(getattr(sys.stderr, "isatty", lambda: False)())
