"""Shared fixtures. A PostgreSQL server is started once per session, only for the tests that
ask for it; without PostgreSQL's binaries those tests skip (CI installs them: see .ci/run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the tests' own helper modules

from postgres_server import PostgresServer, binaries  # noqa: E402


@pytest.fixture(scope="session")
def postgres():
    bindir = binaries()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed here (apt-get install postgresql)")
    server = PostgresServer(bindir)
    server.start()
    yield server
    server.stop()
