"""Run a CLI's `main` in this process, as a fresh `python -m ...` would run it, minus the 3-5 s
of imports (torch, optuna) that a subprocess pays each time.

Used where a test checks what a command answers (exit code, output, the files left behind),
not how a process behaves (signals, kill -9, spawned workers, the tracking process's output,
what a fresh interpreter imports): those tests keep their subprocesses.

What a fresh process would show and this one might not is put back for the call: stdout and
stderr are captured as the command writes them, logging handlers created at import (Optuna's)
write to the captured stderr, warnings are printed to stderr under the interpreter's default
filters (not recorded by pytest), `MLFLOW_TRACKING_URI` is unset, the working directory is the
test's folder, and no password is remembered for masking yet. What the command may change in
this process is restored afterwards: the environment, the working directory, the SIGTERM
handler, the passwords remembered for masking, Optuna's verbosity, torch's thread count and the
random generators. A `timeout` fails the call (SIGALRM) as a subprocess's timeout would.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Done:
    """What `subprocess.run(..., capture_output=True, text=True)` would have returned."""

    returncode: int
    stdout: str
    stderr: str


class CliTimeout(BaseException):
    """Not an Exception: the study's `optimize(catch=(Exception,))` would record it as one
    failed trial and go on, and the command would then run with no limit at all."""


def _default_warning_filters() -> None:
    """The filters of a fresh interpreter started without -W (CPython's defaults)."""
    warnings.resetwarnings()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
    warnings.filterwarnings("ignore", category=ImportWarning)
    warnings.filterwarnings("ignore", category=ResourceWarning)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")


def _console_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict
                                       .values() if isinstance(logger, logging.Logger)]
    # Exactly StreamHandler: a FileHandler writes to a file, pytest's handlers are its own.
    return [h for logger in loggers for h in logger.handlers if type(h) is logging.StreamHandler]


@contextlib.contextmanager
def _alarm(seconds: float | None):
    if not seconds:
        yield
        return

    def expired(signum, frame):
        raise CliTimeout(f"the command took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds, 10)  # again every 10 s, should one be lost
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_main(main: Callable[[list[str]], int], cwd: Path, args: Sequence[str], *,
             timeout: float | None = None) -> Done:
    """`main(args)` run in `cwd`; its exit code (returned or raised as SystemExit) and output."""
    import numpy as np
    import optuna
    import torch

    from trickopt import urls
    from trickopt.study import signals

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_sigterm, saved_received = signal.getsignal(signal.SIGTERM), signals._received
    saved_secrets = set(urls._SECRETS)
    saved_verbosity, saved_threads = optuna.logging.get_verbosity(), torch.get_num_threads()
    saved_rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    handlers = {h: h.stream for h in _console_handlers()}
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    urls._SECRETS.clear()  # a fresh process knows no password yet
    os.chdir(cwd)
    try:
        with warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            _default_warning_filters()
            for handler in handlers:
                handler.setStream(err)
            try:
                with _alarm(timeout):
                    code = main(list(args))
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)
            for w in caught:
                err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno,
                                                 w.line))
    finally:
        for handler, stream in handlers.items():
            handler.setStream(stream)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        signal.signal(signal.SIGTERM, saved_sigterm)
        signals._received = saved_received
        urls._SECRETS.clear()
        urls._SECRETS.update(saved_secrets)
        optuna.logging.set_verbosity(saved_verbosity)
        torch.set_num_threads(saved_threads)
        random.setstate(saved_rng[0])
        np.random.set_state(saved_rng[1])
        torch.set_rng_state(saved_rng[2])
    return Done(code, out.getvalue(), err.getvalue())


def study_cli(cwd: Path, *args: str, timeout: float | None = None) -> Done:
    """`python -m trickopt.study ARGS` in `cwd`, in this process."""
    from trickopt.study.cli import main

    return run_main(main, cwd, args, timeout=timeout)


def train_cli(cwd: Path, *args: str, timeout: float | None = None) -> Done:
    """`python -m trickopt.train_cli ARGS` in `cwd`, in this process."""
    from trickopt.train_cli import main

    return run_main(main, cwd, args, timeout=timeout)
