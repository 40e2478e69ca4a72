"""The shared constraint helpers, against messages and verdicts written out by hand."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from trickopt.tricks import constraints
from trickopt.tricks.constraints import (
    BOOL,
    Constraint,
    bad_arguments,
    check,
    check_params,
    integer,
    must_be,
    one_of,
    optional,
    real,
    shown,
    unknown,
)


def test_the_docstring_examples_hold():
    assert doctest.testmod(constraints).failed == 0


@pytest.mark.parametrize("constraint, text, good, bad", [
    (integer(1), "an int >= 1", [1, 7, np.int64(3)], [0, -1, 1.0, True, "1", None]),
    (integer(-2, 2), "an int in [-2, 2)", [-2, 0, 1], [2, -3, 0.5]),
    (real(0), "a finite float >= 0", [0, 0.0, 2.5, np.float32(1)],
     [-1e-9, math.inf, math.nan, False, "0"]),
    (real(0, low_open=True), "a finite float > 0", [1e-12, 3], [0, 0.0, -1, math.inf]),
    (real(1, finite=False), "a float >= 1", [1, math.inf], [0.5, math.nan, -math.inf]),
    (real(0, 1, high_open=True), "a float in [0, 1)", [0, 0.999], [1, 1.0, -0.1, math.nan]),
    (real(0, 1, low_open=True), "a float in (0, 1]", [1, 0.5], [0, 1.01]),
    (real(0, 100), "a float in [0, 100]", [0, 100, 25.0], [100.5, -1]),
    (one_of("sgd", "adam"), "one of ('sgd', 'adam')", ["sgd", "adam"], ["SGD", None, 1]),
    (one_of(1, 2), "one of (1, 2)", [1, 2], ["1", 3]),
    (optional(integer(1)), "an int >= 1 or null", [None, 1], [0, "x"]),
    (BOOL, "a bool", [True, False], [0, 1, "true", None]),
])
def test_each_constraint_says_what_it_allows(constraint, text, good, bad):
    assert constraint.text == text
    assert [constraint(v) for v in good] == [True] * len(good)
    assert [constraint(v) for v in bad] == [False] * len(bad)


def test_shown_cuts_a_long_repr_to_80_characters():
    assert shown(-0.5) == "-0.5" and shown("adam") == "'adam'"
    assert shown("x" * 78) == "'" + "x" * 78 + "'"  # exactly 80: kept whole
    assert shown("x" * 79) == "'" + "x" * 76 + "..."
    # Bounded work as well as a bounded message: only the first items are looked at.
    assert shown(list(range(10_000))) == "[0, 1, 2, 3, 4, 5, ...]"
    nested = [[[[[1]]]]] * 10**6  # a YAML alias chain expands like this
    assert shown(nested) == "[" + "[[[...]]], " * 6 + "...]"


def test_the_one_template():
    assert must_be("train.lr:", "a finite float > 0", -1.0) == \
        "train.lr: must be a finite float > 0; got -1.0"
    assert must_be("dropout", "a float in [0, 1)", 1.0) == \
        "dropout must be a float in [0, 1); got 1.0"
    assert must_be("eps", "a float > 0", 0.0, name="eps") == "eps must be a float > 0; got eps=0.0"
    assert must_be("mode", "one of ('min', 'max')", "x" * 1000) == \
        "mode must be one of ('min', 'max'); got '" + "x" * 76 + "..."


def test_check_gives_a_config_line_or_nothing():
    assert check("train.lr", 0.1, real(0, low_open=True)) == []
    assert check("train.lr", 0, real(0, low_open=True)) == [
        "train.lr: must be a finite float > 0; got 0"]


def test_unknown_names_the_allowed_ones():
    assert unknown("data", "colour", "key", ["name", "path"]) == \
        "data.colour: unknown key; allowed: name, path"
    assert unknown("", "optimiser", "section", ("data", "train")) == \
        "optimiser: unknown section; allowed: data, train"
    assert unknown("study.sampler_params", "seed", "parameter", {}) == \
        "study.sampler_params.seed: unknown parameter; none is allowed"
    assert unknown("search", "y" * 500, "search parameter", ["lr"]) == \
        "search." + "y" * 77 + "...: unknown search parameter; allowed: lr"


def test_check_params_reports_every_unknown_bad_and_missing_name():
    declared = {"alpha": real(0, low_open=True), "strip": integer(1), "s": integer(1)}
    lines = check_params("train.stopper_params", {"strip": 0, "beta": 1, "gamma": 2},
                         declared, required=("alpha",))
    assert lines == [
        "train.stopper_params.beta: unknown parameter; allowed: alpha, strip, s",
        "train.stopper_params.gamma: unknown parameter; allowed: alpha, strip, s",
        "train.stopper_params.alpha: required, a finite float > 0",
        "train.stopper_params.strip: must be an int >= 1; got 0",
    ]
    assert check_params("p", {"alpha": 2.0}, declared, required=("alpha",)) == []


def test_bad_arguments_repeats_each_name_before_its_value():
    declared = {"r_max": real(1, finite=False), "momentum": real(0, 1, low_open=True)}
    assert bad_arguments({"r_max": 0.0, "momentum": 2}, declared) == [
        "r_max must be a float >= 1; got r_max=0.0",
        "momentum must be a float in (0, 1]; got momentum=2",
    ]
    assert bad_arguments({"r_max": math.inf, "momentum": 1}, declared) == []


def test_a_constraint_is_plain_data():
    even = Constraint("an even int", lambda v: v % 2 == 0)
    assert even(4) and not even(3) and even.text == "an even int"


def test_the_module_is_a_leaf_of_pure_python():
    with open(constraints.__file__, encoding="utf-8") as file:
        imports = [line for line in file if line.startswith(("import ", "from "))]
    modules = {line.split()[1].split(".")[0] for line in imports}
    assert modules <= {"__future__", "math", "numbers", "collections", "dataclasses", "typing",
                       "reprlib"}
