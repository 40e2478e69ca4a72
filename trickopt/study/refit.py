"""After the search: the best trial's own model on test, then the "merge the splits" refit."""

from __future__ import annotations

from typing import Any

import optuna

from trickopt.models import seeded_model
from trickopt.study import space
from trickopt.study.objective import PARAMS_ATTR, flatten_config
from trickopt.tracking.events import TRIAL_TAG
from trickopt.train import evaluate, fit, refit, resolve_device, score_name


def best_trial_config(study: optuna.Study, config,
                      trial: optuna.trial.FrozenTrial | None = None) -> tuple[dict[str, Any], Any]:
    """The best trial's (or `trial`'s) parameters and run config: every knob as that trial ran
    it. Read from the trial itself, not rebuilt from today's search space, which may have
    changed since (a knob fixed then and searched now)."""
    best = trial if trial is not None else study.best_trial
    params = best.user_attrs.get(PARAMS_ATTR)
    if params is None:  # a trial from before PARAMS_ATTR was recorded
        params = space.suggest(optuna.trial.FixedTrial(best.params), config.search, config.run)
    return params, space.apply(config.run, params)


def score_best_and_refit(config, study: optuna.Study, data, tracker,
                         kept: dict[int, dict], chosen: int | None = None
                         ) -> tuple[dict, dict | None]:
    """Score the best trial's model on test, then refit per `config.refit`. Returns
    ({test_loss, test_<score>} of the best trial's model, the refit's outcome or None), where
    the score is accuracy, or rmse for regression. `chosen`: the trial to refit instead of the
    study's best (the report's choice by the mean over seeds)."""
    score = f"test_{score_name(data.task)}"
    best = study.best_trial if chosen is None else study.trials[chosen]
    params, run_config = best_trial_config(study, config, best)
    model = seeded_model(run_config.model, data.input_shape, data.n_classes,
                         seed=run_config.train.seed)
    if best.number in kept:  # trained in this process: its weights were kept
        model.load_state_dict(kept[best.number])
        model.to(resolve_device(run_config.train.device))
    else:
        # Trained by another worker, or by an earlier run of a resumed study. Trials are
        # deterministic for a seed on the CPU, so replaying it rebuilds its model exactly.
        fit(model, data, run_config.train)
    test_loss, test_score = evaluate(model, data.x_test, data.y_test, data.task)
    best_test = {"test_loss": test_loss, score: test_score}
    if config.refit == "none":
        return best_test, None
    epochs = max(1, int(best.user_attrs.get("best_epoch") or run_config.train.max_epochs))
    model = seeded_model(run_config.model, data.input_shape, data.n_classes,
                         seed=run_config.train.seed)
    outcome = refit(model, data, run_config.train, epochs=epochs,
                    include_test=config.refit == "train_val_test")
    result = {"mode": config.refit, "epochs": epochs, "trial": best.number,
              "test_loss": outcome.test_loss, "score": score, score: outcome.test_score}
    if tracker is not None:
        _log_refit(tracker, config, best.number, params, run_config, outcome, result, best_test)
    return best_test, result


def _log_refit(tracker, config, trial_number, params, run_config, outcome, result,
               best_test) -> None:
    epochs = result["epochs"]
    run = tracker.start_run("refit", "refit", {"trickopt.refit": config.refit,
                                               TRIAL_TAG: trial_number},
                            {**params, **flatten_config(run_config), "refit.epochs": epochs,
                             "refit.mode": config.refit})
    for row in outcome.history.epochs:
        run.log_epoch(row["epoch"], {k: v for k, v in row.items() if k != "epoch"})
    final = {"refit_epochs": epochs, **{f"best_trial_{k}": v for k, v in best_test.items()}}
    if outcome.test_loss is not None:
        final.update({"test_loss": outcome.test_loss, result["score"]: outcome.test_score})
    note = ("trained on train+val+test: a production model with no held-out score"
            if config.refit == "train_val_test" else "trained on train+val, scored on test")
    run.end("COMPLETE", metrics=final, tags={"trickopt.note": note})
