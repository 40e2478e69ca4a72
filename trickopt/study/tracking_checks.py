"""Which MLflow store a study tracks to, and the checks it passes before anything is created."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.error import URLError
from urllib.parse import unquote, urlsplit
from urllib.request import Request, urlopen

from trickopt.tracking import default_tracking_uri
from trickopt.urls import mask_password, mask_passwords_in_text, with_installed_driver

HEALTH_TIMEOUT_SECONDS = 10


class TrackingError(RuntimeError):
    """The MLflow tracking URI cannot be used; the message names it and says why."""


def tracking_uri(config) -> str:
    return config.tracking.uri or default_tracking_uri()


def check_tracking_uri(uri: str) -> None:
    """Fail fast on a tracking URI that cannot work. What only opening the store can tell (a
    database that refuses) is found by the tracking process within seconds, and stops
    tracking, not the study."""
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
        return
    if "://" not in uri or uri.startswith("file:"):
        raise TrackingError(
            f"tracking.uri: MLflow 3 no longer writes to a folder of files; got "
            f"{mask_password(uri)!r} (use sqlite:///PATH/mlflow.db, a database URL or "
            "http://HOST:PORT)")
    if uri.startswith("sqlite:///"):  # no password, no driver to install: no SQLAlchemy
        # import (0.3 s) to parse it; its path is read as SQLAlchemy reads it.
        folder = Path(unquote(uri[len("sqlite:///"):].partition("?")[0])).parent
        if not folder.is_dir():
            raise TrackingError(f"tracking.uri: the folder {folder} of {mask_password(uri)} "
                                "does not exist")
        return
    _check_database_url(uri)


def _check_database_url(uri: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(with_installed_driver(uri))
        url.port  # noqa: B018 - a port that is not a number fails here
    except (ArgumentError, ValueError, TypeError):
        raise TrackingError(
            "tracking.uri: not a URL that can be parsed (not shown: it may hold a password); "
            "expected sqlite:///PATH, dialect[+driver]://user:password@host:port/database "
            "or http(s)://HOST:PORT") from None
    try:
        url.get_dialect()
    except NoSuchModuleError:
        raise TrackingError(
            f"tracking.uri: no database driver for {url.drivername!r} "
            f"({mask_password(uri)}); use sqlite, postgresql (pip install "
            "'trickopt[postgres]'), mysql or an http(s) MLflow server") from None


def _check_server(uri: str) -> None:
    try:
        parts = urlsplit(uri)
        port = parts.port  # a port that is not a number fails here
        if not parts.hostname:
            raise ValueError("no host")
    except ValueError:
        raise TrackingError(
            "tracking.uri: not an http(s) URL that can be parsed (not shown: it may hold a "
            "password); expected http(s)://HOST:PORT, with any '/', '@', '#', '?' or ':' in "
            "a user name or password percent-encoded") from None
    # urllib takes no credentials in the URL: the same request as MLflow's, by hand.
    address = f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")
    request = Request(f"{address}{parts.path.rstrip('/')}/health")
    if parts.username is not None:
        token = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        request.add_header("Authorization",
                           "Basic " + base64.b64encode(token.encode()).decode())
    try:
        with urlopen(request, timeout=HEALTH_TIMEOUT_SECONDS) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except (URLError, OSError, ValueError) as exc:
        reason = mask_passwords_in_text(str(getattr(exc, "reason", exc)))
    raise TrackingError(f"tracking.uri: cannot reach the MLflow server at "
                        f"{mask_password(uri)} ({reason})")
