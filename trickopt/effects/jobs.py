"""The report's trainings as trials of a companion Optuna study: Optuna's storage is the queue.

Every training the report needs (an arm, a learning-rate factor, a seed) is a trial enqueued in
the study `<study>.report`, in the same storage as the study, with the job as user attributes
and no parameters to sample. Whoever runs the report, here (`--workers K`) or on other machines
(`python -m trickopt.report ... --join` against the same PostgreSQL), pops WAITING trials the
way Optuna's own `study.ask` does (the storage's atomic WAITING -> RUNNING), trains, and tells
the result. So nothing here is a queue of our own, and what the study has, the report has:

* resume: a finished job is a COMPLETE trial; a rerun of the report enqueues only the missing
  ones (by `key`), so no arm is trained twice;
* crash recovery: a job whose process died is failed and re-queued with the same attributes
  (`trickopt.study.recovery`, Optuna's retry callback), as a dead trial is;
* MLflow: each job is a child run of the study's parent run, tagged phase, arm and seed.

A comparison study's re-runs (`trickopt.effects.compare`) are jobs of `<study>.compare` in the
same way (`Queue.kind`).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import optuna
from optuna.trial import TrialState

from trickopt.data import load_data
from trickopt.effects.replay import Rule, replay, train_curve
from trickopt.models import seeded_model
from trickopt.study import space
from trickopt.study.recovery import WORKER_ATTR, fail_dead_trials, is_dead_here, worker_identity
from trickopt.tracking.events import FailRuns, Reconcile, TrialRecord
from trickopt.train import evaluate, fit, score_name
from trickopt.tricks.regularization import small_weight_fraction, weight_sparsity

JOB_ATTR, RESULT_ATTR = "job", "result"
REPORT_TRIAL_TAG = "trickopt.report_trial"  # the companion trial a child run belongs to
FINISHED_ATTR = "finished"  # set on the companion study when its report is written


def _off_dropout(c):
    c.model.dropout = 0.0


def _off_norm(c):
    c.model.norm = "none"


def _off_regularizer(c):
    c.train.l1 = c.train.l2 = 0.0


def _off_schedule(c):
    c.train.schedule, c.train.schedule_params = "constant", {}


def _off_stopper(c):
    c.train.stopper, c.train.stopper_params = "none", {}


# trick -> (is it on in this run config?, switch it off in place). The order is the report's.
TRICKS: dict[str, tuple[Callable, Callable]] = {
    "dropout": (lambda c: c.model.dropout > 0, _off_dropout),
    "norm": (lambda c: c.model.norm != "none", _off_norm),
    "regularizer": (lambda c: c.train.l1 > 0 or c.train.l2 > 0, _off_regularizer),
    "schedule": (lambda c: c.train.schedule != "constant", _off_schedule),
    "stopper": (lambda c: c.train.stopper != "none", _off_stopper),
}


def tricks_on(run_config) -> list[str]:
    return [name for name, (is_on, _) in TRICKS.items() if is_on(run_config)]


@dataclass(frozen=True)
class Job:
    """One training: the knobs of a study trial (`params`, as `trickopt.study.space.apply`
    takes them), the tricks switched off, a factor on the learning rate, and the seed, which
    sets `train.seed` (initial weights, batch order, dropout masks) and `data.split_seed` alike.
    With `curve`, the run trains with `stopper=none` to the full budget and keeps every epoch's
    val and test metrics: its own stopper, and any other, is then replayed on those curves."""

    arm: str
    seed: int
    params: dict
    base: int  # the study trial whose knobs these are
    off: tuple[str, ...] = ()
    lr_factor: float = 1.0
    curve: bool = False
    phase: str = "ablation"
    # The Optuna study whose trial `base` is, where it is not the study itself (a comparison's
    # tuning study of one scientific value): part of the key.
    source: str = ""
    tags: dict = field(default_factory=dict)  # added to its MLflow run's tags

    @property
    def key(self) -> str:
        """What makes two jobs the same training (the arm's name is only a label)."""
        return (f"{self.source + '|' if self.source else ''}"
                f"trial{self.base}|off={','.join(sorted(self.off))}|lr*{self.lr_factor:g}|"
                f"seed{self.seed}|{'curve' if self.curve else 'live'}")

    def run_config(self, base_run):
        config = copy.deepcopy(space.apply(base_run, self.params))
        for trick in self.off:
            TRICKS[trick][1](config)
        config.train.lr *= self.lr_factor
        config.train.seed = config.data.split_seed = self.seed
        return config

    @classmethod
    def from_attrs(cls, attrs: dict) -> Job:
        return cls(**{**attrs, "off": tuple(attrs["off"])})


@dataclass(frozen=True)
class Outcome:
    """What one job delivered, scored on the test split with the weights of its best epoch."""

    key: str
    arm: str
    seed: int
    test_loss: float
    test_score: float  # accuracy (classification) or rmse (regression)
    val_metric: float  # the study's metric at the best epoch: what arms are chosen by
    best_epoch: int
    epochs: int  # epochs its own stopper let it train
    seconds: float  # wall time of those epochs
    task: str = "classification"
    curve: list[dict] | None = None  # per epoch (curve jobs): train/val/test loss, scores
    # The trained weights (not biases or norm parameters): the fraction exactly zero and the
    # fraction with |w| < 1e-3. None where not measured (curve jobs end on their last epoch).
    zeros: float | None = None
    small_weights: float | None = None


@dataclass
class Queue:
    """The companion study of one study, and how to turn its jobs into trainings."""

    study: optuna.Study
    storage: object
    config: object  # the StudyConfig
    tracker: object | None = None
    data_cache: dict = field(default_factory=dict)
    # What the trainings are for: "report" (the trick-effect report) or "compare" (a
    # comparison study's re-runs). It names the companion study `<study>.<kind>`, and the
    # child runs: keyed `<kind>-<trial>`, tagged phase=<kind> and `trickopt.<kind>_trial`.
    kind: str = "report"

    @property
    def trial_tag(self) -> str:
        return f"trickopt.{self.kind}_trial"  # REPORT_TRIAL_TAG for the report

    # -- the coordinator's side --------------------------------------------------------------
    def enqueue(self, jobs: list[Job]) -> int:
        """Queue the jobs not already done, waiting or running; returns how many were new."""
        have = {t.user_attrs.get("key") for t in self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING,
                                    TrialState.RUNNING))}
        new = 0
        for job in jobs:
            if job.key in have:
                continue
            have.add(job.key)
            attrs = asdict(job)
            attrs["off"] = list(job.off)
            self.study.enqueue_trial({}, user_attrs={JOB_ATTR: attrs, "key": job.key,
                                                     "arm": job.arm, "seed": job.seed,
                                                     "phase": job.phase})
            new += 1
        return new

    def outcomes(self, jobs: list[Job]) -> dict[str, Outcome]:
        """{key: Outcome} of the jobs that are done (a failed job is absent)."""
        wanted = {job.key for job in jobs}
        done = {}
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            key = trial.user_attrs.get("key")
            if key in wanted and RESULT_ATTR in trial.user_attrs:
                done[key] = Outcome(**trial.user_attrs[RESULT_ATTR])
        return done

    def pending(self, jobs: list[Job]) -> int:
        keys = {job.key for job in jobs}
        return sum(1 for t in self.study.get_trials(
            deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
            if t.user_attrs.get("key") in keys)

    def recover(self) -> list[int]:
        """Fail and re-queue the jobs of dead processes on this host, and close their MLflow
        runs as FAILED (the retries get runs of their own)."""
        failed = fail_dead_trials(self.study, self.storage)
        if failed and self.tracker is not None:
            self.tracker.send(FailRuns(self.trial_tag, [str(n) for n in failed]))
        return failed

    def reconcile(self) -> None:
        """Make MLflow agree with the companion study once its jobs are done: a job whose
        process was killed (kill -9) may have finished in the storage while its run's events
        died with it; such a run is rebuilt from the storage, one left RUNNING is closed."""
        if self.tracker is None:
            return
        records = []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                   TrialState.FAIL)):
            job, result = trial.user_attrs.get(JOB_ATTR), trial.user_attrs.get(RESULT_ATTR)
            if job is None:
                continue
            tags = {"phase": self.kind, f"{self.kind}.phase": str(job["phase"]),
                    "arm": str(job["arm"]), "seed": str(job["seed"]),
                    **{k: str(v) for k, v in job.get("tags", {}).items()}}
            metrics = {}
            if result is not None:
                metrics = {"test_loss": result["test_loss"], "best_epoch": result["best_epoch"],
                           "epochs_trained": result["epochs"],
                           f"test_{score_name(result['task'])}": result["test_score"]}
            records.append(TrialRecord(
                trial.number, trial.state.name, {k: str(v) for k, v in job["params"].items()},
                tags, metrics, {}, is_dead_here(trial.user_attrs.get(WORKER_ATTR, ""))))
        self.tracker.send(Reconcile(records, self.trial_tag, self.kind))

    # -- every worker's side -----------------------------------------------------------------
    def work(self, *, on_done: Callable[[Outcome | None, Job], None] | None = None) -> int:
        """Run WAITING jobs until none is left; returns how many this process ran."""
        ran = 0
        while (trial_id := self._pop()) is not None:
            frozen = self.storage.get_trial(trial_id)
            job = Job.from_attrs(frozen.user_attrs[JOB_ATTR])
            trial = optuna.Trial(self.study, trial_id)
            trial.set_user_attr(WORKER_ATTR, worker_identity())
            outcome = self._run(trial, job)
            ran += 1
            if on_done is not None:
                on_done(outcome, job)
        return ran

    def _pop(self) -> int | None:
        """A WAITING trial made RUNNING by this process, as `optuna.Study.ask` pops its queue:
        the storage's state change is atomic, so two workers never take the same job."""
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            try:
                if self.storage.set_trial_state_values(trial._trial_id,
                                                       state=TrialState.RUNNING):
                    return trial._trial_id
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

    def _run(self, trial: optuna.Trial, job: Job) -> Outcome | None:
        run = None
        if self.tracker is not None:
            kind = self.kind
            run = self.tracker.start_run(
                f"{kind}-{trial.number}", f"{kind} {job.arm} seed {job.seed}"
                + (f" lr x{job.lr_factor:g}" if job.lr_factor != 1 else ""),
                {"phase": kind, f"{kind}.phase": job.phase, "arm": job.arm,
                 "seed": job.seed, "lr_factor": job.lr_factor, self.trial_tag: trial.number,
                 **job.tags},
                {"off": ",".join(job.off) or "none", **job.params})
        try:
            outcome = train_job(self.config, job, self._data(job), trial.number, run)
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"[:1000]
            trial.set_user_attr("error", error)
            self.study.tell(trial, state=TrialState.FAIL)
            if run is not None:
                run.end("FAIL", metrics={}, tags={"error": error})
            if isinstance(exc, Exception):
                print(f"warning: {self.kind} job {job.arm}, seed {job.seed} failed: {error}",
                      flush=True)
                return None
            raise
        trial.set_user_attr(RESULT_ATTR, asdict(outcome))
        self.study.tell(trial, outcome.test_score)
        if run is not None:
            for row in outcome.curve or []:
                run.log_epoch(row["epoch"], {k: v for k, v in row.items() if k != "epoch"})
            run.end("COMPLETE", metrics={"test_loss": outcome.test_loss,
                                         f"test_{score_name(outcome.task)}": outcome.test_score,
                                         "best_epoch": outcome.best_epoch,
                                         "epochs_trained": outcome.epochs},
                    tags={"best_epoch": outcome.best_epoch})
        return outcome

    def _data(self, job: Job):
        """The splits of this seed (the split is seeded too), loaded once per process."""
        if job.seed not in self.data_cache:
            data_config = copy.deepcopy(self.config.run.data)
            data_config.split_seed = job.seed
            self.data_cache = {job.seed: load_data(data_config)}  # one seed at a time
        return self.data_cache[job.seed]


def own_rule(run_config) -> Rule:
    """The configuration's own stopper as a replay rule (checked every epoch, as in `fit`)."""
    return Rule(run_config.train.stopper, run_config.train.stopper,
                dict(run_config.train.stopper_params), 1)


def train_job(config, job: Job, data, number: int = 0, run=None) -> Outcome:
    """Train one job on `data` (the splits of its seed) and score it on test."""
    run_config = job.run_config(config.run)
    metric = config.study.metric
    key = job.key
    started = time.perf_counter()
    model = seeded_model(run_config.model, data.input_shape, data.n_classes, seed=job.seed)
    if not job.curve:
        history = fit(model, data, run_config.train)
        test_loss, test_score = evaluate(model, data.x_test, data.y_test, data.task)
        value = history.best.get(metric, math.nan)
        return Outcome(key, job.arm, job.seed, test_loss, test_score, value,
                       history.best_epoch, history.epochs_trained,
                       time.perf_counter() - started, data.task,
                       zeros=weight_sparsity(model), small_weights=small_weight_fraction(model))
    full = copy.deepcopy(run_config.train)
    full.stopper, full.stopper_params = "none", {}
    history, curve = train_curve(model, data, full)
    seconds = time.perf_counter() - started
    for row, epoch in zip(curve, history.epochs):  # the study's metric too, for choosing
        row[metric] = epoch[metric]
    mine = replay(curve, own_rule(run_config))
    return Outcome(key, job.arm, job.seed, mine.test_loss, mine.test_score,
                   curve[mine.best_epoch - 1][metric], mine.best_epoch, mine.epochs_used,
                   seconds * mine.epochs_used / max(1, len(curve)), data.task, curve)


def higher_is_better(outcome: Outcome) -> float:
    """The score the statistics compare, signed so that higher is better."""
    return outcome.test_score if score_name(outcome.task) == "accuracy" else -outcome.test_score


def open_queue(config, storage, tracker=None, *, kind: str = "report") -> Queue:
    """The companion study `<study>.<kind>` (created if new) as a Queue."""
    name = f"{config.study.name}.{kind}"
    try:
        storage.get_study_id_from_name(name)
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        try:
            study = optuna.create_study(study_name=name, storage=storage)
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=name, storage=storage)
    return Queue(study, storage, config, tracker, kind=kind)


POLL_SECONDS = 0.5  # how often an idle worker looks for new jobs


def work_until_finished(queue: Queue, *, parent: int | None = None) -> int:
    """Run jobs as they are queued until the coordinator marks the report finished (or, for a
    spawned worker, until its coordinating process `parent` is gone). Returns the jobs run."""
    ran = 0
    while True:
        ran += queue.work()
        if queue.study.user_attrs.get(FINISHED_ATTR) or (parent and os.getppid() != parent):
            return ran
        time.sleep(POLL_SECONDS)


def worker_main(config, threads: int, parent: int, kind: str = "report") -> None:
    """A spawned worker: join the companion study `<study>.<kind>` and run its jobs as they
    come."""
    import torch

    from trickopt.study.signals import handle_sigterm
    from trickopt.study.storage import open_storage
    from trickopt.study.trials import start_tracking

    if config.train.threads is None:
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    handle_sigterm()
    storage = open_storage(config.study.storage)
    tracker = start_tracking(config, storage, coordinator=False, own_study=kind != "compare")
    try:
        work_until_finished(open_queue(config, storage, tracker, kind=kind), parent=parent)
    except KeyboardInterrupt:
        pass
    finally:
        if tracker is not None:
            tracker.close()


class Workers:
    """`with Workers(queue, k):` k - 1 spawned workers share the queue with this process for
    the whole report (started once: each start imports torch and loads the data again). On
    leaving, the report is marked finished, which ends them."""

    def __init__(self, queue: Queue, workers: int):
        self.queue, self.workers, self.processes = queue, workers, []

    def __enter__(self) -> Workers:
        import multiprocessing

        import torch

        from trickopt.study.workers import threads_per_worker

        threads = threads_per_worker(self.workers)
        if self.queue.config.train.threads is None:
            torch.set_num_threads(threads)  # this process trains too
        self.queue.study.set_user_attr(FINISHED_ATTR, False)
        context = multiprocessing.get_context("spawn")  # fork + torch threads can deadlock
        for index in range(self.workers - 1):
            process = context.Process(target=worker_main, name=f"trickopt-report-{index}",
                                      args=(self.queue.config, threads, os.getpid(),
                                            self.queue.kind))
            process.start()
            self.processes.append(process)
        return self

    def __exit__(self, kind, exc, traceback) -> None:
        try:
            self.queue.study.set_user_attr(FINISHED_ATTR, True)
        finally:
            for process in self.processes:
                if kind is not None and kind is not KeyboardInterrupt:
                    process.terminate()
                process.join(timeout=30)
