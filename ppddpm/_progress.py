"""Whether a long call shows a progress bar when the caller did not say — the one rule the
library and the CLI share: yes where someone is watching (stdout and stderr both a terminal, or
a Jupyter / AI Studio kernel); no when either is redirected (`make demo > log` gets no bar
updates), under pytest, or with PPDDPM_PROGRESS=0. PPDDPM_PROGRESS=1 shows it anyway. An
explicit `progress=True/False` (the CLI's --quiet is False) always wins."""
from __future__ import annotations

import os
import sys
from typing import Optional


def _terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):          # no isatty, or a closed stream
        return False


def wanted(progress: Optional[bool]) -> bool:
    if progress is not None:
        return bool(progress)
    setting = os.environ.get("PPDDPM_PROGRESS", "").strip()
    if setting in ("0", "1"):
        return setting == "1"
    if "PYTEST_CURRENT_TEST" in os.environ:
        return False
    if "ipykernel" in sys.modules:
        return True
    return _terminal(sys.stdout) and _terminal(sys.stderr)


def cli_choice(quiet: bool) -> Optional[bool]:
    """The CLI's `progress=`: off with --quiet, else the rule above."""
    return False if quiet else None
