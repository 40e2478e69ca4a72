"""A study file: the run sections (data, model, train) plus search, study, tracking and refit.

The dataclass defaults *are* the default study (`python -m trickopt.study` with no file): a
1-D CNN on MNIST-1D searched over all tricks. A study file sets only what it changes, may start from
presets with `extends: [path, ...]` (relative to the file; later files and the file itself win),
and is validated as a whole before anything is created: every problem is reported at once.
"""

from __future__ import annotations

import copy
import itertools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trickopt.config import (
    RUN_SECTIONS,
    ConfigError,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    check_fields,
    parse_section,
    read_yaml,
)
from trickopt.factories import (
    FactoryError,
    add_search_dir,
    check_keywords,
    import_name,
    resolve_factory,
)
from trickopt.models import model_factory, model_params
from trickopt.study.space import (
    ALL_TRICKS,
    BUILT_IN_SHAPE,
    PARAMS,
    Choice,
    Range,
    parse_model_params,
    parse_search,
    suggest,
)
from trickopt.study.space import apply as apply_params
from trickopt.tricks.constraints import (
    BOOL,
    Constraint,
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

# The arguments of Optuna 5's samplers and pruners (see `inspect.signature`) that a study file
# may set, with Optuna's own ranges, so that a bad one is reported before anything is built.
# Left out: the seed (study.seed), TPE's group/multivariate (ours: group=True), callables, and
# arguments Optuna deprecates. Hyperband's max_resource defaults to train.max_epochs.
SAMPLER_PARAMS: dict[str, dict[str, Constraint]] = {
    "tpe": {"n_startup_trials": integer(0), "n_ei_candidates": integer(1),
            "constant_liar": BOOL},
    "random": {},
    "qmc": {"qmc_type": one_of("sobol", "halton"), "scramble": BOOL},
    "gp": {"n_startup_trials": integer(0), "deterministic_objective": BOOL},
}
_STEPS = {"n_startup_trials": integer(0), "n_warmup_steps": integer(0),
          "interval_steps": integer(1), "n_min_trials": integer(1)}  # median and percentile
PRUNER_PARAMS: dict[str, dict[str, Constraint]] = {
    "median": _STEPS,
    "percentile": {"percentile": real(0, 100), **_STEPS},
    "successive_halving": {"min_resource": integer(1), "reduction_factor": integer(2),
                           "min_early_stopping_rate": integer(0)},
    "hyperband": {"min_resource": integer(1), "max_resource": integer(1),
                  "reduction_factor": integer(2)},
    "wilcoxon": {"p_threshold": real(0, 1), "n_startup_steps": integer(0)},
    "none": {},
}
SAMPLERS = tuple(SAMPLER_PARAMS)
PRUNERS = tuple(PRUNER_PARAMS)
METRICS = {"val_loss": "minimize", "val_accuracy": "maximize",  # classification
           "val_rmse": "minimize"}  # regression
# Our defaults where Optuna's do not fit epoch-level reports. Median and percentile wait for 5
# finished trials and 3 epochs: earlier, the median is noise. Percentile needs its percentile.
PRUNER_DEFAULTS = {"median": {"n_startup_trials": 5, "n_warmup_steps": 3},
                   "percentile": {"percentile": 25.0, "n_startup_trials": 5,
                                  "n_warmup_steps": 3}}
REFITS = ("none", "train_val", "train_val_test")
DEFAULT_STUDY_NAME = "trickopt-mnist1d-cnn"


# A study name becomes an MLflow experiment name and a quoted value in MLflow's search
# filters, which cannot escape quotes; and a name over MLflow's limits is refused by MLflow
# only once trials have run.
NAME = Constraint("a name of 1 to 200 characters without quotes, backticks or control "
                  "characters", lambda v: isinstance(v, str) and 0 < len(v.strip()) and
                  len(v) <= 200 and not any(c in "'\"`" or ord(c) < 32 for c in v))


@dataclass
class StudySection:
    name: str = DEFAULT_STUDY_NAME
    n_trials: int = 16  # trials per run of the command; a rerun adds as many again
    timeout: float | None = None  # seconds for this run of the command; None: no limit
    metric: str = "val_loss"  # val_loss; val_accuracy (classification) or val_rmse
    direction: str | None = None  # derived from the metric; if given it must agree
    sampler: str = "tpe"
    sampler_params: dict = field(default_factory=dict)
    pruner: str = "median"
    pruner_params: dict = field(default_factory=dict)  # on top of PRUNER_DEFAULTS[pruner]
    seed: int | None = 0  # sampler seed; None draws a fresh one
    storage: str | None = None  # an Optuna storage URL; None: ./trickopt.journal
    workers: int = 1  # worker processes on this machine, one per GPU where there are several
    # RDB storages only: a worker silent this long is dead; its trial is failed and retried.
    heartbeat_interval: int = 10  # seconds
    grace_period: int = 60  # seconds; > a few heartbeats, so a busy worker is not declared dead
    # Resuming a study whose fixed settings (data, model, train, ...) differ from this file's is
    # refused, since its trials would no longer be comparable; true accepts the changes.
    allow_changes: bool = False

    def check(self, prefix: str) -> list[str]:
        errors = check_fields(self, prefix, {
            "name": NAME, "seed": optional(integer(0, 2**32)),  # numpy's seed range
            "n_trials": integer(1),
            "timeout": optional(real(0, low_open=True, finite=False)),  # seconds
            "metric": one_of(*METRICS), "sampler": one_of(*SAMPLERS),
            "pruner": one_of(*PRUNERS), "workers": integer(1), "heartbeat_interval": integer(1),
        })
        if self.metric in METRICS and self.direction not in (None, METRICS[self.metric]):
            errors.append(f"{prefix}.direction: {self.metric} is always "
                          f"{METRICS[self.metric]}d; got {shown(self.direction)}")
        if self.sampler in SAMPLER_PARAMS:
            errors += check_params(f"{prefix}.sampler_params", self.sampler_params,
                                   SAMPLER_PARAMS[self.sampler])
        if self.pruner in PRUNER_PARAMS:
            errors += check_params(f"{prefix}.pruner_params", self.pruner_params,
                                   PRUNER_PARAMS[self.pruner])
        if self.grace_period <= self.heartbeat_interval:
            errors.append(must_be(f"{prefix}.grace_period:",
                                  f"> heartbeat_interval ({self.heartbeat_interval})",
                                  self.grace_period))
        if _is_int(self.workers) and self.workers > max_workers():
            errors.append(must_be(f"{prefix}.workers:", f"<= {max_workers()}, the cores (or "
                                  "GPUs) of this machine: more would only wait for them",
                                  self.workers))
        if self.workers > 1 and self.storage is not None and self.storage.startswith("sqlite"):
            errors.append(f"{prefix}.workers: {self.workers} workers cannot share SQLite safely "
                          "(\"database is locked\"); use PostgreSQL (--storage "
                          "postgresql://...) or a journal file (--storage journal:PATH)")
        return errors

    @property
    def resolved_direction(self) -> str:
        return METRICS[self.metric]


@dataclass
class TrackingSection:
    enabled: bool = True
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here
    experiment: str | None = None  # None: the study name

    def check(self, prefix: str) -> list[str]:
        return check_fields(self, prefix, {"experiment": optional(NAME)})


@dataclass
class ReportSection:
    """`report:` runs `python -m trickopt.report` right after the search (and before the
    refit, which then uses the configuration the report chose). Off without the section;
    `report: {seeds: 6}` (or `report: {}`) turns it on, `enabled: false` off again."""

    enabled: bool = True
    seeds: int = 6
    max_seeds: int = 15
    racing: bool = True
    top_k: int = 3
    retune: list = field(default_factory=list)  # [] or [lr]
    path: bool = False
    workers: int | None = None  # None: one per core, or per GPU (workers.report_workers)

    def check(self, prefix: str) -> list[str]:
        errors = check_fields(self, prefix, {"seeds": integer(2), "max_seeds": integer(2),
                                             "top_k": integer(1),
                                             "workers": optional(integer(1))})
        if _is_int(self.seeds) and _is_int(self.max_seeds) and self.max_seeds < self.seeds:
            errors.append(must_be(f"{prefix}.max_seeds:", f">= seeds ({self.seeds})",
                                  self.max_seeds))
        for value in self.retune if isinstance(self.retune, list) else [self.retune]:
            if value != "lr":
                errors.append(must_be(f"{prefix}.retune:", "a list of knobs to retune per "
                                      "arm; allowed: [lr]", self.retune))
                break
        return errors


def parse_report(raw: Any, errors: list[str]) -> ReportSection:
    if raw is None or raw is False:
        return ReportSection(enabled=False)
    if raw is True:
        return ReportSection()
    return parse_section(ReportSection, raw, "report", errors)


@dataclass
class CompareSection:
    """`compare:` makes the file a comparison study (`python -m trickopt.compare`, the Deep
    Learning Tuning Playbook's split): the values of the *scientific* knob (one knob, or two
    crossed) are compared, each with the *nuisance* knobs tuned on its own with the same
    budget, every other knob fixed; then each value's best is re-run on paired seeds. Off
    without the section. In a file with it, `search` starts from the nuisance knobs alone
    (one not in the file takes its range from the all-tricks space), not from all tricks."""

    enabled: bool = True
    scientific: dict = field(default_factory=dict)  # {knob: [values]}: one or two knobs
    nuisance: list[str] = field(default_factory=lambda: ["lr"])  # tuned per scientific value
    trials: int = 8  # nuisance-tuning trials per scientific value: the equal budget
    seeds: int = 6  # paired seeds 1..seeds of the re-runs
    # A claim to test (the claim studies of studies/claims/): `baseline` is the value every
    # other is compared with (instead of the best mean), e.g. {dropout: 0.0}; `expect` what
    # the claim says of the others against it: better, worse, same, different or not_worse.
    # `claim` states it and `finding` is the hand-written "what this shows"; both go into the
    # report as they are.
    baseline: dict = field(default_factory=dict)
    expect: str = "better"
    # What the paired statistics compare: the test score, or the trained weights' fraction of
    # exact zeros (`zeros`) or of |w| < 1e-3 (`small_weights`): higher is sparser.
    measure: str = "test_score"
    claim: str = ""
    finding: str = ""

    def check(self, prefix: str) -> list[str]:
        errors = check_fields(self, prefix, {"trials": integer(1), "seeds": integer(2),
                                             "expect": one_of(*EXPECTATIONS),
                                             "measure": one_of(*MEASURES)})
        if not self.enabled:
            return errors
        field_ = f"{prefix}.scientific"
        if not self.scientific or len(self.scientific) > MAX_SCIENTIFIC:
            errors.append(must_be(f"{field_}:", "a mapping of one or two knobs to their "
                                  "values, e.g. {norm: [batch, layer]}", self.scientific))
        combinations = 1
        for knob, values in self.scientific.items():
            errors += _scientific_errors(field_, knob, values)
            combinations *= len(values) if isinstance(values, list) else 1
        if self.scientific and combinations < 2:
            errors.append(must_be(f"{field_}:", "at least two values to compare",
                                  self.scientific))
        if not self.nuisance or len(set(map(str, self.nuisance))) != len(self.nuisance):
            errors.append(must_be(f"{prefix}.nuisance:", "a list of distinct knobs to tune per "
                                  "scientific value, e.g. [lr]", self.nuisance))
        for knob in set(self.nuisance) & set(self.scientific):
            errors.append(f"{prefix}.nuisance: {knob} is scientific (compare.scientific); a "
                          "knob is one or the other")
        if self.baseline and isinstance(self.scientific, dict) and not _is_combination(
                self.baseline, self.scientific):
            example = ", ".join(f"{knob}: {values[0]}" for knob, values in
                                self.scientific.items() if isinstance(values, list) and values)
            errors.append(must_be(f"{prefix}.baseline:", "one of the scientific values with "
                                  f"every scientific knob set, e.g. {{{example}}}",
                                  self.baseline))
        return errors


# What a claim says of the other values against its baseline.
EXPECTATIONS = ("better", "worse", "same", "different", "not_worse")
MEASURES = ("test_score", "zeros", "small_weights")  # what a comparison compares


def _is_combination(baseline: Any, scientific: dict) -> bool:
    """Whether `baseline` sets every scientific knob to one of its listed values."""
    if not isinstance(baseline, dict) or set(baseline) != set(scientific):
        return False
    return all(isinstance(values, list) and shown(baseline[knob]) in map(shown, values)
               for knob, values in scientific.items())


MAX_SCIENTIFIC = 2  # one knob, or two crossed


def _scientific_errors(field_: str, knob: Any, values: Any) -> list[str]:
    if knob not in PARAMS:
        return [unknown(field_, knob, "knob", PARAMS)]
    if not isinstance(values, list) or not values or \
            any(isinstance(v, (dict, list)) for v in values):
        return [must_be(f"{field_}.{knob}:", "a non-empty list of values", values)]
    errors: list[str] = []
    for value in values:  # each as the search space checks a fixed value of the knob
        parse_search({knob: value}, field_, errors)
    if len({shown(v) for v in values}) != len(values):
        errors.append(must_be(f"{field_}.{knob}:", "distinct values", values))
    return errors


def parse_compare(raw: Any, errors: list[str]) -> CompareSection:
    """The `compare:` section; its scientific values as the search space holds them (an int
    given for a float knob becomes a float)."""
    if raw is None or raw is False:
        return CompareSection(enabled=False)
    section = parse_section(CompareSection, raw, "compare", errors)
    if section.enabled and isinstance(section.scientific, dict):
        converted = {}
        for knob, values in section.scientific.items():
            if knob in PARAMS and isinstance(values, list):
                converted[knob] = [parse_search({knob: v}, "", []).get(knob, v) for v in values]
        section.scientific = converted
    if section.enabled and isinstance(section.baseline, dict):
        section.baseline = {knob: parse_search({knob: v}, "", []).get(knob, v)
                            if knob in PARAMS else v for knob, v in section.baseline.items()}
    return section


def compare_search(compare: CompareSection, raw_search: Any, errors: list[str]) -> dict:
    """The `search` mapping a comparison study starts from: its nuisance knobs' ranges in the
    all-tricks space, under the file's own entries; the scientific knob is not the file's."""
    if not isinstance(raw_search, dict):
        return raw_search
    for knob in compare.scientific:
        if knob in raw_search:
            errors.append(f"search.{knob}: {knob} is compare.scientific's knob; its values are "
                          "listed there (remove it from search)")
    base = {knob: ALL_TRICKS[knob] for knob in compare.nuisance if knob in ALL_TRICKS}
    return {**base, **{k: v for k, v in raw_search.items() if k not in compare.scientific}}


def _check_compare_search(compare: CompareSection, search: dict, model_params: Any,
                          errors: list[str]) -> None:
    """Nuisance knobs searched, scientific ones set per value, every other knob fixed."""
    own = {name for name, spec in model_params.items() if isinstance(spec, dict)
           and _is_distribution(spec)} if isinstance(model_params, dict) else set()
    for knob in compare.nuisance:
        if knob in own:
            continue
        allowed = "searched (a range {low, high} or {choices: [...]}): compare.nuisance " \
                  "lists it"
        if knob not in PARAMS:
            errors.append(unknown("compare.nuisance", knob, "knob",
                                  [*PARAMS, "a searched model.params knob"]))
        elif knob not in search:
            errors.append(f"search.{knob}: must be {allowed}; it is not in search")
        elif not isinstance(search[knob], (Range, Choice)):
            errors.append(must_be(f"search.{knob}:", allowed, search[knob]))
    tuned = set(compare.nuisance) | set(compare.scientific)
    for knob, spec in search.items():
        if isinstance(spec, (Range, Choice)) and knob not in tuned:
            errors.append(f"search.{knob} is searched but is neither scientific nor nuisance: "
                          "fix it to one value or list it under compare.nuisance")
    for knob in sorted(own - tuned):
        errors.append(f"model.params.{knob} is searched but is neither scientific nor "
                      "nuisance: fix it to one value or list it under compare.nuisance")


def _check_scientific_active(compare: CompareSection, search: dict, run: RunConfig,
                             errors: list[str]) -> None:
    """A scientific knob whose parent is fixed to a value that leaves it inactive (momentum
    with adam, say) would train the same model for every value: refused."""
    fixed = {k: v for k, v in search.items() if not isinstance(v, (Range, Choice))}
    for knob, values in compare.scientific.items():
        parent = PARAMS[knob].parent
        if parent is None or parent in compare.scientific or \
                isinstance(search.get(parent), (Range, Choice)):
            continue
        if knob not in suggest(None, {**fixed, knob: values[0]}, run):
            errors.append(f"compare.scientific.{knob}: only acts where {parent} is one of "
                          f"{', '.join(map(str, PARAMS[knob].parent_values))}; the study fixes "
                          f"it otherwise (set search.{parent}), so every value would train the "
                          "same model")


def max_workers() -> int:
    """One worker per core, or per GPU where there are more GPUs than cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    import torch

    return max(cores, torch.cuda.device_count() if torch.cuda.is_available() else 0)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class StudyConfig:
    data: DataConfig = field(default_factory=lambda: DataConfig(name="mnist1d"))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(arch="cnn1d",
                                                                   channels=[32, 32, 32]))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_epochs=20))
    search: dict[str, Any] = field(default_factory=lambda: _default_search())
    study: StudySection = field(default_factory=StudySection)
    tracking: TrackingSection = field(default_factory=TrackingSection)
    refit: str = "train_val"
    report: ReportSection = field(default_factory=lambda: ReportSection(enabled=False))
    compare: CompareSection = field(default_factory=lambda: CompareSection(enabled=False))
    source: str | None = None  # the study file, or None for the built-in default
    raw: dict = field(default_factory=dict)  # the merged mapping, logged as an artifact

    @property
    def run(self):
        return RunConfig(data=self.data, model=self.model, train=self.train)


SECTIONS = ("extends", "data", "model", "train", "search", "study", "tracking", "refit",
            "report", "compare")


def create_sampler(name: str, params: dict, seed: int | None):
    import optuna

    if name == "tpe":
        # group=True: conditional sub-parameters form their own groups, so Optuna 5's
        # multivariate TPE samples them jointly instead of warning and going independent.
        # `group` is marked experimental; we choose it knowingly, so its warning is noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, group=True, **params)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed, **params)
    # QMC and GP model a fixed space: the conditional knobs (a stopper's or a schedule's own
    # parameters) are sampled independently at random, as the README says. Said once there,
    # not in a warning on every trial; QMC's "experimental" warning is noise too.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        factory = optuna.samplers.QMCSampler if name == "qmc" else optuna.samplers.GPSampler
        return factory(seed=seed, warn_independent_sampling=False, **params)


def create_pruner(name: str, params: dict, max_epochs: int):
    import optuna

    pruners = optuna.pruners
    params = {**PRUNER_DEFAULTS.get(name, {}), **params}
    with warnings.catch_warnings():  # Wilcoxon is marked experimental; chosen knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _pruner(pruners, name, params, max_epochs)


def _pruner(pruners, name: str, params: dict, max_epochs: int):
    if name == "none":
        return pruners.NopPruner(**params)
    if name == "hyperband":
        return pruners.HyperbandPruner(**{"max_resource": max_epochs, **params})
    factory = {"median": pruners.MedianPruner, "percentile": pruners.PercentilePruner,
               "successive_halving": pruners.SuccessiveHalvingPruner,
               "wilcoxon": pruners.WilcoxonPruner}[name]
    return factory(**params)


# The default study (no study file) fixes the batch size: on a 2-core CPU a batch of 32 takes
# about 3x the time per epoch of 128, and the default study must run in about a minute.
DEFAULT_STUDY_SEARCH = {**ALL_TRICKS, "batch_size": 128}


def _default_search() -> dict[str, Any]:
    return parse_search(DEFAULT_STUDY_SEARCH, "", [])


def read_study_file(path: str | Path | None = None, overrides: list[str] = ()) -> dict:
    """The study as written: presets merged and overrides applied, not validated yet."""
    raw = _read_with_presets(Path(path)) if path is not None else {}
    return apply_overrides(copy.deepcopy(raw), list(overrides))


def load_study_config(path: str | Path | None = None, overrides: list[str] = (), *,
                      model: Callable | None = None,
                      data: Callable | None = None) -> StudyConfig:
    """Read, merge presets, override and validate; raises ConfigError listing every problem.

    `model` and `data` are factories given from Python (in place of the file's
    `model.factory` and `data.factory`): see `parse_study_config`."""
    return parse_study_config(read_study_file(path, overrides),
                              source=str(path) if path is not None else None,
                              model=model, data=data)


def _read_with_presets(path: Path, seen: tuple = ()) -> dict:
    raw = read_yaml(path)
    extends = raw.pop("extends", [])
    if isinstance(extends, str):
        extends = [extends]
    if not isinstance(extends, list) or not all(isinstance(item, str) for item in extends):
        raise ConfigError([must_be(f"{path}: extends", "a path or a list of paths", extends)])
    merged: dict = {}
    for item in extends:
        preset = (path.parent / item).resolve()
        if preset in seen:
            raise ConfigError([f"{path}: extends {shown(item)} includes itself"])
        if not preset.is_file():
            raise ConfigError([f"{path}: extends {shown(item)}, but {preset} does not exist"])
        _merge(merged, _read_with_presets(preset, seen + (preset,)))
    return _merge(merged, raw)


def _merge(into: dict, update: dict) -> dict:
    """Deep-merge sections; a `search` entry or a list is replaced whole, never mixed."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key != "search" \
                and not _is_distribution(value):
            _merge(into[key], value)
        elif key == "search" and isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key].update(value)
        else:
            into[key] = value
    return into


def _is_distribution(value: dict) -> bool:
    return "choices" in value or "low" in value


def parse_study_config(raw: dict, *, source: str | None = None, model: Callable | None = None,
                       data: Callable | None = None) -> StudyConfig:
    """Validate a merged study mapping. `source` is the study file: its folder is where a
    `model.factory` or `data.factory` module is looked for first.

    `model` and `data` are factory functions given from Python; they replace the sections'
    `factory`. Spawned workers (`study.workers` > 1) import them by name, so there they must
    be importable (defined at the top level of a module, not in `__main__`)."""
    errors: list[str] = []
    for key in raw:
        if key not in SECTIONS:
            errors.append(unknown("", key, "section", SECTIONS[1:]))
    defaults = StudyConfig()
    run = {}
    for name, cls in RUN_SECTIONS.items():
        # Sections start from the study's defaults (MNIST-1D, a 1-D CNN, 20 epochs), not the
        # run's.
        base = vars(copy.deepcopy(getattr(defaults, name)))
        section = raw.get(name, {})
        merged = {**base, **section} if isinstance(section, dict) else section
        run[name] = parse_section(cls, merged, name, errors)
    # Search entries override the default (all tricks) knob by knob, like every section:
    # `search: {norm: batch}` fixes one trick and leaves the others searched.
    for section, function in (("model", model), ("data", data)):
        if function is not None:
            run[section].factory = _given_factory(function, section, raw, errors)
    raw_search = raw.get("search", {})
    # A study file starts from all tricks; no file at all is the default study; a comparison
    # study from its nuisance knobs (every other knob is fixed there).
    base_search = ALL_TRICKS if source is not None else DEFAULT_STUDY_SEARCH
    compare = parse_compare(raw.get("compare"), errors)
    if compare.enabled:
        base_search, raw_search = {}, compare_search(compare, raw_search, errors)
    search = parse_search({**base_search, **raw_search} if isinstance(raw_search, dict)
                          else raw_search, "search", errors)
    if compare.enabled:
        _check_compare_search(compare, search, run["model"].params, errors)
        # A plain study of the file (python -m trickopt.study) searches the values too.
        search.update({knob: Choice(tuple(values))
                       for knob, values in compare.scientific.items()})
    study = parse_section(StudySection, raw.get("study"), "study", errors)
    tracking = parse_section(TrackingSection, raw.get("tracking"), "tracking", errors)
    refit = raw.get("refit", "train_val")
    errors += check("refit", refit, one_of(*REFITS))
    report = parse_report(raw.get("report"), errors)
    _check_search_against_run(search, run, errors)
    if not errors:
        add_search_dir(Path(source).parent if source is not None else Path.cwd())
        search.update(_model_knobs(run["model"], search, errors))
        _check_data_factory(run["data"], errors)
    if not errors and compare.enabled:
        _check_scientific_active(compare, search, RunConfig(**run), errors)
    if not errors and compare.enabled:
        _check_scientific_values_train(compare, search, RunConfig(**run), errors)
    if errors:
        raise ConfigError(errors)
    return StudyConfig(**run, search=search, study=study, tracking=tracking, refit=refit,
                       report=report, compare=compare, source=source, raw=raw)


def _check_scientific_values_train(compare: CompareSection, search: dict, run: RunConfig,
                                   errors: list[str]) -> None:
    """Each scientific value's run config, built as its trials will build it, must be valid:
    a value whose own sub-knobs nothing sets (stopper gl needs gl_alpha; train.stopper_params
    belongs to the file's own stopper) would fail every trial."""
    fixed = {k: v for k, v in search.items() if not isinstance(v, (Range, Choice))}
    for value in scientific_values(compare.scientific):
        params = suggest(None, {**fixed, **value}, run)
        config = apply_params(run, params)
        problems = config.model.check("model") + config.train.check("train")
        if not problems:
            continue
        children = [name for name, param in PARAMS.items() if param.parent in value
                    and value[param.parent] in param.parent_values and name not in search]
        where = (f"set {', '.join(children)} in search (fixed, e.g. {children[0]}: ...) or "
                 "list it under compare.nuisance" if children else "fix the file's settings")
        errors.append(f"compare.scientific: {','.join(f'{k}={v}' for k, v in value.items())} "
                      f"cannot train: {problems[0]}; {where}")


def scientific_values(scientific: dict[str, list]) -> list[dict[str, Any]]:
    """Every scientific value to compare: one knob's values, or two knobs' crossed.

    Example:
        >>> scientific_values({"norm": ["batch", "layer"], "batch_size": [8, 32]})[1]
        {'norm': 'batch', 'batch_size': 32}
    """
    knobs = list(scientific)
    return [dict(zip(knobs, values)) for values in itertools.product(*scientific.values())]


def _check_data_factory(data: DataConfig, errors: list[str]) -> None:
    if data.factory is None:
        return
    try:
        load = resolve_factory(data.factory, "data.factory")
        check_keywords(load, 1, {}, "data", f"data.factory {data.factory}")
    except FactoryError as exc:
        errors.append(str(exc))


def _given_factory(function: Callable, section: str, raw: dict, errors: list[str]):
    """A factory passed from Python: its import name where it has one (what workers, the
    resume check and MLflow see), else the function itself, for this process alone."""
    name = import_name(function)
    workers = raw.get("study", {}).get("workers", 1) if isinstance(raw.get("study"), dict) else 1
    if name is None and workers != 1:
        errors.append(f"{section}.factory: {getattr(function, '__qualname__', function)!r} "
                      f"cannot be imported by name, and study.workers={workers} spawned "
                      "processes must import it: define it at the top level of a module that "
                      "is not __main__ (or use one worker)")
    elif name is None and not callable(function):
        errors.append(must_be(f"{section}.factory:", "a function", function))
    return name or function


def _check_search_against_run(search: dict, run: dict, errors: list[str]) -> None:
    _fit_warmup_to_budget(search, run["train"].max_epochs, errors)
    model = run["model"]
    if model.factory is not None:
        errors += [f"search.{name}: sets the built-in models' {name}; with model.factory, "
                   f"declare {name} under model.params" for name in BUILT_IN_SHAPE
                   if name in search]
    elif model.arch != "mlp" and ("width" in search or "depth" in search):
        errors.append(f"search: width and depth shape the mlp; model.arch is {model.arch} "
                      "(use model.channels, or set model.arch: mlp)")


def _fit_warmup_to_budget(search: dict, max_epochs: int, errors: list[str]) -> None:
    """A warm-up must leave cosine at least one epoch. A range that reaches past a short
    budget (the default 0.5 to 5 epochs with max_epochs 4, say) is cut to the part that can
    work, at most half the budget; a value that cannot work is an error."""
    warmup = search.get("warmup_epochs")
    if isinstance(warmup, Range) and warmup.low < max_epochs <= warmup.high and \
            warmup.step is None:
        high = max(max_epochs / 2, (warmup.low + max_epochs) / 2)
        search["warmup_epochs"] = Range(warmup.low, high, warmup.log)
        return
    lowest = warmup.low if isinstance(warmup, Range) else \
        max(warmup.choices) if isinstance(warmup, Choice) else warmup
    if lowest is not None and lowest >= max_epochs:
        errors.append(must_be("search.warmup_epochs:", f"< train.max_epochs ({max_epochs}): a "
                              "warm-up must leave cosine at least one epoch", lowest))


def _model_knobs(model: ModelConfig, search: dict, errors: list[str]) -> dict:
    """The model's own searched knobs (`model.params` distributions), after checking that the
    factory imports and takes every knob; `model.params` keeps the fixed ones."""
    fixed, searched = parse_model_params(model.params, "model.params", errors)
    for name in list(fixed) + list(searched):
        if name in search or (name in PARAMS and name not in BUILT_IN_SHAPE):
            errors.append(f"model.params.{name}: is trickopt's own knob (search.{name}); the "
                          "model takes it from `tricks`, the study searches it")
        elif model.factory is None and name in BUILT_IN_SHAPE:
            errors.append(f"model.params.{name}: the built-in {model.arch} takes {name} as "
                          f"model.{name} (searched as search.{name})")
    if errors:
        return {}
    model.params = fixed
    try:
        factory = model_factory(model)
        # Searched knobs take their first value here: only their names are checked.
        sample = {name: spec.choices[0] if isinstance(spec, Choice) else spec.low
                  for name, spec in searched.items()}
        what = f"model.factory {model.factory}" if model.factory else f"the built-in {model.arch}"
        check_keywords(factory, 3, {**model_params(model), **sample}, "model", what)
    except FactoryError as exc:
        errors.append(str(exc))
    return searched
