"""Constraints declared as data beside their parameters, and the one message for a broken one.

A `Constraint` pairs a test with the words for what it allows: `integer(1)` is "an int >= 1".
A module declares its parameters' constraints in a dict; its constructors and the config files
are checked against that same dict, never by building the real object to see if it complains.
A broken constraint is reported with one template, scikit-learn's "The 'alpha' parameter must
be a float in [0, inf). Got -1.0 instead." in this project's words:

    <field> must be <allowed>; got <value>

A config line names its field with a colon (`train.lr: must be a finite float > 0; got -0.5`);
a line listing several arguments repeats each name before its value (`got eps=0.0`). Values are
`shown` cut to MAX_SHOWN characters: a study file may hold huge ones. Pure Python, no trickopt
imports, so the trick modules (torch only) use it too.

Example:
    >>> check("train.lr", -0.5, real(0, low_open=True))
    ['train.lr: must be a finite float > 0; got -0.5']
    >>> check_params("train.stopper_params", {"wait": 2}, {"patience": integer(1)})
    ['train.stopper_params.wait: unknown parameter; allowed: patience']
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

MAX_SHOWN = 80  # characters of a value (or an unknown name) in a message


_REPR = reprlib.Repr()  # bounded work: a YAML alias bomb expands to billions of items
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 3, 6, 6
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 4 * MAX_SHOWN  # then cut by _cut


def shown(value: Any) -> str:
    """`repr(value)`, cut to MAX_SHOWN characters ending in '...', computed with bounded
    work (only the first items of a long or deeply nested value are looked at)."""
    return _cut(_REPR.repr(value))


def _cut(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."


@dataclass(frozen=True)
class Constraint:
    """What a parameter allows: `text` says it ("an int >= 1"), `test` checks a value."""

    text: str
    test: Callable[[Any], bool]

    def __call__(self, value: Any) -> bool:
        return self.test(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def integer(low: int, high: float = math.inf) -> Constraint:
    """An int (never a bool) in [low, high): "an int >= 1", "an int in [-2, 2)"."""
    text = f"an int >= {low}" if high == math.inf else f"an int in [{low}, {high})"
    return Constraint(text, lambda v: _is_int(v) and low <= v < high)


def real(low: float, high: float = math.inf, *, low_open: bool = False,
         high_open: bool = False, finite: bool = True) -> Constraint:
    """An int or float within the bounds, never nan, and never inf unless `finite` is False."""
    if high == math.inf:
        text = f"a {'finite ' if finite else ''}float {'>' if low_open else '>='} {low}"
    else:
        text = f"a float in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def test(v: Any) -> bool:
        if not _is_real(v) or (finite and not math.isfinite(v)):
            return False
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    return Constraint(text, test)


def one_of(*choices: Any) -> Constraint:
    """One of `choices`: "one of ('sgd', 'adam')", quoted so that '1' and 1 differ."""
    return Constraint(f"one of {choices!r}", lambda v: v in choices)


def optional(constraint: Constraint) -> Constraint:
    """`constraint`, or None (null in a config file)."""
    return Constraint(f"{constraint.text} or null", lambda v: v is None or constraint(v))


BOOL = Constraint("a bool", lambda v: isinstance(v, bool))


def must_be(field: str, allowed: str, value: Any, *, name: str = "") -> str:
    """The message: "<field> must be <allowed>; got <value>", or "got <name>=<value>"."""
    return f"{field} must be {allowed}; got {f'{name}=' if name else ''}{shown(value)}"


def check(field: str, value: Any, constraint: Constraint) -> list[str]:
    """No lines if `value` meets `constraint`, else the config line "<field>: must be ..."."""
    return [] if constraint(value) else [must_be(f"{field}:", constraint.text, value)]


def unknown(field: str, name: Any, what: str, allowed: Iterable[str]) -> str:
    """The line for an undeclared name: "<field>.<name>: unknown <what>; allowed: a, b"."""
    where = f"{field}.{_cut(str(name))}" if field else _cut(str(name))
    names = ", ".join(allowed)
    return f"{where}: unknown {what}; " + (f"allowed: {names}" if names else "none is allowed")


def check_params(field: str, params: dict, declared: dict[str, Constraint], *,
                 required: Iterable[str] = ()) -> list[str]:
    """Config lines for a mapping: each undeclared name, broken constraint and missing name."""
    lines = [unknown(field, name, "parameter", declared) for name in params
             if name not in declared]
    for name, constraint in declared.items():
        if name in params:
            lines += check(f"{field}.{name}", params[name], constraint)
        elif name in required:
            lines.append(f"{field}.{name}: required, {constraint.text}")
    return lines


def bad_arguments(values: dict[str, Any], declared: dict[str, Constraint]) -> list[str]:
    """"<name> must be <allowed>; got <name>=<value>" for each argument that breaks its rule."""
    return [must_be(name, declared[name].text, value, name=name)
            for name, value in values.items() if not declared[name](value)]
