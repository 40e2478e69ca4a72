"""SIGTERM, what a scheduler, `docker stop` or systemd sends, handled as Ctrl-C is: the running
trial ends as FAIL with its runs closed, the rest is kept, the summary is printed."""

from __future__ import annotations

import signal

EXIT_CODE = 128 + signal.SIGTERM  # 143, what a shell reports for a process SIGTERM ended


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM; a KeyboardInterrupt, so that Optuna and the
    runner clean up exactly as they do for Ctrl-C."""


_received = False


def handle_sigterm() -> None:
    """From now on, SIGTERM raises Terminated (once: a second one during the clean-up is
    ignored; SIGKILL remains for a process that must die now)."""
    signal.signal(signal.SIGTERM, _raise)


def received() -> bool:
    return _received


def _raise(signum, frame) -> None:
    global _received
    _received = True
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()
