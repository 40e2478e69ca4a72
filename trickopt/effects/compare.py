"""Comparison studies: the Deep Learning Tuning Playbook's scientific / nuisance split.

A study file's `compare:` section names the *scientific* knob (or two, crossed) and the values
to compare, and the *nuisance* knobs to tune for each; every other knob is fixed. Then:

1. tune: each scientific value (combination) gets an Optuna study of its own,
   `<study>.compare.<label>`, in the study's storage, with the study's sampler, pruner and
   objective, and the same budget, `trials` trials: no value wins by getting a better lr.
   A rerun runs only the trials still missing.
2. re-run: each value's best trial is trained again on seeds 1..n, as jobs of the companion
   study `<study>.compare` (`trickopt.effects.jobs`): paired (seed i fixes the weights, the
   batches and the split for every value), and never trained twice.
3. compare: the value with the best mean of the study's metric on validation is the
   reference; each other value is compared with it on the test score, on the seeds both have,
   with the report's statistics (paired bootstrap CI, win rate, Wilcoxon with Holm) and its
   verdict rule, delta being half the reference's SD over seeds.
   A claim study names a `baseline` value instead: it is the reference, each other value is
   read against it (value minus baseline, "helps": the value beats the baseline), and the
   claim's `expect`ation gets a verdict of its own (`claim_verdict`).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import optuna
import torch
from optuna.trial import TrialState

from trickopt.data import load_data
from trickopt.effects import stats
from trickopt.effects.jobs import Job, Outcome, Queue, Workers, higher_is_better
from trickopt.effects.report import Runner, Settings
from trickopt.study.config import scientific_values
from trickopt.study.objective import PARAMS_ATTR, Objective
from trickopt.study.progress import Progress
from trickopt.study.recovery import fail_dead_trials
from trickopt.study.trials import open_study
from trickopt.study.workers import threads_per_worker
from trickopt.tracking.events import FailRuns
from trickopt.train import score_name
from trickopt.tricks.early_stopping import StopReason

TUNE_TRIAL_TAG = "trickopt.compare_tune_trial"  # `<label>/<number>`: a tuning trial's run
# Failed trials that do not use up a value's budget: the rerun runs them again.
NOT_COUNTED = (StopReason.INTERRUPTED.value, StopReason.WORKER_DIED.value)


def label(value: dict[str, Any]) -> str:
    """A value's name in study names, MLflow tags and tables: `norm=batch,batch_size=32`."""
    return ",".join(f"{knob}={setting}" for knob, setting in value.items())


@dataclass
class Tuning:
    """What the nuisance tuning of one scientific value gave."""

    label: str
    value: dict[str, Any]  # the scientific knob(s) and their values
    study: str  # its Optuna study
    trials: int  # trials that used up the budget: complete, pruned, failed
    complete: int
    pruned: int
    best_trial: int | None  # None: no trial completed
    best_value: float | None  # the best trial's value of the study's metric (one seed)
    params: dict  # every knob of the best trial, as it ran
    nuisance: dict  # the best trial's nuisance knobs
    ran: int = 0  # trials this command ran


@dataclass
class ValueResult:
    label: str
    tuning: Tuning
    seeds: list[int]
    val_metrics: list[float]  # the study's metric at each re-run's best epoch
    test_scores: list[float]  # the task's test score per seed (accuracy, or rmse)
    epochs: list[int] = field(default_factory=list)  # trained, per seed
    test_losses: list[float] = field(default_factory=list)  # per seed
    seconds: list[float] = field(default_factory=list)  # per training
    zeros: list[float] = field(default_factory=list)  # fraction of weights exactly zero
    small_weights: list[float] = field(default_factory=list)  # fraction with |w| < 1e-3
    val_mean: float | None = None  # over the finite values
    test_mean: float | None = None
    test_sd: float | None = None
    effect: stats.Effect | None = None  # reference minus this value; > 0: reference better
    p_holm: float | None = None
    verdict: str = ""


@dataclass
class Comparison:
    study: str
    metric: str
    direction: str
    score: str  # test_accuracy or test_rmse
    scientific: dict[str, list]
    nuisance: list[str]
    trials: int  # tuning trials per value
    seeds: list[int]
    reference: str | None
    delta: float
    values: list[ValueResult] = field(default_factory=list)
    tuning_trials_run: int = 0  # by this command
    reruns_done: int = 0  # by this command or an earlier one
    reruns_run: int = 0  # by this command
    seconds: float = 0.0  # wall time of this command
    baseline: bool = False  # the reference is the file's baseline, not the best mean
    claim: str = ""  # the claim tested, as the file states it
    expect: str = "better"  # what the claim says of the other values against the baseline
    claim_verdict: str = ""  # supported, contradicted, ... (claim_verdict); "" without a claim
    finding: str = ""  # the file's hand-written "what this shows"
    setting: dict = field(default_factory=dict)  # data, model, budget: what the result is for
    measure: str = "test_score"  # what the statistics compare (compare.measure)


# -- 1. tuning -------------------------------------------------------------------------------
def value_config(config, value: dict[str, Any]):
    """The study config of one value's tuning study: the value fixed, its own name."""
    name = f"{config.study.name}.compare.{label(value)}"
    return dataclasses.replace(config, search={**config.search, **value},
                               study=dataclasses.replace(config.study, name=name))


def open_tuning_studies(config) -> list[tuple[dict, optuna.Study, Any]]:
    """(value, its tuning study, the storage) per value: created if new, and a resumed one
    checked against the file as the study is (StudyMismatchError), before anything trains."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return [(value, *open_study(value_config(config, value)))
            for value in scientific_values(config.compare.scientific)]


def counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that used up the value's budget (a failed one that was interrupted, or
    whose process died, does not: it is run again)."""
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [t for t in study.get_trials(deepcopy=False, states=done)
            if t.state != TrialState.FAIL or t.user_attrs.get("stop_reason") not in NOT_COUNTED]


def tune(config, value: dict, study: optuna.Study, storage, data, tracker=None, *,
         progress: bool = True) -> Tuning:
    """Run the value's missing tuning trials (up to `compare.trials`) and return its best."""
    name = label(value)
    failed = fail_dead_trials(study, storage)
    if failed and tracker is not None:
        tracker.send(FailRuns(TUNE_TRIAL_TAG, [f"{name}/{n}" for n in failed]))
    missing = config.compare.trials - len(counted(study))
    if missing > 0:
        seed = config.train.seed

        def child_run(number: int) -> tuple[str, dict]:
            return f"compare-{name}-trial-{number}", {
                "phase": "tune", "scientific": name, "seed": seed,
                TUNE_TRIAL_TAG: f"{name}/{number}"}

        objective = Objective(value_config(config, value), data, tracker, child_run=child_run)
        bar = Progress(missing, study, enabled=progress)
        try:
            study.optimize(objective, n_trials=missing, catch=(Exception,), callbacks=[bar])
        finally:
            bar.close()
    return _tuning(config, value, study, max(0, missing))


def _tuning(config, value: dict, study: optuna.Study, ran: int) -> Tuning:
    trials = counted(study)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    params = (best.user_attrs.get(PARAMS_ATTR) or best.params) if best else {}
    nuisance = {k: params[k] for k in config.compare.nuisance if k in params}
    return Tuning(label(value), dict(value), study.study_name, len(trials), len(complete),
                  sum(t.state == TrialState.PRUNED for t in trials),
                  best.number if best else None, best.value if best else None, params,
                  nuisance, ran)


# -- 2. re-runs ------------------------------------------------------------------------------
def rerun_jobs(tuning: Tuning, seeds: list[int]) -> list[Job]:
    """The value's best trial on each seed: jobs of the companion study `<study>.compare`."""
    if tuning.best_trial is None:
        return []
    return [Job(tuning.label, seed, tuning.params, tuning.best_trial, phase="compare",
                source=tuning.study, tags={"scientific": tuning.label}) for seed in seeds]


def run_comparison(config, studies: list[tuple[dict, optuna.Study, Any]], queue: Queue, *,
                   data=None, tracker=None, out: TextIO | None = None,
                   progress: bool = True, workers: int = 1) -> Comparison:
    """Tune every value (on `data`, the study's splits: loaded if not given), then re-run
    each one's best on the paired seeds in `workers` processes, and compare."""
    out = out if out is not None else sys.stdout  # looked up now: it may have been replaced
    started = time.perf_counter()
    c = config.compare
    seeds = list(range(1, c.seeds + 1))
    print(f"comparison {config.study.name!r}: {len(studies)} values of "
          f"{' x '.join(c.scientific)}, each with {', '.join(c.nuisance)} tuned in {c.trials} "
          f"trials, then its best re-run on seeds 1..{c.seeds}: {len(studies) * c.trials} "
          f"tuning trials and {len(studies) * c.seeds} re-runs of up to "
          f"{config.train.max_epochs} epochs (finished ones are not repeated)",
          file=out, flush=True)
    if config.train.threads is None:  # torch's threads spin: one core stays free for the rest
        torch.set_num_threads(threads_per_worker(1))
    data = data if data is not None else load_data(config.data)
    tunings = [tune(config, value, study, storage, data, tracker, progress=progress)
               for value, study, storage in studies]
    jobs = [job for tuning in tunings for job in rerun_jobs(tuning, seeds)]
    before = len(queue.outcomes(jobs))
    with Workers(queue, workers):  # the re-runs are independent: they fill the machine
        done = Runner(queue, Settings(seeds=c.seeds, workers=workers), out,
                      progress).run(jobs, "re-runs")
    queue.reconcile()  # what MLflow lacks of a killed re-run's run is rebuilt
    outcomes: dict[str, dict[int, Outcome]] = {}
    for job in jobs:
        if job.key in done:
            outcomes.setdefault(job.arm, {})[job.seed] = done[job.key]
    maximize = config.study.resolved_direction == "maximize"
    values, reference, delta = compare_values(tunings, outcomes, maximize=maximize,
                                              baseline=c.baseline or None, measure=c.measure)
    task = next((o.task for by_seed in outcomes.values() for o in by_seed.values()),
                "classification")
    return Comparison(config.study.name, config.study.metric, config.study.resolved_direction,
                      f"test_{score_name(task)}", dict(c.scientific), list(c.nuisance),
                      c.trials, seeds, reference, delta, values,
                      tuning_trials_run=sum(t.ran for t in tunings), reruns_done=len(done),
                      reruns_run=len(done) - before, seconds=time.perf_counter() - started,
                      baseline=bool(c.baseline), claim=c.claim, expect=c.expect,
                      claim_verdict=claim_verdict(values, c.expect, delta) if c.baseline else "",
                      finding=c.finding, setting=setting(config, data), measure=c.measure)


def setting(config, data) -> dict[str, Any]:
    """What a comparison's result holds for: the data, the model and the budget."""
    m, t = config.model, config.train
    sizes = {name: len(getattr(data, f"y_{name}")) for name in ("train", "val", "test")
             if getattr(data, f"y_{name}", None) is not None}
    return {"data": config.data.factory or config.data.name, "split sizes": sizes,
            "model": f"{m.arch}" + (f", depth {m.depth}, width {m.width}"
                                    if m.arch == "mlp" else ""),
            "max epochs": t.max_epochs, "batch size": t.batch_size, "optimizer": t.optimizer,
            "stopper": t.stopper}


# -- 3. the comparison -----------------------------------------------------------------------
def measured(outcome: Outcome, measure: str = "test_score") -> float:
    """The quantity a comparison compares, signed so that higher is better (sparser)."""
    if measure == "test_score":
        return higher_is_better(outcome)
    value = getattr(outcome, measure)
    return math.nan if value is None else value


def compare_values(tunings: list[Tuning], outcomes: dict[str, dict[int, Outcome]], *,
                   maximize: bool, baseline: dict[str, Any] | None = None,
                   measure: str = "test_score"
                   ) -> tuple[list[ValueResult], str | None, float]:
    """(per value, the reference's label, delta). The reference is the value with the best
    mean of the study's metric over its re-runs (validation: the test split only scores);
    every other value is compared with it on the test score, on the seeds both have, as
    reference minus value. With a `baseline`, it is the reference and each value is read as
    value minus baseline: "helps" then says the value beats the baseline."""
    results = [_result(t, outcomes.get(t.label, {})) for t in tunings]
    ran = [r for r in results if r.val_mean is not None]
    if baseline is not None:
        reference = next((r for r in ran if r.label == label(baseline)), None)
        if reference is None:
            for result in results:
                result.verdict = "not compared: the baseline has no finished re-run"
            return results, None, 0.0
    elif not ran:
        return results, None, 0.0
    else:
        pick = max if maximize else min
        reference = pick(ran, key=lambda r: r.val_mean)  # ties: the first in the file's order
    ref = {s: measured(o, measure) for s, o in outcomes[reference.label].items()}
    delta = 0.5 * _sd(list(ref.values()))
    for result in results:
        if result is reference:
            result.verdict = "reference"
            continue
        if result.tuning.best_trial is None:
            result.verdict = "not compared: no tuning trial completed"
            continue
        mine = outcomes.get(result.label, {})
        paired = sorted(ref.keys() & mine.keys())
        if len(paired) < 2:
            result.verdict = "not compared: fewer than 2 paired seeds"
            continue
        theirs = [measured(mine[s], measure) for s in paired]
        ours = [ref[s] for s in paired]
        result.effect = stats.effect(theirs, ours) if baseline is not None else \
            stats.effect(ours, theirs)
        result.verdict = stats.verdict(result.effect, delta, winner="the value"
                                       if baseline is not None else "the reference")
    tested = [r for r in results if r.effect is not None]
    for result, p in zip(tested, stats.holm([r.effect.p_value for r in tested])):
        result.p_holm = p
    return results, reference.label, delta


def _result(tuning: Tuning, by_seed: dict[int, Outcome]) -> ValueResult:
    seeds = sorted(by_seed)
    vals = [by_seed[s].val_metric for s in seeds]
    tests = [by_seed[s].test_score for s in seeds]
    finite = [v for v in vals if math.isfinite(v)]
    outcomes = [by_seed[s] for s in seeds]
    return ValueResult(
        tuning.label, tuning, seeds, vals, tests,
        epochs=[o.epochs for o in outcomes], test_losses=[o.test_loss for o in outcomes],
        seconds=[o.seconds for o in outcomes],
        zeros=[o.zeros for o in outcomes if o.zeros is not None],
        small_weights=[o.small_weights for o in outcomes if o.small_weights is not None],
        val_mean=statistics.mean(finite) if finite else None,
        test_mean=statistics.mean(tests) if tests else None,
        test_sd=_sd(tests) if tests else None)


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def claim_verdict(values: list[ValueResult], expect: str, delta: float) -> str:
    """A claim's verdict from its values' verdicts against the baseline (value minus
    baseline), by a rule fixed in advance:

    * expect better (or worse): "supported" where some value helps (hurts) and none goes the
      other way; "contradicted" where some value goes the other way and none the expected
      one; "mixed" where both occur;
    * expect same: "supported" where every value is negligible, "contradicted" where some
      value helps or hurts; expect different: the mirror;
    * expect not_worse: "supported" where every value helps or is negligible,
      "contradicted" where some value hurts;
    * otherwise "no detectable effect at this scale", with the seeds the most demanding
      inconclusive value would need (the verdict rule's: to tell its mean difference, or
      delta, from zero).
    """
    verdicts = [v.verdict for v in values if v.effect is not None]
    if not verdicts:
        return "not tested: no value was compared with the baseline"
    helps, hurts = "helps" in verdicts, "hurts" in verdicts
    moved = ", ".join(f"{v.label} {v.verdict}" for v in values
                      if v.verdict in ("helps", "hurts"))
    if expect == "not_worse":  # non-inferiority: better or within +/- delta
        if hurts:
            return "contradicted: " + ", ".join(f"{v.label} hurts" for v in values
                                                if v.verdict == "hurts")
        if all(v in ("helps", "negligible") for v in verdicts):
            return "supported: no value does worse than the baseline" + \
                (f" ({moved})" if moved else "")
    elif expect in ("same", "different"):
        negligible = all(v == "negligible" for v in verdicts)
        if helps or hurts:
            return ("contradicted: " if expect == "same" else "supported: ") + moved
        if negligible:
            return ("supported: " if expect == "same" else "contradicted: ") + \
                "every value is within +/- delta of the baseline"
    else:
        wanted, other = ("helps", "hurts") if expect == "better" else ("hurts", "helps")
        got, against = wanted in verdicts, other in verdicts
        if got and against:
            return "mixed: some values " + wanted + ", some " + other
        if got:
            return "supported: " + ", ".join(v.label for v in values if v.verdict == wanted) \
                + f" {wanted} against the baseline"
        if against:
            return "contradicted: " + ", ".join(v.label for v in values
                                                if v.verdict == other) + f" {other}"
    if all(v == "negligible" for v in verdicts):
        return "no detectable effect at this scale: every value is within +/- delta of the " \
            "baseline"
    # Open either because the interval is too wide (more seeds would narrow it) or because
    # it is clear but the seeds disagree too often (more seeds would not change that).
    needed = [stats.seeds_needed(v.effect.sd, max(abs(v.effect.mean), delta))
              for v in values if v.effect is not None
              and v.verdict.startswith("inconclusive, about")]
    split = [f"{v.label}: {v.verdict.removeprefix('inconclusive: ')}" for v in values
             if v.verdict.startswith("inconclusive: CI")]
    split += [f"{v.label}: {v.verdict}" for v in values
              if v.verdict.startswith("inconclusive at")]
    more = "".join(f"; {line}" for line in split)
    if needed:
        more += f"; about {max(needed)} seeds would resolve it"
    return "no detectable effect at this scale" + more
