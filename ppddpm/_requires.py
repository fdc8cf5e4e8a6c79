"""The paddle versions ppddpm runs on, checked when `ppddpm` is imported, without importing paddle.

paddle 3.0–3.3 work as measured (`make compat`: the quick tests on 3.0.0, 3.1.1, 3.2.2 and 3.3.1,
README's "Install"). paddle 2.6 does not, and no pin of ppddpm's can make it: the safetensors that
ppdiffusers 0.29 takes (0.7, 0.8) names `paddle.float8_e4m3fn`, which paddle 2.6 lacks; scipy 1.17 fails
to import after it; it segfaults with numpy 2; and with all of those held back (safetensors 0.6.2,
scipy 1.15, numpy 1.26 with the pandas, pyarrow and opencv that accept it) `import ppdiffusers` still
segfaults. So a paddle older than 3.0 is refused in one line naming the versions that work: an
ImportError for a Python user, and for the command line the one line on stderr and exit status 2,
as for any bad input.
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

OLDEST = (3, 0)
WORKS = "paddle 3.0–3.3 (tested: 3.0.0, 3.1.1, 3.2.2, 3.3.1)"


def installed_paddle() -> str | None:
    """The installed paddle's version, read from its `paddle/version/__init__.py` (written by paddle's
    build, CPU and CUDA wheels alike) without importing paddle; None when paddle is not found there."""
    try:
        spec = importlib.util.find_spec("paddle")
    except (ImportError, ValueError):      # a finder that refuses paddle (an environment without it, as tests make)
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    version_file = Path(list(spec.submodule_search_locations)[0]) / "version" / "__init__.py"
    try:
        found = re.search(r"^full_version\s*=\s*['\"]([^'\"]+)['\"]", version_file.read_text(), re.M)
    except OSError:
        return None
    return found.group(1) if found else None


def problem(version: str | None) -> str | None:
    """The one line that refuses paddle `version`, or None when it may run ppddpm."""
    if version is None:
        return None
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:                  # a development build ("0.0.0", "3.1.0.dev…" parse): not judged
        return None
    if major_minor == (0, 0) or major_minor >= OLDEST:
        return None
    return (f"this environment has paddle {version}; ppddpm needs {WORKS}: "
            f"pip install 'paddlepaddle>=3.0,<3.4' (or the paddlepaddle-gpu wheel for your CUDA)")


def _command_line() -> bool:
    """Whether this interpreter is the `ppddpm` command (its script, or `python -m ppddpm`)."""
    argv = getattr(sys, "orig_argv", sys.argv)
    return os.path.basename(sys.argv[0]) == "ppddpm" or argv[1:3] == ["-m", "ppddpm"]


def check() -> None:
    """Refuse an unsupported paddle (module docstring); nothing when it is supported."""
    line = problem(installed_paddle())
    if line is None:
        return
    if _command_line():
        sys.stderr.write(f"ppddpm: error: {line}\n")
        raise SystemExit(2)
    raise ImportError(line)
