"""Storage and tracking URLs: never print or log a password."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit


def mask_password(url: str) -> str:
    """`postgresql://user:secret@host/db` -> `postgresql://user:***@host/db`; others unchanged.

    Example:
        >>> mask_password("postgresql://optuna:hunter2@db:5432/studies")
        'postgresql://optuna:***@db:5432/studies'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.password:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f":***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


_CREDENTIALS = re.compile(r"(\w[\w+.-]*://[^/\s:@]*:)[^@\s/]+@")


def mask_passwords_in_text(text: str) -> str:
    """Mask the password of every URL in `text` (a study file, an error message).

    Example:
        >>> mask_passwords_in_text("storage: postgresql://u:pw@db/optuna")
        'storage: postgresql://u:***@db/optuna'
    """
    return _CREDENTIALS.sub(r"\1***@", text)


def with_installed_driver(url: str) -> str:
    """`postgresql://` means psycopg2 to SQLAlchemy; the `postgres` extra installs psycopg 3.
    Name that driver when psycopg2 is absent, so the URL a user types just works."""
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg2") is not None:
        return url
    if importlib.util.find_spec("psycopg") is None:
        return url  # SQLAlchemy will say which driver to install
    return "postgresql+psycopg://" + url.split("://", 1)[1]
