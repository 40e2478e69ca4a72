"""The trick-effect report of a finished study: part A from its trials, part B from a seeded
ablation around its best configuration; a terminal table, `report.md` and `report.json`.

What is built and what is not yet (issue 12): arms, paired seeds, the statistics and the
verdict rule are here; racing (adding seeds to open arms), `--retune lr`, the ablation path,
the Prechelt replay, the top-k re-run and the companion Optuna study that would share the
trainings between workers are not.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import asdict, dataclass, field
from typing import TextIO

import optuna

from trickopt.effects import stats
from trickopt.effects.ablation import BEST, Outcome, arms, higher_is_better, train_arm
from trickopt.effects.trials import TrialsView, trials_view
from trickopt.study.refit import best_trial_config
from trickopt.train import score_name

RULE = ("verdict rule, fixed in advance: helps = 95% CI of the mean difference above 0 and "
        "the best wins on >= 75% of seeds; hurts = the mirror; negligible = CI inside +/- "
        "delta (half the SD of the best arm over seeds); otherwise inconclusive, with the "
        "seeds it would take. p: Wilcoxon signed-rank, Holm-corrected across arms.")


@dataclass
class ArmResult:
    arm: str
    scores: list[float]  # test score per seed, higher is better (rmse negated)
    effect: stats.Effect | None = None  # best minus this arm; None for the best itself
    p_holm: float | None = None
    verdict: str = ""
    epochs: float = 0.0  # mean epochs trained
    seconds: float = 0.0  # mean wall time per training


@dataclass
class Report:
    study: str
    metric: str
    score: str  # test_accuracy or test_rmse
    seeds: list[int]
    study_best_value: float
    best_params: dict
    delta: float
    trials: TrialsView
    arms: list[ArmResult] = field(default_factory=list)


def estimate(study: optuna.Study, n_trainings: int) -> float:
    """Seconds for `n_trainings`, from the median duration of the study's complete trials."""
    durations = [(t.datetime_complete - t.datetime_start).total_seconds()
                 for t in study.get_trials(deepcopy=False,
                                           states=(optuna.trial.TrialState.COMPLETE,))
                 if t.datetime_complete and t.datetime_start]
    return n_trainings * statistics.median(durations) if durations else float("nan")


def run_report(config, study: optuna.Study, seeds: int, *, out: TextIO | None = None,
               on_training=None) -> Report:
    """Part A, then every arm on seeds 1..`seeds`, then the statistics."""
    out = out if out is not None else sys.stdout  # looked up now: it may have been replaced
    params, best_config = best_trial_config(study, config)
    arm_configs = arms(best_config)
    seed_list = list(range(1, seeds + 1))
    n = len(arm_configs) * seeds
    print(f"report on study {study.study_name!r}: {len(arm_configs)} arms x {seeds} seeds = "
          f"{n} trainings, about {estimate(study, n) / 60:.1f} min (from the study's trial "
          "times)", file=out, flush=True)
    view = trials_view(study)
    outcomes: dict[str, list[Outcome]] = {name: [] for name in arm_configs}
    done = 0
    for seed in seed_list:  # seed-major: an interrupted report has whole pairs
        for name, run_config in arm_configs.items():
            outcome = train_arm(run_config, name, seed)
            outcomes[name].append(outcome)
            done += 1
            if on_training is not None:
                on_training(outcome)
            print(f"  [{done}/{n}] {name}, seed {seed}: test {outcome.test_score:.4f} "
                  f"({outcome.epochs} epochs, {outcome.seconds:.1f} s)", file=out, flush=True)
    task = outcomes[BEST][0].task
    return summarize(config, study, params, seed_list, view, outcomes, task)


def summarize(config, study, params, seeds, view, outcomes: dict[str, list[Outcome]],
              task: str) -> Report:
    scores = {name: [higher_is_better(o, task) for o in rows] for name, rows in
              outcomes.items()}
    best = scores[BEST]
    delta = 0.5 * statistics.stdev(best) if len(best) > 1 else 0.0
    report = Report(study.study_name, config.study.metric, f"test_{score_name(task)}", seeds,
                    study.best_value, params, delta, view)
    others = [name for name in scores if name != BEST]
    effects = {name: stats.effect(best, scores[name]) for name in others}
    adjusted = stats.holm([effects[name].p_value for name in others]) if others else []
    for name in scores:
        rows = outcomes[name]
        result = ArmResult(name, scores[name], epochs=statistics.mean(o.epochs for o in rows),
                           seconds=statistics.mean(o.seconds for o in rows))
        if name != BEST:
            result.effect = effects[name]
            result.p_holm = adjusted[others.index(name)]
            result.verdict = stats.verdict(effects[name], delta)
        report.arms.append(result)
    return report


def format_table(report: Report) -> str:
    sign = -1 if report.score == "test_rmse" else 1  # shown as the metric, not negated
    best = report.arms[0]
    lines = [f"== trick effects: study {report.study!r}, {len(report.seeds)} paired seeds "
             f"({report.seeds[0]}..{report.seeds[-1]}) ==",
             f"the study's best trial: {report.metric} {report.study_best_value:.5g} (one seed)",
             f"its configuration over {len(report.seeds)} seeds: {report.score} "
             f"{sign * statistics.mean(best.scores):.4f} +/- {statistics.stdev(best.scores):.4f}"
             " (SD)", "",
             "B. seeded ablation: the best configuration against each trick switched off",
             f"{'arm':<16} {report.score:>14} {'best - arm [95% CI]':>30} {'win':>5} "
             f"{'p (Holm)':>9} {'epochs':>7}  verdict"]
    for arm in report.arms:
        mean = sign * statistics.mean(arm.scores)
        if arm.effect is None:
            lines.append(f"{arm.arm:<16} {mean:>14.4f} {'':>30} {'':>5} {'':>9} "
                         f"{arm.epochs:>7.1f}  (reference)")
            continue
        e = arm.effect
        ci = f"{e.mean:+.4f} [{e.low:+.4f}, {e.high:+.4f}]"
        lines.append(f"{arm.arm:<16} {mean:>14.4f} {ci:>30} {e.win_rate:>5.2f} "
                     f"{arm.p_holm:>9.3f} {arm.epochs:>7.1f}  {arm.verdict}")
    lines += [f"(differences in {report.score}, signed so that > 0 means the trick helps; "
              f"delta = {report.delta:.4f})", RULE, ""]
    lines += _trials_lines(report.trials)
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
        lines.append(f"  {label:<34} {row.trials:>6} {row.complete:>8} {row.pruned:>6} "
                     f"{row.best:>9.4g} {row.median:>9.4g} {lift:>5}")
    return lines


def as_json(report: Report) -> str:
    return json.dumps(asdict(report), indent=2, default=str)


def as_markdown(report: Report) -> str:
    return f"# Trick effects: {report.study}\n\n```\n{format_table(report)}\n```\n"
