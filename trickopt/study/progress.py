"""A progress bar for a running study: trials done, best so far, pruned and failed so far."""

from __future__ import annotations

import sys

import optuna
from tqdm import tqdm  # Optuna's own dependency, and what its progress bar uses


class Progress:
    """An Optuna callback (called after every trial) that drives a tqdm bar on stderr."""

    def __init__(self, n_trials: int, study: optuna.Study, *, enabled: bool = True):
        self.pruned = self.failed = 0
        self.bar = tqdm(total=n_trials, unit="trial", file=sys.stderr, disable=not enabled,
                        dynamic_ncols=True, desc=study.study_name)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.pruned += trial.state == optuna.trial.TrialState.PRUNED
        self.failed += trial.state == optuna.trial.TrialState.FAIL
        try:
            best = f"{study.best_value:.4g}"
        except ValueError:  # no complete trial yet
            best = "-"
        self.bar.set_postfix(best=best, pruned=self.pruned, failed=self.failed, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
