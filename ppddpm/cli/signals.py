"""Ctrl-C and SIGTERM while a command runs: both stop it where it is, with what was written kept.

SIGTERM (what `timeout`, `kill` and job schedulers send) raises `Terminated`, a KeyboardInterrupt,
in the main thread while `ppddpm.cli.main.main` runs; the exit status is 130 after Ctrl-C, 143
(128 + SIGTERM) after SIGTERM.

Start-up too: importing paddle installs paddle's own C-level SIGTERM handler (glog's failure-signal
handler: a C++ "FatalError: Termination signal is detected" block, then the end), importing
paddlenlp (ppdiffusers does) resets it to the default, and an interrupt raised while an extension
module initialises becomes pybind11's "ImportError: initialization failed". So the command line
loads with SIGINT and SIGTERM blocked (`block_until_loaded`, from `ppddpm.__main__.run`: the
threads its imports start inherit the block, and the signals reach the main thread only), and
while `sigterm_raises` is in force the imports of paddle and paddlenlp (`_PaddleImport`) and every
extension module's initialisation (`_extensions_deferring`) defer them: blocked, ppddpm's handlers
put back right after, and a signal that came meanwhile delivered then (or, taken by a thread that
does not block it, ending the process at once: `_stop_now`). A command stopped while paddle loads
ends with the same one line as one stopped later (the stop waits for the import, a few seconds at
most). This module imports only the standard library.
"""
from __future__ import annotations

import contextlib
import importlib.machinery
import os
import signal
import sys
import threading

DEFERRED = (signal.SIGINT, signal.SIGTERM)      # held back while paddle's import replaces the handlers
# top-level packages whose import replaces the C-level SIGTERM handler behind Python's back: paddle
# installs glog's failure-signal handler, paddlenlp (which ppdiffusers imports) calls
# paddle.disable_signal_handler(), which leaves SIGTERM at its default (the process ends, silently)
GUARDED = ("paddle", "paddlenlp")


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, `kill` and job schedulers send), handled like Ctrl-C: the run stops
    where it is, what was recorded stays on disk, and the exit status is 143 (128 + SIGTERM)."""


def _on_sigterm(signum, frame):
    raise Terminated()


def stopped(exc) -> str:
    """How the run was stopped, as the one line says it."""
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"


def interrupt_status(exc) -> int:
    return 143 if isinstance(exc, Terminated) else 130


def command_of(argv) -> str:
    """`ppddpm sample`: how the one line names the command before its arguments are parsed (the
    first word of `argv`, unless it is an option)."""
    first = next(iter(argv or ()), "")
    return "ppddpm" + ("" if not first or first.startswith("-") else f" {first}")


INTERRUPTED = (130, 143)      # the exit statuses of a command stopped by Ctrl-C or SIGTERM


_SIGTERM_BEFORE = []      # non-empty while main() runs with SIGTERM raising `Terminated`
_COMMAND = ["ppddpm"]     # how the one line names the command (`sigterm_raises`)


def sigterm_stops():
    """SIGTERM raises `Terminated` in the main thread while main() runs (no-op elsewhere); again
    after anything that installs its own SIGTERM handler (paddle's import does it by itself)."""
    if _SIGTERM_BEFORE and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


class _PaddleImport:
    """A `sys.meta_path` finder that finds nothing itself: when the main thread imports a GUARDED
    package, it asks the other finders for its spec and wraps that loader's `exec_module` (`_deferring`)."""

    def find_spec(self, name, path=None, target=None):
        if name not in GUARDED or threading.current_thread() is not threading.main_thread():
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None) if finder is not self else None
            spec = find(name, path, target) if find is not None else None
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader.exec_module = _deferring(spec.loader.exec_module)     # this import's loader only
                return spec
        return None


def _deferring(load):
    """`load` (a loader's `exec_module` or `create_module`) run, in the main thread, with DEFERRED
    blocked in it, so that a signal waits for the import's end, when ppddpm's handlers are back over
    any the import installed and the block is lifted (the signal is delivered then). Should another
    thread that does not block them take one meanwhile: `_stop_now`."""
    def load_with_signals_deferred(*args):
        if threading.current_thread() is not threading.main_thread():
            return load(*args)
        before = signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED)
        handlers = {sig: signal.signal(sig, _stop_now) for sig in DEFERRED}
        try:
            return load(*args)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
    return load_with_signals_deferred


# an extension module's initialisation (PyInit, in create_module / exec_module) cannot be interrupted
# either: a pybind11 module (matplotlib's ft2font, libpaddle) turns an interrupt into "ImportError:
# initialization failed"; while `sigterm_raises` is in force every extension loads deferring the signals
EXTENSION_STEPS = ("create_module", "exec_module")


@contextlib.contextmanager
def _extensions_deferring():
    loader = importlib.machinery.ExtensionFileLoader
    originals = {step: loader.__dict__[step] for step in EXTENSION_STEPS}
    for step, original in originals.items():
        setattr(loader, step, _deferring(original))
    try:
        yield
    finally:
        for step, original in originals.items():
            setattr(loader, step, original)


def _stop_now(signum, frame):
    """A signal taken during a deferring import by a thread that does not block it (a rank's parent
    watch): raised inside the import it would surface as pybind11's "ImportError: initialization
    failed", so the process ends here, at once, with the one line and status a later stop gives. Its
    `finally` blocks do not run: what it was writing is left as SIGKILL leaves it (streams load, a
    stale --out lock is taken over)."""
    exc = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    print(f"{_COMMAND[-1]}: {stopped(exc)}", file=sys.stderr, flush=True)
    os._exit(interrupt_status(exc))


def block_until_loaded():
    """Block DEFERRED in this thread, before the command line's modules load; returns the mask to
    put back once they have. Threads those imports start (numpy's BLAS pool) inherit the block, so
    SIGINT and SIGTERM reach the main thread only — paddle's handler, in force for a moment inside
    its import, can then not be run by another thread. A no-op where there is no pthread_sigmask."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED) if hasattr(signal, "pthread_sigmask") else None


def unblock(mask):
    """Put back the mask `block_until_loaded` returned: a signal that came meanwhile is delivered now."""
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


@contextlib.contextmanager
def sigterm_raises(command: str = "ppddpm"):
    """While inside: SIGTERM raises `Terminated`, and the GUARDED imports (if they happen) defer the
    signals and leave this handler in place — when this is the main thread and SIGTERM has its
    default handling (a host program's own handler is left alone; an enclosing `sigterm_raises`
    keeps its own). `command` is how a stop during those imports names it (`ppddpm sample`)."""
    mine = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    guard, deferring = _PaddleImport(), contextlib.ExitStack()
    if mine:
        _COMMAND.append(command)
        _SIGTERM_BEFORE.append(signal.SIGTERM)
        sigterm_stops()
        if hasattr(signal, "pthread_sigmask"):      # POSIX; elsewhere paddle's import keeps its handler
            sys.meta_path.insert(0, guard)
            deferring.enter_context(_extensions_deferring())
    try:
        yield
    finally:
        deferring.close()
        if mine:
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(guard)
            _SIGTERM_BEFORE.clear()
            _COMMAND.pop()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
