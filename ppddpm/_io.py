"""Atomic file writes: a reader never sees a half-written file under the final name."""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

from ppddpm.errors import Exists


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path beside `path`; on success it is renamed onto `path`.

    On any exception the temporary file is removed and `path` is left as it was.
    `suffix` keeps extension-sniffing writers (numpy's `.npz`) from renaming the file.
    The file ends with the mode an ordinary `open(path, "w")` would give it (0644 under the
    usual umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


LOCK_NAME = ".ppddpm.lock"


@contextlib.contextmanager
def output_lock(folder, what: str = "--out"):
    """Hold `folder` for this process while a run writes it: one writer per output.

    The lock is `folder/.ppddpm.lock`, holding the writer's pid, under an advisory `flock`: the
    kernel drops it when the writer dies however it dies, so a lock file left by a killed run is
    stale by construction and the next run takes it over. A second writer is refused with
    `Exists`, naming the pid. Once held, leftovers of killed atomic saves (`.*.part*`) are removed:
    no live writer can own them. The lock file goes when the block ends.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise Exists(f"{what} {folder} is being written by another ppddpm run (pid {holder}); wait for it "
                         f"to end, or choose another {what}") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino     # not a file a finishing writer just unlinked
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        for stale in folder.glob(".*.part*"):
            with contextlib.suppress(OSError):
                stale.unlink()
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
