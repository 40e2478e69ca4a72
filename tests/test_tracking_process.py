"""The tracking process: MLflow stays out of the training process, a store that fails does not
stop the study, and the tracking process never outlives the study that started it."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna

from trickopt.study.storage import DEFAULT_JOURNAL, open_storage

TINY = ["--n-trials", "3", "--study-name", "tiny", "--no-progress",
        "--set", "data.name=digits",
        "--set", "model.arch=mlp", "--set", "model.width=16", "--set", "train.max_epochs=3"]


def _study(folder: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny",
                             storage=open_storage(str(folder / DEFAULT_JOURNAL)))


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def test_training_process_never_imports_mlflow(tmp_path):
    script = ("import sys\n"
              "from trickopt.study.cli import main\n"
              f"code = main({TINY!r})\n"
              "print('MLFLOW-IMPORTED' if 'mlflow' in sys.modules else 'MLFLOW-ABSENT')\n"
              "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=_environment())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "MLFLOW-ABSENT" in done.stdout
    # Nothing else is left behind: no hidden store, no report folder, no SQLite log (looked
    # at before this test opens the store, which makes one).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlruns",
                                                          "trickopt.journal"]
    # The store was written in WAL mode and is left in SQLite's default one, which opens
    # anywhere (a read-only copy of a WAL database does not).
    with contextlib.closing(sqlite3.connect(tmp_path / "mlflow.db")) as store:
        assert store.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    # ... and yet every trial was tracked.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["refit", "tiny", "trial-0", "trial-1",
                                                     "trial-2"]


def test_a_store_that_cannot_be_opened_stops_tracking_not_the_study(tmp_path):
    # A file that is not a database passes the up-front check (its folder exists) and fails
    # only when MLflow opens it.
    (tmp_path / "mlflow.db").write_bytes(b"this is not a SQLite database" * 100)
    done = subprocess.run([sys.executable, "-m", "trickopt.study", *TINY], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=_environment())
    assert done.returncode == 1, done.stdout + done.stderr
    assert "warning: MLflow tracking stopped:" in done.stderr
    assert "MLflow tracking stopped:" in done.stdout  # the summary says it too
    assert "mlflow ui" not in done.stdout
    states = [t.state.name for t in _study(tmp_path).trials]
    assert len(states) == 3 and "RUNNING" not in states
    # The user's file is left as it was.
    assert (tmp_path / "mlflow.db").read_bytes() == b"this is not a SQLite database" * 100


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_tracking_process_ends_when_the_study_process_is_killed(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "trickopt.study", *TINY, "--set", "model.width=256",
         "--set", "train.max_epochs=200", "--set", "search.stopper=none",
         "--set", "study.pruner=none"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env=_environment())
    try:
        deadline = time.monotonic() + 120
        children: list[int] = []
        while time.monotonic() < deadline:  # until the first trial has run a few epochs
            children = _children(process.pid)
            try:
                trials = _study(tmp_path).get_trials(deepcopy=False)
            except KeyError:
                trials = []
            if children and any(len(t.intermediate_values) >= 3 for t in trials):
                break
            time.sleep(0.2)
        assert children, "the study started no tracking process"
        process.kill()  # the study process alone, as the OOM killer would
        process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [c for c in children if _alive(c)], "the tracking process outlived the study"
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_refused_data_leaves_nothing_even_in_process(tmp_path, monkeypatch):
    # In-process (as a notebook would call it): tracking starts only after every check has
    # passed, so a refused study creates nothing, not even mlflow.db.
    from trickopt.study.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code = main(["--no-progress", "--set", "data.name=file", "--set", "data.path=none.csv"])
    assert code == 2
    assert list(tmp_path.iterdir()) == []


def test_two_studies_started_at_once_share_one_parent_run_and_leave_no_marker(tmp_path):
    """Two commands on one new study, started together (as on two machines): one parent run,
    every trial a child of it, and no helper study left in the Optuna storage."""
    args = [sys.executable, "-m", "trickopt.study", *TINY, "--set", "refit=none"]
    processes = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=_environment())
                 for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    parents = [r for r in runs if r.data.tags.get("trickopt.parent") == "true"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    trials = [r for r in runs if r.info.run_name.startswith("trial-")]
    assert len(trials) == 6
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
    storage = open_storage(str(tmp_path / DEFAULT_JOURNAL))
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["tiny"]


_DRAW_PLOTS = """
import pathlib, sys, tempfile
import optuna
from trickopt.tracking.plots import draw_plots
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
study.optimize(lambda t: t.suggest_float("x", 0, 1) + 0.1 * t.suggest_float("y", 0, 1),
               n_trials=6)
folder = pathlib.Path(tempfile.mkdtemp())
paths = draw_plots(study.trials, "minimize", {"x": 0.9, "y": 0.1}, folder)
print(sorted(p.name for p in paths))
print("SKLEARN-IMPORTED" if "sklearn" in sys.modules else "SKLEARN-ABSENT")
print(all(p.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n" for p in paths))
"""


def test_plots_are_drawn_without_importing_scikit_learn():
    """The tracking process draws the plots while the study waits at its end. The importance
    plot is drawn from the numbers the study reported, so scikit-learn (1.1 s of imports that
    optuna.importance pulls in) stays out of that process."""
    done = subprocess.run([sys.executable, "-c", _DRAW_PLOTS], capture_output=True, text=True,
                          timeout=120, check=True)
    names, sklearn, pngs = done.stdout.splitlines()[-3:]
    assert names == str(sorted(["optimization_history.png", "intermediate_values.png",
                                "param_importances.png", "slice.png"]))
    assert sklearn == "SKLEARN-ABSENT"
    assert pngs == "True"


def test_a_percent_escaped_sqlite_path_is_the_file_sqlalchemy_reads(tmp_path):
    """`sqlite:///my%20runs.db` names the file `my runs.db`, as SQLAlchemy (and so MLflow)
    reads it; the new store is made under a hidden name and moved there, nothing left over."""
    done = subprocess.run([sys.executable, "-m", "trickopt.study", *TINY, "--tracking-uri",
                           "sqlite:///my%20runs.db"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=_environment())
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlruns", "my runs.db",
                                                          "trickopt.journal"]


_RECONCILE = """
import sys
from trickopt.tracking import events as ev
from trickopt.tracking.writer import Writer

writer = Writer()
writer.handle(ev.Open(sys.argv[1], "exp", "s", "create", False))
tags = {ev.STUDY_TAG: "s", ev.TRIAL_TAG: "0"}
writer.handle(ev.StartRun("trial-0", "trial-0", tags, {"x": "1"}))
writer.handle(ev.EndRun("trial-0", "FINISHED", [("value", 0.5, 0, 0)], {ev.STATE_TAG: "COMPLETE"}))
searches = []
search_runs = writer.client.search_runs
writer.client.search_runs = lambda *a, **k: searches.append(a) or search_runs(*a, **k)
own = ev.TrialRecord(0, "COMPLETE", {"x": "1"}, {}, {"value": 0.5}, {0: 0.5}, False)
writer.handle(ev.Reconcile([own]))
print("SEARCHES", len(searches))
dead = ev.TrialRecord(1, "FAIL", {"x": "2"}, {}, {}, {0: 0.7}, True)
writer.handle(ev.Reconcile([own, dead]))
runs = search_runs([writer.experiment_id], "tags.`optuna.trial_number` != ''")
for run in sorted(runs, key=lambda r: r.info.run_name):
    print(run.info.run_name, run.info.status, run.data.tags.get("stop_reason"),
          run.data.params.get("x"), "rebuilt" if "trickopt.rebuilt" in run.data.tags else "")
"""


def test_reconcile_rebuilds_a_dead_workers_run_and_leaves_those_written_here(tmp_path):
    """At a study's end `Reconcile` lists every finished trial. The runs this tracking process
    wrote and closed itself are left as they are, without a search of the store (0.3 s per
    100 runs at the end of every study); a dead worker's trial gets a run rebuilt from its
    record."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run([sys.executable, "-c", _RECONCILE, uri], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "SEARCHES 0"
    assert lines[1:] == ["trial-0 FINISHED None 1 ", "trial-1 FAILED worker_died 2 rebuilt"]


def test_a_study_made_anew_under_its_old_name_gets_a_parent_run_of_its_own(tmp_path):
    """Deleting the journal to start over makes another Optuna study under the same name:
    its trials (numbered from 0 again) go under a parent run of their own, not among the old
    study's trials. A resumed study keeps its parent run."""
    def run(n_trials: str) -> None:
        args = [*TINY[:1], n_trials, *TINY[2:]]
        done = subprocess.run([sys.executable, "-m", "trickopt.study", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300, env=_environment())
        assert done.returncode == 0, done.stdout + done.stderr

    run("2")
    run("1")  # resumed: trial 2, under the same parent
    uid = _study(tmp_path).user_attrs["trickopt.study_uid"]
    (tmp_path / DEFAULT_JOURNAL).unlink()
    run("2")  # made anew: trials 0 and 1 again
    assert _study(tmp_path).user_attrs["trickopt.study_uid"] != uid
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        parents = [row[0] for row in db.execute(
            "SELECT run_uuid FROM runs JOIN tags USING (run_uuid) WHERE key = "
            "'trickopt.parent' ORDER BY start_time")]
        assert len(parents) == 2
        trials = [sorted(row[0] for row in db.execute(
            "SELECT name FROM runs JOIN tags USING (run_uuid) WHERE key = "
            "'mlflow.parentRunId' AND value = ? AND name LIKE 'trial-%'", (parent,)))
            for parent in parents]
    assert trials == [["trial-0", "trial-1", "trial-2"], ["trial-0", "trial-1"]]


def test_a_study_made_before_uids_keeps_one_parent_run_found_by_its_name(tmp_path):
    """A study an earlier trickopt made (or one made outside trickopt) has no
    `trickopt.study_uid`: each run of it finds the parent run without a uid of its name, as
    it always did, never the parent of a study with a uid that had the name before it."""
    def run() -> None:
        done = subprocess.run([sys.executable, "-m", "trickopt.study", "--n-trials", "1",
                               *TINY[2:]], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300, env=_environment())
        assert done.returncode == 0, done.stdout + done.stderr

    run()  # a study with a uid, then its journal deleted
    (tmp_path / DEFAULT_JOURNAL).unlink()
    storage = open_storage(str(tmp_path / DEFAULT_JOURNAL))
    optuna.create_study(storage=storage, study_name="tiny", direction="minimize")
    run()
    run()
    assert "trickopt.study_uid" not in _study(tmp_path).user_attrs
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        parents = db.execute(
            "SELECT run_uuid, (SELECT count(*) FROM tags u WHERE u.run_uuid = p.run_uuid AND "
            "u.key = 'trickopt.study_uid') FROM tags p WHERE key = 'trickopt.parent'").fetchall()
        assert sorted(has_uid for _, has_uid in parents) == [0, 1]
        (legacy,) = [run_id for run_id, has_uid in parents if not has_uid]
        trials = sorted(row[0] for row in db.execute(
            "SELECT name FROM runs JOIN tags USING (run_uuid) WHERE key = "
            "'mlflow.parentRunId' AND value = ? AND name LIKE 'trial-%'", (legacy,)))
    assert trials == ["trial-0", "trial-1"]
