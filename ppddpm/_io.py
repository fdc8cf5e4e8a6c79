"""Writing outputs: atomic files, folders that appear whole, one writer per folder — and never through a link.

A name ppddpm writes is *replaced*, never opened for writing where it stands: a file goes to a
temporary name beside it and is renamed onto the name (`atomic_path`), a folder is built under a
temporary name and renamed in (`fresh_folder`, `publish`), the lock is opened with O_NOFOLLOW. A
symbolic link left at any of these names (say `OUT/.ppddpm.lock` → a file elsewhere) is replaced
by the new entry; what it points to is never written. Path problems (a name too long, a file where
a folder is needed, a folder where a file is) are one line (`path_error`).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Optional

from ppddpm.errors import BadValue, Exists, InputError, WriteFailed, file_kind

KEPT_OF_NAME = 100      # characters of a name kept in its temporary sibling's (a 255-byte name still has one)


def path_error(exc: OSError, path, what: str = "output", every: bool = False) -> Optional[InputError]:
    """`exc` (raised by an operation on `path`) as one line naming `what`, or None when it is not about
    the path (a full disk: the caller lets it go on) unless `every` OSError is to be said so."""
    reason = {errno.ENAMETOOLONG: "a name in it is too long for the file system; choose a shorter one",
              errno.ENOTDIR: f"{_file_above(path)} is a file, not a folder; choose a path under a folder",
              errno.EISDIR: "is a folder; give a file name",
              errno.ELOOP: "passes through a loop of symbolic links"}.get(exc.errno)
    if reason:
        return BadValue(f"{what} {path}{'' if exc.errno == errno.EISDIR else ':'} {reason}")
    if every or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WriteFailed(exc.errno, f"{what} {path} cannot be written ({exc.strerror or exc}); give a place you "
                                      f"can write to")
    return None


def _file_above(path) -> str:
    """The first part of `path` that exists and is not a folder (what ENOTDIR is about)."""
    for part in reversed(Path(path).parents):
        if part.exists() and not part.is_dir():
            return str(part)
    return "a part of it"


@contextlib.contextmanager
def said_once(path, what: str, every: bool = False):
    """Path problems of the operations inside as one line (`path_error`); other OSErrors go on,
    unless `every` one is to be said as "cannot be written"."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, InputError):
            raise
        said = path_error(exc, path, what, every)
        if said is None:
            raise
        raise said from None


def output_file(path, what: str = "output") -> Path:
    """`path` as a Path if a file can be written under that name: no folder there, no file among its
    parents, a name the file system takes; one line otherwise. A link at the name is fine: it is
    replaced, not followed."""
    path = Path(path)
    with said_once(path, what):
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:        # to be made (its parents too: ENOTDIR would have said a file is among them)
            return path
        if stat.S_ISDIR(mode):
            raise BadValue(f"{what} {path} is a folder; give a file name")
    return path


def output_dir(path, what: str = "--out") -> Path:
    """`path` as a folder, made if missing (parents too); a file in its place, or a path that cannot be
    a folder, is one line. A link the user names as the folder itself is followed: they chose it."""
    path = Path(path)
    with said_once(path, what, every=True):
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and not stat.S_ISDIR(mode):
            raise BadValue(f"{what} {path} is {file_kind(mode)}; give a folder (it is created if missing)")
        path.mkdir(parents=True, exist_ok=True)
    return path


def _sibling(path: Path, suffix: str = "") -> Path:
    """A fresh hidden name beside `path` (`.NAME.XXXXXXXX.part`): what `output_lock` clears when a
    writer died before renaming it."""
    return path.with_name(f".{path.name[:KEPT_OF_NAME]}.{secrets.token_hex(4)}.part{suffix}")


@contextlib.contextmanager
def atomic_path(path, suffix="", what: str = "output"):
    """Yield a temporary path beside `path`; on success it is renamed onto `path`.

    On any exception the temporary file is removed and `path` is left as it was. A link at `path`
    is replaced by the file, never followed; a folder there, a file among its parents or a name
    too long is one line (`output_file`). `suffix` keeps extension-sniffing writers (numpy's
    `.npz`) from renaming the file. The file ends with the mode an ordinary `open(path, "w")` would
    give it (0644 under the usual umask), not mkstemp's private 0600.
    """
    path = output_file(path, what)
    with said_once(path, what):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:KEPT_OF_NAME]}.", suffix=".part" + suffix, dir=path.parent)
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


def discard(path):
    """Remove `path` so that its name goes in one step: a file or a link is unlinked (a link's target
    is untouched), a folder is renamed to a hidden sibling (`_sibling`) and then deleted — a reader
    sees the whole folder or none, even if this process is killed while deleting."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        os.unlink(path)
        return
    gone = _sibling(path)
    os.rename(path, gone)
    shutil.rmtree(gone)


def publish(staged, path):
    """Put `staged` (a file or a folder built beside `path`) at `path` by a rename: whatever was there
    — a file, a link, an earlier folder — is replaced, never written through."""
    staged, path = Path(staged), Path(path)
    earlier = None
    if os.path.lexists(path):
        if stat.S_ISDIR(os.lstat(path).st_mode):           # rename(2) cannot replace a folder that holds files
            earlier = _sibling(path)
            os.rename(path, earlier)
        elif staged.is_dir():                               # nor put a folder over a file or a link
            os.unlink(path)
    os.replace(staged, path)
    if earlier is not None:
        shutil.rmtree(earlier)


@contextlib.contextmanager
def fresh_folder(path):
    """Yield a hidden folder beside `path` to fill; on success it is renamed to `path` (absent, or an
    empty folder), so `path` appears with its first files already in it. On any exception it goes."""
    path = Path(path)
    with said_once(path, "the folder"):
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = _sibling(path)
        staging.mkdir()
    try:
        yield staging
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


LOCK_NAME = ".ppddpm.lock"


@contextlib.contextmanager
def output_lock(folder, what: str = "--out"):
    """Hold `folder` for this process while a run writes it: one writer per output.

    The lock is `folder/.ppddpm.lock`, holding the writer's pid, under an advisory `flock`: the
    kernel drops it when the writer dies however it dies, so a lock file left by a killed run is
    stale by construction and the next run takes it over. A second writer is refused with
    `Exists`, naming the pid. The lock is opened with O_NOFOLLOW: a link at its name is replaced,
    its target never written. Once held, leftovers of killed atomic saves and folders (`.*.part*`)
    are removed: no live writer can own them. The lock file goes when the block ends.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = _open_lock(path, what)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise Exists(f"{what} {folder} is being written by another ppddpm run (pid {holder}); wait for it "
                         f"to end, or choose another {what}") from None
        try:
            same = os.fstat(fd).st_ino == os.lstat(path).st_ino     # not a file a finishing writer just unlinked
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
                discard(stale)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _open_lock(path: Path, what: str) -> int:
    """The lock file's descriptor, opened without following a link: a link at its name is removed
    (and the lock made in its place); anything else but a regular file there is refused."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:                  # a symbolic link: replaced, never followed
                os.unlink(path)
                continue
            if exc.errno == errno.EISDIR:
                raise BadValue(f"{what}: {path} is a folder, not ppddpm's lock file; remove it") from None
            raise
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            return fd
        os.close(fd)
        raise BadValue(f"{what}: {path} is {file_kind(mode)}, not ppddpm's lock file; remove it")
