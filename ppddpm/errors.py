"""Bad input, said once: the exception types ppddpm raises *on purpose*, and the shared checks.

Each type is also the built-in one its message is about (`BadValue` is a ValueError, `NotFound`
a FileNotFoundError, …), so API users catch them as usual; the CLI prints exactly these as one
line with exit status 2, and lets anything else — a real bug — stay loud.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Optional

import numpy as np


class InputError(Exception):
    """Raised on purpose: the input was wrong, and the message says what is accepted."""


class BadValue(InputError, ValueError):
    pass


class BadType(InputError, TypeError):
    pass


class Unknown(InputError, KeyError):
    def __str__(self):                       # KeyError would quote its message
        return str(self.args[0]) if self.args else ""


class NotFound(InputError, FileNotFoundError):
    pass


class Exists(InputError, FileExistsError):
    pass


class Unsupported(InputError, NotImplementedError):
    pass


class WriteFailed(InputError, OSError):
    """Writing an output failed (a full disk): the message names what was kept."""

    def __str__(self):                       # the message alone, without OSError's "[Errno 28] " before it
        return self.strerror if self.strerror is not None else super().__str__()


class Untrusted(InputError, PermissionError):
    """A file whose loading could run code hidden in it (a pickle): refused unless the user
    says they trust it (`--trust-pickle`, `trust_pickle=True`). SECURITY.md says why."""


def regular_file(path, what: str = "file"):
    """`path` as a Path if it is a regular file; NotFound / BadValue otherwise. Only regular files
    are opened: a FIFO would block the reader forever, a device or folder is never data."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise NotFound(f"no {what} at {path}") from None
    except OSError as exc:
        raise BadValue(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise BadValue(f"the {what} {path} is {file_kind(mode)}; give a regular file")
    return path


def file_kind(mode: int) -> str:
    """What a file of `mode` (st_mode) is, in words: "a folder", "a FIFO", …"""
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISLNK, "a symbolic link"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
             (stat.S_ISREG, "a file"))
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def int_problem(name: str, value, low: int = 1, hint: str = "") -> Optional[str]:
    """The message for `value` if it is not an integer ≥ `low` (bools are not integers here), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        kind = "positive" if low == 1 else "non-negative" if low == 0 else f"≥ {low}"
        return f"{name} must be a {kind} integer{hint}, got {value!r}"
    return None


def check_int(name: str, value, low: int = 1, hint: str = "") -> int:
    """`value` as an int, or BadValue("NAME must be a positive integer, got …")."""
    problem = int_problem(name, value, low, hint)
    if problem:
        raise BadValue(problem)
    return int(value)


def parse_json(text, where: str, error=BadValue, hint: str = ""):
    """`text` (str or bytes) parsed as JSON, or one `error` "WHERE: what is wrong[; HINT]": not JSON, not
    UTF-8, or nested deeper than the interpreter's recursion limit (json raises RecursionError at
    ~1000 levels; metadata and reports are a few levels deep)."""
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = f"not JSON ({exc})"
    except RecursionError:
        problem = "JSON nested more deeply than ~1000 levels, which no ppddpm file is"
    except ValueError as exc:                # e.g. an integer of more than 4300 digits
        problem = f"not JSON ppddpm reads ({exc})"
    raise error(f"{where}: {problem}" + (f"; {hint}" if hint else ""))


def available_memory() -> Optional[int]:
    """Bytes of memory this machine can give now — Linux's MemAvailable (free pages and the page
    cache it can drop), else the free pages — or None where there is no estimate."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(what: str, nbytes: float):
    """Refuse work whose estimated memory exceeds what this machine has available now."""
    free = available_memory()
    if free is None:
        return                                   # no estimate on this platform: nothing to say
    if not nbytes <= free:
        raise BadValue(f"{what} needs about {nbytes / 2 ** 30:.1f} GB of memory by a rough estimate, and "
                       f"{free / 2 ** 30:.1f} GB are available; ask for less")
