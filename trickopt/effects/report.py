"""The trick-effect report of a finished study: part A from its trials, part B from seeded
trainings around its best configuration, run as jobs of a companion Optuna study (`jobs.py`).

The phases, each a batch of jobs that any number of workers share:
1. top-k: the study's k best trials re-run on seeds 1..n, trained to the full budget with
   every epoch's val and test metrics kept. The configuration with the best *mean* of the
   study's metric is the one the report (and a refit) goes on with: one lucky seed does not
   choose (the Deep Learning Tuning Playbook).
2. ablation: the chosen configuration with each trick that is on in it switched off, and a
   "no tricks" baseline; "no stopper" needs no training, it is replayed on the curves.
   With `retune_lr` every arm also tries lr x 1/2 and x 2 and keeps the factor with the best
   mean of the study's metric (a baseline deserves its own tuning).
3. racing: arms whose verdict is still open get `step` more seeds (and the best with them, so
   they stay paired), up to `max_seeds`.
4. path (optional): Fawcett & Hoos' ablation path, from the baseline to the best, switching on
   at each step the trick that gains most (by the study's metric, mean over seeds).
Every choice above is made on the validation metric; the test split only scores.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TextIO

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from trickopt.effects import stats
from trickopt.effects.jobs import (
    Job,
    Outcome,
    Queue,
    Workers,
    higher_is_better,
    tricks_on,
)
from trickopt.effects.replay import Rule, format_replay, replay, replay_table
from trickopt.effects.trials import TrialsView, trials_view
from trickopt.study import space
from trickopt.study.objective import PARAMS_ATTR
from trickopt.train import score_name

BEST, BASELINE, NO_STOPPER = "best", "no tricks", "no stopper"
LR_FACTORS = (0.5, 1.0, 2.0)
NO_STOP = Rule("none", "none", {}, 1)
RULE = ("verdict rule, fixed in advance: helps = 95% CI of the mean difference above 0 and "
        "the best wins on >= 75% of seeds; hurts = the mirror; negligible = CI inside +/- "
        "delta (half the SD of the best arm over seeds); otherwise inconclusive, with the "
        "seeds it would take. p: Wilcoxon signed-rank, Holm-corrected across arms.")


@dataclass(frozen=True)
class Settings:
    seeds: int = 6
    max_seeds: int = 15  # racing's cap
    step: int = 3  # seeds added per racing round
    racing: bool = True
    top_k: int = 3
    retune_lr: bool = False
    path: bool = False
    workers: int = 1


@dataclass
class ArmResult:
    arm: str
    off: list[str]
    seeds: list[int]
    scores: list[float]  # test score per seed, signed so that higher is better
    lr_factor: float = 1.0
    effect: stats.Effect | None = None  # best minus this arm, on the seeds both have
    p_holm: float | None = None
    verdict: str = ""
    epochs: float = 0.0  # mean epochs trained
    seconds: float = 0.0  # median wall time per training
    time_ratio: float = 1.0  # its wall time over the best's, on the seeds both have


@dataclass
class TopRow:
    trial: int
    study_value: float  # the one-seed value the study saw
    val_mean: float
    val_sd: float
    test_mean: float  # the task's test score, as shown (rmse not negated)
    test_sd: float
    lr_factor: float = 1.0


@dataclass
class PathStep:
    switched_on: str
    val_mean: float
    test_mean: float


@dataclass
class Report:
    study: str
    metric: str
    direction: str
    score: str  # test_accuracy or test_rmse
    seeds: list[int]  # the initial seeds
    settings: Settings
    study_best_value: float
    chosen_trial: int
    best_params: dict
    delta: float
    trials: TrialsView
    top: list[TopRow] = field(default_factory=list)
    arms: list[ArmResult] = field(default_factory=list)
    replay: list = field(default_factory=list)  # trickopt.effects.replay rows
    path: list[PathStep] = field(default_factory=list)
    trainings: int = 0  # jobs done for this report, by every worker, resumed ones included
    seconds: float = 0.0  # wall time of this run of the report


# -- costs -----------------------------------------------------------------------------------
def epoch_seconds(study: optuna.Study) -> float:
    """The median seconds per epoch of the study's complete trials (nan if unknown)."""
    rates = [(t.datetime_complete - t.datetime_start).total_seconds() / t.user_attrs[
        "epochs_trained"] for t in study.get_trials(deepcopy=False,
                                                    states=(TrialState.COMPLETE,))
             if t.datetime_complete and t.datetime_start and t.user_attrs.get("epochs_trained")]
    return statistics.median(rates) if rates else math.nan


def planned(settings: Settings, n_tricks: int, n_top: int) -> int:
    """Trainings of phases 1 and 2 (racing and the path add to it, when they run)."""
    factors = len(LR_FACTORS) if settings.retune_lr else 1
    arms = n_tricks - (1 if n_tricks else 0) + (1 if n_tricks > 1 else 0)  # stopper: replayed
    return settings.seeds * factors * (n_top + arms)


# -- running ---------------------------------------------------------------------------------
class Runner:
    """Runs batches of jobs on the queue, here or in spawned workers, with a progress bar."""

    def __init__(self, queue: Queue, settings: Settings, out: TextIO, progress: bool):
        self.queue, self.settings, self.out, self.progress = queue, settings, out, progress
        self.trainings = 0

    def run(self, jobs: list[Job], what: str) -> dict[str, Outcome]:
        queue = self.queue
        queue.recover()
        queue.enqueue(jobs)
        done = queue.outcomes(jobs)
        bar = tqdm(total=len(jobs), initial=len(done), desc=what, file=self.out, leave=False,
                   disable=not self.progress, dynamic_ncols=True)

        def tick(*_):
            bar.update(len(queue.outcomes(jobs)) - bar.n)

        try:
            queue.work(on_done=tick)
            while queue.pending(jobs):  # jobs that other workers are running
                time.sleep(0.5)
                queue.recover()
                queue.work(on_done=tick)
                tick()
        finally:
            tick()
            bar.close()
        result = queue.outcomes(jobs)
        self.trainings += len(result)
        missing = len(jobs) - len(result)
        if missing:
            print(f"warning: {missing} of {len(jobs)} {what} trainings failed (their errors "
                  "are in the companion study's trials); the statistics use the others",
                  file=self.out, flush=True)
        return result


def _jobs(arm: str, base: int, params: dict, seeds, *, off=(), factors=(1.0,), curve=False,
          phase="ablation") -> list[Job]:
    return [Job(arm, seed, params, base, tuple(off), factor, curve, phase)
            for factor in factors for seed in seeds]


def _by_factor(jobs: list[Job], done: dict[str, Outcome]) -> dict[float, list[Outcome]]:
    rows: dict[float, list[Outcome]] = {}
    for job in jobs:
        if job.key in done:
            rows.setdefault(job.lr_factor, []).append(done[job.key])
    return rows


def _val_mean(outcomes: list[Outcome], maximize: bool) -> float:
    values = [o.val_metric for o in outcomes if math.isfinite(o.val_metric)]
    if not values:
        return -math.inf if maximize else math.inf
    return statistics.mean(values)


def _pick_factor(rows: dict[float, list[Outcome]], maximize: bool) -> float:
    """The lr factor with the best mean of the study's metric (validation, never test)."""
    pick = max if maximize else min
    return pick(rows, key=lambda f: _val_mean(rows[f], maximize))


def top_trials(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The k best complete trials with distinct knobs, best first."""
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                      key=lambda t: t.value, reverse=maximize)
    chosen, seen = [], set()
    for trial in complete:
        params = trial.user_attrs.get(PARAMS_ATTR) or trial.params
        marker = repr(sorted(params.items()))
        if marker not in seen:
            seen.add(marker)
            chosen.append(trial)
        if len(chosen) == k:
            break
    return chosen


def run_report(config, study: optuna.Study, queue: Queue, settings: Settings = Settings(), *,
               out: TextIO | None = None, progress: bool = True) -> Report:
    """Run the phases on `queue` (with `settings.workers` processes) and return the Report."""
    out = out if out is not None else sys.stdout  # looked up now: it may have been replaced
    with Workers(queue, settings.workers):
        report = _run_report(config, study, queue, settings, out, progress)
    queue.reconcile()  # every worker is done: what MLflow lacks of a killed run is rebuilt
    return report


def _run_report(config, study: optuna.Study, queue: Queue, settings: Settings, out: TextIO,
                progress: bool) -> Report:
    started = time.perf_counter()
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    seeds = list(range(1, settings.seeds + 1))
    factors = LR_FACTORS if settings.retune_lr else (1.0,)
    top = top_trials(study, settings.top_k)
    params_of = {t.number: t.user_attrs.get(PARAMS_ATTR) or space.suggest(
        optuna.trial.FixedTrial(t.params), config.search, config.run) for t in top}
    n_tricks = len(tricks_on(space.apply(config.run, params_of[top[0].number])))
    n = planned(settings, n_tricks, len(top))
    rate = epoch_seconds(study)
    print(f"report on study {study.study_name!r}: about {n} trainings of up to "
          f"{config.train.max_epochs} epochs ({len(top)} top trials"
          f"{' x 3 learning rates' if settings.retune_lr else ''} and the arms, "
          f"{settings.seeds} seeds each; racing may add up to "
          f"{settings.max_seeds - settings.seeds} seeds to open arms), about "
          f"{n * config.train.max_epochs * rate / 60 / max(1, settings.workers):.1f} min at "
          f"most from the study's {rate:.2f} s per epoch", file=out, flush=True)
    runner = Runner(queue, settings, out, progress)

    # 1. top-k on the same seeds: choose by the mean of the study's metric
    top_jobs = {t.number: _jobs(f"top-{i + 1}", t.number, params_of[t.number], seeds,
                                factors=factors, curve=True, phase="top-k")
                for i, t in enumerate(top)}
    done = runner.run([j for jobs in top_jobs.values() for j in jobs], "top-k")
    rows, chosen_factor = [], {}
    for trial in top:
        by_factor = _by_factor(top_jobs[trial.number], done)
        if not by_factor:
            continue
        factor = _pick_factor(by_factor, maximize)
        chosen_factor[trial.number] = factor
        outcomes = by_factor[factor]
        vals = [o.val_metric for o in outcomes]
        tests = [o.test_score for o in outcomes]
        rows.append(TopRow(trial.number, trial.value, statistics.mean(vals), _sd(vals),
                           statistics.mean(tests), _sd(tests), factor))
    if not rows:
        raise RuntimeError("every training of the top trials failed; see the companion "
                           "study's trials for the errors")
    pick = max if maximize else min
    chosen = pick(rows, key=lambda r: r.val_mean).trial
    params = params_of[chosen]
    best_run = space.apply(config.run, params)
    best_factor = chosen_factor[chosen]

    # 2. the arms around the chosen configuration
    on = tricks_on(best_run)
    arm_off = {f"no {trick}": (trick,) for trick in on if trick != "stopper"}
    if len(on) > 1:
        arm_off[BASELINE] = tuple(on)
    arm_jobs = {arm: _jobs(arm, chosen, params, seeds, off=off, factors=factors)
                for arm, off in arm_off.items()}
    done = runner.run([j for jobs in arm_jobs.values() for j in jobs], "ablation")
    arm_factor = {arm: _pick_factor(_by_factor(jobs, done), maximize) if _by_factor(jobs, done)
                  else 1.0 for arm, jobs in arm_jobs.items()}

    def outcomes_of(arm: str, seed_list) -> dict[int, Outcome]:
        if arm in (BEST, NO_STOPPER):
            jobs = _jobs(f"top-{[t.number for t in top].index(chosen) + 1}", chosen, params,
                         seed_list, factors=(best_factor,), curve=True, phase="top-k")
        else:
            jobs = _jobs(arm, chosen, params, seed_list, off=arm_off[arm],
                         factors=(arm_factor[arm],))
        result = {}
        for job in jobs:
            outcome = queue.outcomes([job]).get(job.key)
            if outcome is None:
                continue
            if arm == NO_STOPPER:  # the best's own run, replayed without its stopper
                outcome = _replayed(outcome, NO_STOP, NO_STOPPER, config.study.metric)
            result[job.seed] = outcome
        return result

    arm_names = [BEST] + ([NO_STOPPER] if "stopper" in on else []) + list(arm_off)
    arm_seeds = {arm: list(seeds) for arm in arm_names}

    # 3. racing: more seeds for the arms still open
    report = None
    while True:
        report = _summarize(config, study, queue, settings, seeds, top, rows, chosen, params,
                            arm_names, arm_seeds, arm_off, arm_factor, best_factor, outcomes_of)
        if not settings.racing:
            break
        open_arms = [a.arm for a in report.arms[1:] if a.verdict.startswith("inconclusive")]
        have = max(len(s) for s in arm_seeds.values())
        if not open_arms or have >= settings.max_seeds:
            break
        more = list(range(have + 1, min(settings.max_seeds, have + settings.step) + 1))
        print(f"racing: {', '.join(open_arms)} still open; seeds {more[0]}..{more[-1]} for "
              "them and the best", file=out, flush=True)
        jobs = _jobs(f"top-{[t.number for t in top].index(chosen) + 1}", chosen, params, more,
                      factors=(best_factor,), curve=True, phase="racing")
        for arm in open_arms:
            if arm != NO_STOPPER:
                jobs += _jobs(arm, chosen, params, more, off=arm_off[arm],
                              factors=(arm_factor[arm],), phase="racing")
        runner.run(jobs, "racing")
        for arm in [BEST, *open_arms]:
            arm_seeds[arm] += more

    # 4. the ablation path, from the baseline to the best
    if settings.path and len(on) > 1:
        report.path = _ablation_path(runner, chosen, params, on, seeds, best_factor, maximize)

    curves = {seed: o.curve for seed, o in outcomes_of(BEST, arm_seeds[BEST]).items()
              if o.curve}
    report.replay = replay_table(curves)
    report.trainings = runner.trainings
    report.seconds = time.perf_counter() - started
    return report


def _replayed(outcome: Outcome, rule: Rule, arm: str, metric: str) -> Outcome:
    """A curve job's outcome had it been run with `rule` as its stopper."""
    mine = replay(outcome.curve, rule)
    per_epoch = outcome.seconds / max(1, outcome.epochs)
    return Outcome(outcome.key, arm, outcome.seed, mine.test_loss, mine.test_score,
                   outcome.curve[mine.best_epoch - 1][metric], mine.best_epoch,
                   mine.epochs_used, per_epoch * mine.epochs_used, outcome.task, outcome.curve)


def _ablation_path(runner: Runner, chosen: int, params: dict, on: list[str], seeds,
                   factor: float, maximize: bool) -> list[PathStep]:
    """Greedy: from all tricks off, switch on the one whose addition gives the best mean of the
    study's metric, until all are on (Fawcett & Hoos 2016, the greedy forward path)."""
    off = list(on)
    steps = []
    while off:
        candidates = {trick: _jobs(f"path +{trick}", chosen, params, seeds,
                                   off=tuple(t for t in off if t != trick), factors=(factor,),
                                   phase="path") for trick in off}
        done = runner.run([j for jobs in candidates.values() for j in jobs],
                          f"path step {len(steps) + 1}")
        means = {trick: [done[j.key] for j in jobs if j.key in done]
                 for trick, jobs in candidates.items()}
        means = {t: o for t, o in means.items() if o}
        if not means:
            break
        pick = max if maximize else min
        trick = pick(means, key=lambda t: _val_mean(means[t], maximize))
        outcomes = means[trick]
        steps.append(PathStep(trick, _val_mean(outcomes, maximize),
                              statistics.mean(o.test_score for o in outcomes)))
        off.remove(trick)
    return steps


def _sd(values) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _summarize(config, study, queue, settings, seeds, top, rows, chosen, params, arm_names,
               arm_seeds, arm_off, arm_factor, best_factor, outcomes_of) -> Report:
    best = outcomes_of(BEST, arm_seeds[BEST])
    task = next(iter(best.values())).task
    best_scores = {seed: higher_is_better(o) for seed, o in best.items()}
    delta = 0.5 * _sd(list(best_scores.values()))
    report = Report(study.study_name, config.study.metric, study.direction.name.lower(),
                    f"test_{score_name(task)}", list(seeds), settings, study.best_value,
                    chosen, params, delta, trials_view(study), top=rows)
    results = []
    for arm in arm_names:
        got = best if arm == BEST else outcomes_of(arm, arm_seeds[arm])
        shared = sorted(got)
        result = ArmResult(arm, [] if arm in (BEST, NO_STOPPER) else list(arm_off[arm]),
                           shared, [higher_is_better(got[s]) for s in shared],
                           best_factor if arm in (BEST, NO_STOPPER) else arm_factor[arm],
                           epochs=statistics.mean(got[s].epochs for s in shared) if shared
                           else 0.0,
                           seconds=statistics.median(got[s].seconds for s in shared)
                           if shared else 0.0)
        if arm == NO_STOPPER:
            result.off = ["stopper"]
        if arm != BEST:
            paired = [s for s in shared if s in best_scores]
            if paired:
                # medians: a process's first training also pays torch's one-time set-up
                result.time_ratio = (statistics.median(got[s].seconds for s in paired) /
                                     max(1e-9, statistics.median(best[s].seconds
                                                                 for s in paired)))
            if len(paired) >= 2:
                result.effect = stats.effect([best_scores[s] for s in paired],
                                             [higher_is_better(got[s]) for s in paired])
                result.verdict = stats.verdict(result.effect, delta)
            else:
                result.verdict = "not enough paired seeds"
        results.append(result)
    tested = [r for r in results[1:] if r.effect is not None]
    for r, p in zip(tested, stats.holm([r.effect.p_value for r in tested])):
        r.p_holm = p
    report.arms = results
    return report


# -- output ----------------------------------------------------------------------------------
def format_table(report: Report) -> str:
    sign = -1 if report.score == "test_rmse" else 1  # shown as the metric, not negated
    best = report.arms[0]
    top_note = ""
    if len(report.top) > 1:
        top_note = (f" (chosen from the top {len(report.top)} trials by the mean "
                    f"{report.metric} over seeds)")
    lines = [f"== trick effects: study {report.study!r}, seeds {report.seeds[0]}.."
             f"{max(max(a.seeds, default=0) for a in report.arms)} (paired) ==",
             f"the study's best trial: {report.metric} {report.study_best_value:.5g} (one seed)",
             f"configuration used: trial {report.chosen_trial}{top_note}; {report.score} "
             f"{sign * statistics.mean(best.scores):.4f} +/- {_sd(best.scores):.4f} (SD over "
             f"{len(best.scores)} seeds)",
             f"cost: {report.trainings} trainings, {report.seconds / 60:.1f} min in this run", ""]
    if len(report.top) > 1:
        lines += ["top trials re-run on the same seeds (choose by the mean, not one seed):",
                  f"  {'trial':>5} {'study value':>12} {report.metric + ' mean +/- SD':>24} "
                  f"{report.score + ' mean +/- SD':>26}" + ("  lr x" if report.settings.retune_lr
                                                              else "")]
        for row in report.top:
            mark = " <- used" if row.trial == report.chosen_trial else ""
            lr = f"  {row.lr_factor:g}" if report.settings.retune_lr else ""
            lines.append(f"  {row.trial:>5} {row.study_value:>12.5g} "
                         f"{row.val_mean:>15.5g} +/- {row.val_sd:<6.3g}"
                         f"{row.test_mean:>17.4f} +/- {row.test_sd:<6.4f}{lr}{mark}")
        lines.append("")
    lines += ["B. seeded ablation: the chosen configuration against each trick switched off",
              f"{'arm':<16} {'seeds':>5} {report.score:>14} {'best - arm [95% CI]':>30} "
              f"{'win':>5} {'p (Holm)':>9} {'epochs':>7} {'time':>6}  verdict"]
    for arm in report.arms:
        mean = sign * statistics.mean(arm.scores) if arm.scores else math.nan
        time_ratio = arm.time_ratio
        head = f"{arm.arm:<16} {len(arm.seeds):>5} {mean:>14.4f}"
        if arm.effect is None:
            note = "(reference)" if arm is best else arm.verdict
            lines.append(f"{head} {'':>30} {'':>5} {'':>9} {arm.epochs:>7.1f} "
                         f"{time_ratio:>5.2f}x  {note}")
            continue
        e = arm.effect
        ci = f"{e.mean:+.4f} [{e.low:+.4f}, {e.high:+.4f}]"
        lines.append(f"{head} {ci:>30} {e.win_rate:>5.2f} {arm.p_holm:>9.3f} "
                     f"{arm.epochs:>7.1f} {time_ratio:>5.2f}x  {arm.verdict}")
    lines += [f"(differences in {report.score}, signed so that > 0 means the trick helps; "
              f"delta = {report.delta:.4f}; time: wall time per training relative to the best;"
              f" '{NO_STOPPER}' is the best's own runs replayed without their stopper)", RULE]
    if report.settings.retune_lr:
        lines.append("lr retuned per arm: " + ", ".join(f"{a.arm} x{a.lr_factor:g}"
                                                       for a in report.arms))
    if report.path:
        lines += ["", "ablation path (Fawcett & Hoos), from no tricks, switching on the trick "
                  f"that gains most in mean {report.metric} at each step:"]
        for i, step in enumerate(report.path, 1):
            lines.append(f"  {i}. + {step.switched_on:<12} {report.metric} {step.val_mean:.5g}"
                         f"  {report.score} {step.test_mean:.4f}")
    if report.replay:
        lines += ["", "Early stopping replayed on the best configuration's full curves:",
                  format_replay(report.replay)]
    lines += [""] + _trials_lines(report.trials)
    return "\n".join(lines)


def _trials_lines(view: TrialsView) -> list[str]:
    lines = [f"A. where the good trials are (not effects): {view.n_complete} complete and "
             f"{view.n_pruned} pruned trials (pruned ones at their best reported value)",
             f"importance: PED-ANOVA, target_quantile {view.target_quantile:.2f} (at least 5 "
             "trials in the top set, at most half of them); fANOVA for comparison; top-3 "
             "share over bootstrap resamples of the trials"]
    for knob, value in view.ped_anova.items():
        lines.append(f"  {knob:<20} PED-ANOVA {value:.2f}  fANOVA "
                     f"{view.fanova.get(knob, float('nan')):.2f}  top-3 in "
                     f"{100 * view.top3_share.get(knob, 0):.0f}% of resamples")
    lines.append(f"  {'knob = value':<34} {'trials':>6} {'complete':>8} {'pruned':>6} "
                 f"{'best':>9} {'median':>9} {'lift':>5}")
    for row in view.rows:
        label = f"{row.knob} = {row.value}"
        if not row.tested:
            label += " (not tested)"
        lift = f"{row.lift:.2f}" if row.lift is not None else ""
        best = f"{row.best:>9.4g}" if row.best is not None else f"{'':>9}"
        median = f"{row.median:>9.4g}" if row.median is not None else f"{'':>9}"
        lines.append(f"  {label:<34} {row.trials:>6} {row.complete:>8} {row.pruned:>6} "
                     f"{best} {median} {lift:>5}")
    return lines


def as_json(report: Report) -> str:
    import json

    return json.dumps(asdict(report), indent=2, default=str)


def as_markdown(report: Report, plots: dict[str, str] | None = None) -> str:
    """The report as markdown; `plots` maps a title to a PNG path relative to the file."""
    text = f"# Trick effects: {report.study}\n\n```\n{format_table(report)}\n```\n"
    for title, path in (plots or {}).items():
        text += f"\n## {title}\n\n![{title}]({path})\n"
    return text
