"""The study's `report:` step: the trick-effect report between the search and the refit.

`python -m trickopt.study` hands `run` to `trickopt.study.runner.run_study`; the study layer
does not import this one, which is built on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from trickopt.effects.jobs import FINISHED_ATTR, open_queue
from trickopt.effects.output import publish
from trickopt.effects.report import Settings, run_report
from trickopt.study.workers import report_workers

if TYPE_CHECKING:
    import optuna

    from trickopt.study.config import StudyConfig
    from trickopt.study.runner import StudyResult


def run(config: StudyConfig, study: optuna.Study, storage, tracker, progress: bool,
        out: TextIO, result: StudyResult) -> int | None:
    """Run the report on the finished search, publish its files next to the study file, and
    return the trial it chose (by the mean over seeds of its top trials) for the refit."""
    r = config.report
    settings = Settings(seeds=r.seeds, max_seeds=r.max_seeds, racing=r.racing, top_k=r.top_k,
                        retune_lr="lr" in r.retune, path=r.path,
                        workers=r.workers or report_workers())
    queue = open_queue(config, storage, tracker)
    queue.study.set_user_attr(FINISHED_ATTR, False)
    try:
        result.report = run_report(config, study, queue, settings, out=out, progress=progress)
    except KeyboardInterrupt:
        result.interrupted = True
        return None
    folder = (Path(config.source).parent if config.source else Path.cwd()) / \
        f"report-{study.study_name}"
    publish(result.report, folder, tracker, out=out)
    queue.study.set_user_attr(FINISHED_ATTR, True)
    result.report_folder = str(folder)
    return result.report.chosen_trial
