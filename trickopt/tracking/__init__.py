"""MLflow tracking of a study: one parent run per study, one nested child run per trial.

Every MLflow call runs in a process of its own, the tracking process. A thread was not enough:
MLflow's client is mostly SQLAlchemy and Python code that holds the GIL, so a "background"
writer thread ran in series with training (measured: 100 short trials took 9.6 s with the
thread against 6.0 s untracked). The process also takes importing mlflow (about 1 s) and
creating a fresh store's tables (about 1.7 s) off the training process's path.

The flow is one way. The training process sends typed events (`events.py`) and never waits;
it names each run by a key of its own, so no run id has to come back. Only `Close` is answered:

    study process (training)                       tracking process (writer.py: mlflow)
    ------------------------                       ------------------------------------
    StudyTracker(uri, experiment, study, role) --> Open: store, experiment, parent run
      (started after the study file, the data,       ("create": find it by its tags or make
       the storage and the server were checked)       it; "join": wait for the claimer's)
    per trial:  StartRun(key="trial-7", tags) ---> create_run(parentRunId, study and trial tags)
                LogMetrics(key, epochs)       ---> log_batch, at most every 2 s per trial
                EndRun(key, status)           ---> log_batch + set_terminated
    Reconcile(finished trials)                ---> close or rebuild the runs of dead workers
    Plots(trials), LogParent(summary, files)  ---> Optuna's plots, metrics, artifacts
    EndParent(status), Close                  ---> set_terminated; then:
    StudyTracker.close() <------------------------ Report(experiment_id, parent_run_id, error)

A trial's MLflow run is found from Optuna by its tags: `trickopt.study` (the study name) and
`optuna.trial_number`; `trickopt.study_uid` (the study's user attribute of that name) tells
a study from an earlier one of the same name, whose journal was deleted: each has its own
parent run. Run status follows the trial: FINISHED (complete), KILLED (pruned),
FAILED (failed or interrupted). A failing write is reported in one line and the study goes
on; a store that cannot be opened stops tracking, and the Report says why. If the study
process dies, the tracking process still writes what it was sent, then exits.
"""

from trickopt.tracking.client import StudyTracker, TrialRun, default_tracking_uri
from trickopt.tracking.events import PARENT_TAG, STUDY_TAG, TRIAL_TAG

__all__ = ["StudyTracker", "TrialRun", "default_tracking_uri", "PARENT_TAG", "STUDY_TAG",
           "TRIAL_TAG"]
