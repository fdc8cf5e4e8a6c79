"""Ctrl-C and SIGTERM while a command runs: both stop it where it is, with what was written kept.

SIGTERM (what `timeout`, `kill` and job schedulers send) raises `Terminated`, a KeyboardInterrupt,
in the main thread while `ppddpm.cli.main.main` runs; the exit status is 130 after Ctrl-C, 143
(128 + SIGTERM) after SIGTERM.

Start-up too: importing paddle installs paddle's own C-level SIGTERM handler (glog's failure-signal
handler: a C++ "FatalError: Termination signal is detected" block, then the end), and importing
paddlenlp (ppdiffusers does) resets it to the default. So the command line loads with SIGINT and
SIGTERM blocked (`block_until_loaded`, from `ppddpm.__main__.run`: the threads its imports start
inherit the block, and the signals reach the main thread only), and while `sigterm_raises` is in
force those imports defer them (`_PaddleImport`): blocked, ppddpm's handlers put back right after,
and a signal that came meanwhile delivered then. A command stopped while paddle loads ends with
the same one line as one stopped later (the stop waits for the import, a few seconds at most).
This module imports only the standard library.
"""
from __future__ import annotations

import contextlib
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


_SIGTERM_BEFORE = []      # non-empty while main() runs with SIGTERM raising `Terminated`


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


def _deferring(exec_module):
    """`exec_module` run with DEFERRED blocked in this thread and, should another thread take one,
    only noted (raised inside paddle's import, an interrupt would surface as pybind11's "ImportError:
    initialization failed"); afterwards ppddpm's handlers are put back over paddle's, the signals
    unblocked (a blocked one is delivered then) and a noted one raised again."""
    def exec_with_signals_deferred(module):
        noted = []
        before = signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED)
        handlers = {sig: signal.signal(sig, lambda signum, frame: noted.append(signum)) for sig in DEFERRED}
        try:
            exec_module(module)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
            for sig in dict.fromkeys(noted):
                signal.raise_signal(sig)
    return exec_with_signals_deferred


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
def sigterm_raises():
    """While inside: SIGTERM raises `Terminated`, and paddle's import (if it happens) defers the
    signals and leaves this handler in place — when this is the main thread and SIGTERM has its
    default handling (a host program's own handler is left alone; an enclosing `sigterm_raises`
    keeps its own)."""
    mine = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    guard = _PaddleImport()
    if mine:
        _SIGTERM_BEFORE.append(signal.SIGTERM)
        sigterm_stops()
        if hasattr(signal, "pthread_sigmask"):      # POSIX; elsewhere paddle's import keeps its handler
            sys.meta_path.insert(0, guard)
    try:
        yield
    finally:
        if mine:
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(guard)
            _SIGTERM_BEFORE.clear()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
