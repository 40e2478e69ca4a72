"""Shared fixtures. A PostgreSQL server is started once per session, only for the tests that
ask for it; without PostgreSQL's binaries those tests skip (CI installs them: see .ci/run).
An `mlflow server` on loopback is started per test that asks for one."""

from __future__ import annotations

import faulthandler
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the tests' own helper modules

from postgres_server import PostgresServer, binaries  # noqa: E402

HUNG_SECONDS = 900  # the slowest test takes a minute or two here: fifteen is a hang

# A run started in the background by a shell without job control (a CI job, `pytest &`)
# inherits SIGINT ignored, and so would every study the tests start: their Ctrl-C tests would
# send a signal that the study, rightly, ignores. As in a terminal: Ctrl-C interrupts (the
# handler is caught here, so a started process gets SIGINT's default, not "ignored").
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A test still running after HUNG_SECONDS ends the run, saying which test it was, what
    its processes are, and where every thread of this one stands: a hang in CI is then a
    short red run with a name and a stack, not silence until CI's own timeout. (pytest's
    faulthandler_timeout, set in pyproject, is the backstop where even this thread is stuck.)"""
    def hung() -> None:
        item.config.pluginmanager.getplugin("capturemanager").suspend_global_capture()
        print(f"\nHUNG: {item.nodeid} ran for over {HUNG_SECONDS} s", file=sys.stderr)
        table = subprocess.run(["ps", "-eww", "--forest", "-o", "pid,ppid,etime,pcpu,stat,args"],
                               capture_output=True, text=True, check=False).stdout
        for line in table.splitlines():  # this run's processes and any left over; no kernel's
            if not line.split(None, 5)[-1].lstrip(" \\_").startswith("["):
                print(line[:200], file=sys.stderr)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        print(f"HUNG: {item.nodeid}", file=sys.stderr, flush=True)
        os._exit(3)

    timer = threading.Timer(HUNG_SECONDS, hung)
    timer.daemon = True
    timer.start()
    try:
        return (yield)
    finally:
        timer.cancel()


@pytest.fixture(scope="session")
def postgres():
    bindir = binaries()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed here (apt-get install postgresql)")
    server = PostgresServer(bindir)
    server.start()
    yield server
    server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    store = tmp_path / "server"
    store.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
         "--artifacts-destination", str(store / "artifacts"), "--workers", "1"],
        cwd=store, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)
    else:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("mlflow server did not answer /health within 90 s")
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
