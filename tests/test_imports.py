"""Every module imports on its own, and no two modules import each other, even indirectly.

A circle that only works in one import order breaks the day someone imports the other module
first; a function-level import that dodges a circle is still a circle (read from the source
with `ast`, so imports inside functions count). That the tricks and the trainer keep optuna and
mlflow out of `sys.modules` is checked in test_train.py.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _modules() -> dict[str, Path]:
    """{dotted name: file} of every module under trickopt/, packages included."""
    modules = {}
    for path in sorted((ROOT / "trickopt").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _modules()
# `python -m` entry points run their command when imported: not importable on purpose.
IMPORTABLE = sorted(name for name in MODULES if not name.endswith(".__main__"))


# Each module is imported in a child forked from one interpreter that has imported the third-
# party libraries and no trickopt module: alone as far as trickopt goes, without paying torch's
# import (seconds of CPU) once per module, which a fresh interpreter each would (~190 s here).
_IMPORT_EACH_IN_A_FORK = """
import importlib, json, os, sys, traceback
for library in sys.argv[2:]:
    try:
        importlib.import_module(library)
    except Exception:
        pass  # an optional library; a module that needs it fails below, saying so
assert not [m for m in sys.modules if m.partition(".")[0] == "trickopt"]
errors = {}
for name in sys.argv[1].split(","):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
        except BaseException:
            os.write(write, traceback.format_exc().encode())
            os._exit(1)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        error = pipe.read()
    status = os.waitpid(pid, 0)[1]
    errors[name] = error or ("" if status == 0 else f"the child died: wait status {status}")
print(json.dumps(errors))
"""


def _third_party(modules: dict[str, Path]) -> list[str]:
    """The modules outside trickopt and the standard library that trickopt imports."""
    found = set()
    for path in modules.values():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module)
    top = {"trickopt", "__future__", *sys.stdlib_module_names}
    return sorted(name for name in found if name.partition(".")[0] not in top)


@pytest.fixture(scope="module")
def import_errors() -> dict[str, str]:
    """{module: the traceback of importing it alone, "" when it imported}."""
    done = subprocess.run([sys.executable, "-c", _IMPORT_EACH_IN_A_FORK, ",".join(IMPORTABLE),
                           *_third_party(MODULES)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("name", IMPORTABLE)
def test_module_imports_alone(name, import_errors):
    assert import_errors[name] == "", f"import {name}, alone:\n{import_errors[name]}"


def _imported_by(name: str, path: Path) -> set[str]:
    """The trickopt modules that `name` imports anywhere in its source (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from . import x`, `from ..a import b`
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from a import b` imports the module a.b if there is one, else a name from a.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                       for alias in node.names]
        else:
            continue
        # Importing a.b.c runs the packages a and a.b first: their __init__ imports count,
        # except this module's own packages (running them is how Python got here).
        targets += [".".join(t.split(".")[:i]) for t in targets for i in range(1, t.count(".") + 1)]
        # An import of a module that does not exist fails the importer's test above.
        found.update(t for t in targets
                     if t in MODULES and t != name and not name.startswith(t + "."))
    return found


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per edge that closes a loop in a depth-first walk, as a path a -> ... -> a."""
    circles, done, path = [], set(), []

    def visit(name: str) -> None:
        path.append(name)
        for target in sorted(graph[name]):
            if target in path:
                circles.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        if name not in done:
            visit(name)
    return circles


def test_circle_finder_finds_a_circle_through_three_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c", "a"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    graph = {name: _imported_by(name, path) for name, path in MODULES.items()}
    circles = _circles(graph)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)
