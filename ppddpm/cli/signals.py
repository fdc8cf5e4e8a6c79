"""Ctrl-C and SIGTERM while a command runs: both stop it where it is, with what was written kept.

SIGTERM (what `timeout`, `kill` and job schedulers send) raises `Terminated`, a KeyboardInterrupt,
in the main thread while `ppddpm.cli.main.main` runs; the exit status is 130 after Ctrl-C, 143
(128 + SIGTERM) after SIGTERM.
"""
from __future__ import annotations

import contextlib
import signal
import threading


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


INTERRUPTED = (130, 143)      # the exit statuses of a command stopped by Ctrl-C or SIGTERM


_SIGTERM_BEFORE = []      # non-empty while main() runs with SIGTERM raising `Terminated`


def sigterm_stops():
    """SIGTERM raises `Terminated` in the main thread while main() runs (no-op elsewhere). Called
    again after paddle is imported: paddle puts its own C-level SIGTERM handler in place."""
    if _SIGTERM_BEFORE and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


@contextlib.contextmanager
def sigterm_raises():
    """While inside: SIGTERM raises `Terminated` — when this is the main thread and SIGTERM has its
    default handling (a host program's own handler is left alone)."""
    mine = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if mine:
        _SIGTERM_BEFORE.append(signal.SIGTERM)
        sigterm_stops()
    try:
        yield
    finally:
        if mine:
            _SIGTERM_BEFORE.clear()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
