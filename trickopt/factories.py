"""User factories named "module:function": found, imported and checked before any trial runs.

A study file names a model factory (`model.factory`) or a data factory (`data.factory`) by
import path, so that spawned workers and other machines import the same function by name. The
module is looked up on `sys.path`, and first next to the study file (`search_dir`), the way a
script finds the modules beside it.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trickopt.tricks.constraints import shown


class FactoryError(ValueError):
    """A factory that cannot be used; the message names the field and what was expected."""


def add_search_dir(directory: str | Path | None) -> None:
    """Let `import` find the modules next to a study file (first, like a script's own dir)."""
    if directory is None:
        return
    directory = str(Path(directory).resolve())
    if directory not in sys.path:
        sys.path.insert(0, directory)


def resolve_factory(spec: str | Callable, field: str) -> Callable:
    """The callable `spec` names ("package.module:function" or "module:Class.method"), or
    `spec` itself when it is already callable. Raises FactoryError naming `field`."""
    if callable(spec):
        return spec
    module_name, sep, attribute = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or not module_name or not attribute:
        raise FactoryError(f"{field}: must be \"module:function\" (e.g. \"my_models:build\"); "
                           f"got {shown(spec)}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise FactoryError(f"{field}: cannot import module {module_name!r} ({exc}); put it "
                           "next to the study file or on PYTHONPATH") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise FactoryError(f"{field}: importing {module_name!r} raised "
                           f"{type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise FactoryError(f"{field}: module {module_name!r} has no {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise FactoryError(f"{field}: {spec} is a {type(target).__name__}, not a function")
    return target


def import_name(function: Callable) -> str | None:
    """"module:qualname" if a fresh process can import `function` by that name, else None
    (a lambda, a nested function, anything defined in `__main__`)."""
    module, qualname = getattr(function, "__module__", None), getattr(function, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return None
    try:
        found = resolve_factory(f"{module}:{qualname}", "")
    except FactoryError:
        return None
    return f"{module}:{qualname}" if found is function else None


def check_keywords(function: Callable, fixed: int, keywords: dict[str, Any], field: str,
                   what: str) -> None:
    """Refuse `keywords` that `function(<fixed positional arguments>, **keywords)` cannot take,
    and required keywords that are missing, naming each under `field`."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return
    parameters = list(signature.parameters.values())
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters)
    if len(positional) < fixed and not any(p.kind == p.VAR_POSITIONAL for p in parameters):
        raise FactoryError(f"{field}: {what} must take {fixed} positional arguments; its "
                           f"signature is {signature}")
    named = {p.name: p for p in parameters[fixed:]
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = [key for key in keywords if key not in named]
    if unknown and not takes_any:
        raise FactoryError(f"{field}.params: {what} takes no {', '.join(map(repr, unknown))}; "
                           f"it takes: {', '.join(named) or 'no params'}")
    missing = [name for name, p in named.items()
               if p.default is p.empty and name not in keywords]
    if missing:
        raise FactoryError(f"{field}.params: {what} requires {', '.join(map(repr, missing))}; "
                           "declare it under params")
