"""Defence in depth while a pipeline loads (`guarded`): no pickle is loaded, whichever library tries.

`ppddpm.model.folder.scan` refuses a local folder with pickled files before anything is loaded;
this guards the loaders themselves, for a hub download and for anything the scan did not foresee.
While `guarded(...)` runs, anywhere in the process:

- **every unpickling is refused.** Python raises the audit event `pickle.find_class` whenever an
  unpickler looks up a global — the only way a pickle can reach a callable, hence run code — in
  `pickle`, `_pickle`, `paddle.load`, paddlenlp's and ppdiffusers' torch readers, `numpy.load`
  alike. A process-wide audit hook (`sys.addaudithook`, installed once) raises `Untrusted` there,
  naming the last weights file opened;
- **the weight readers** of ppdiffusers (`models.modeling_utils.load_state_dict`) and paddlenlp
  (`transformers.model_utils.load_state_dict`) refuse a file that is not `.safetensors`, by name,
  and check a safetensors file's header and values (`ppddpm.model.tensorfile`) before reading it,
  unless `scan` already did (a hub download: here).

A library may catch the refusal and raise something else; the guard keeps the first refusal and
raises it when its block ends, whatever the block raised. Outside `guarded` nothing changes.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Iterable, List, Optional

from ppddpm.errors import InputError, Untrusted
from ppddpm.model import tensorfile

WEIGHT_SUFFIXES = (".pdparams", ".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".npy", ".npz", ".safetensors")


class _Guard:
    """One guarded load: what is loaded, whether pickles are refused, the real paths of the weights
    files `scan` checked, the last weights file opened, and the first refusal."""

    def __init__(self, what: str, refuse_pickles: bool, checked: Optional[Iterable[str]] = ()):
        self.what, self.refuse_pickles, self.checked = what, refuse_pickles, set(checked or ())
        self.opened: Optional[str] = None
        self.refusal: Optional[InputError] = None

    def refuse(self, error: InputError):
        if self.refusal is None:
            self.refusal = error
        raise error


_active: List[_Guard] = []
_lock = threading.Lock()
_installed = []


def _current() -> Optional[_Guard]:
    """The innermost guarded load running, or None."""
    guards = _active[-1:]
    return guards[0] if guards else None


def _audit(event: str, args):
    """The audit hook: cheap when no load is guarded (one list test per event)."""
    guard = _current()
    if guard is None:
        return
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if path.endswith(WEIGHT_SUFFIXES):
            guard.opened = path
    elif event == "pickle.find_class" and guard.refuse_pickles:
        module, name = args
        guard.refuse(Untrusted(f"{guard.what}: refused to unpickle {guard.opened or 'a file'} (it names "
                               f"{module}.{name}; unpickling can run code hidden in the file); load .safetensors "
                               f"weights, or pass --trust-pickle (trust_pickle=True) if you trust where they came "
                               f"from"))


def _check_file(guard: _Guard, path: str):
    """Before a library reads a weights file: a pickle is refused by name; safetensors are checked
    (header and finite values) unless `scan` already did."""
    if not path.endswith(".safetensors"):
        if guard.refuse_pickles:
            guard.refuse(Untrusted(f"{guard.what}: its weights {os.path.basename(path)} are pickled (loading them "
                                   f"can run code hidden in the file); convert them to safetensors, or pass "
                                   f"--trust-pickle (trust_pickle=True) if you trust where they came from"))
        return
    if os.path.realpath(path) not in guard.checked:
        try:
            tensorfile.check_finite(tensorfile.read_header(path, "weights file"))
        except InputError as exc:
            guard.refuse(exc)


def _wrap_reader(module, name: str = "load_state_dict"):
    """A library's weights reader, preceded by `_check_file` while a load is guarded."""
    original = getattr(module, name)

    def reader(checkpoint_file, *args, **kwargs):
        guard = _current()
        if guard is not None:
            _check_file(guard, str(checkpoint_file))
        return original(checkpoint_file, *args, **kwargs)

    setattr(module, name, reader)


def _install():
    """The audit hook and the loader wrappers, once per process."""
    with _lock:
        if _installed:
            return
        import paddlenlp.transformers.model_utils as nlp
        from ppdiffusers.models import modeling_utils

        sys.addaudithook(_audit)
        _wrap_reader(modeling_utils)
        _wrap_reader(nlp)
        _installed.append(True)


@contextlib.contextmanager
def guarded(what: str, refuse_pickles: bool = True, checked: Optional[Iterable[str]] = ()):
    """While the block runs, loading is guarded (module docstring): pickles refused unless
    `refuse_pickles` is False; safetensors files checked unless their real path is in `checked`
    (`ScannedFolder.checked`). Raises the first refusal when the block ends."""
    _install()
    guard = _Guard(what, refuse_pickles, checked)
    with _lock:
        _active.append(guard)
    try:
        yield guard
    except BaseException:
        if guard.refusal is not None:
            raise guard.refusal from None
        raise
    finally:
        with _lock:
            _active.remove(guard)
    if guard.refusal is not None:
        raise guard.refusal
