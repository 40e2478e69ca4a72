"""Storage and tracking URLs: never print or log a password.

Masking cannot rely on `urllib.parse.urlsplit`: it ends a URL's credentials at the first '/',
'?' or '#', while SQLAlchemy (which opens every RDB storage and MLflow store) reads them up to
the *last* '@', so `postgresql://u:s3cr/etpw@host/db` has the password `s3cr/etpw` to the
database and none to urlsplit. Here everything between `://` and the last '@' is treated as
credentials, which hides whatever any consumer would read as a password (at worst it hides
more). Passwords given as a `password=` query parameter are masked too, and the passwords of
the URLs a study was given (`remember_secrets`) are masked in any text, whatever surrounds
them (a password with a space in it breaks any URL pattern).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

MASK = "***"
_SECRETS: set[str] = set()  # passwords of this process's URLs, masked in any text
_QUERY_PASSWORD = re.compile(r"(?i)([?&;](?:password|passwd|pwd)=)[^&;#\s]*")
_URL = re.compile(r"[A-Za-z][\w+.-]*://\S+")


def password_of(url: str) -> str | None:
    """What a URL parser that ends credentials at the last '@' would take as the password."""
    _, sep, rest = url.partition("://")
    credentials, at, _ = rest.rpartition("@")
    if not (sep and at) or ":" not in credentials:
        return None
    return credentials.split(":", 1)[1]


def mask_password(url: str) -> str:
    """`postgresql://user:secret@host/db` -> `postgresql://user:***@host/db`.

    Example:
        >>> mask_password("postgresql://optuna:hun/ter2@db:5432/studies")
        'postgresql://optuna:***@db:5432/studies'
    """
    if not isinstance(url, str):
        return url
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if sep and at and ":" in credentials:
        user = credentials.split(":", 1)[0]
        if any(c in user for c in "/?#"):  # not a user name: hide it all
            user = MASK
        url = f"{scheme}://{user}:{MASK}@{host}"
    return _QUERY_PASSWORD.sub(rf"\1{MASK}", url)


def remember_secrets(*urls: str | None) -> None:
    """Mask the passwords of `urls` wherever `mask_passwords_in_text` sees them from now on,
    in this process: in their raw form and URL-decoded (as a driver's error shows them)."""
    for url in urls:
        if not isinstance(url, str):
            continue
        found = [password_of(url)] + [m.group(0).split("=", 1)[1]
                                      for m in _QUERY_PASSWORD.finditer(url)]
        for secret in filter(None, found):
            _SECRETS.update(s for s in (secret, unquote(secret), quote(secret, safe=""))
                            if len(s) >= 3)


def mask_passwords_in_text(text: str) -> str:
    """Mask every URL's password in `text` (a study file, an error message), and every
    password remembered with `remember_secrets`.

    Example:
        >>> mask_passwords_in_text("storage: postgresql://u:pw@db/optuna")
        'storage: postgresql://u:***@db/optuna'
    """
    for secret in sorted(_SECRETS, key=len, reverse=True):  # longest first: no half-masks
        text = text.replace(secret, MASK)
    return _URL.sub(lambda m: mask_password(m.group(0)), text)


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
