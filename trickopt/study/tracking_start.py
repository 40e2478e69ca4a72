"""Starting the MLflow tracking process of a study: kept apart from the runner (which imports
torch and optuna) so that the CLI can start it first, and its start-up overlaps theirs."""

from __future__ import annotations


def tracking_uri(config) -> str:
    from trickopt.tracking import default_tracking_uri

    return config.tracking.uri or default_tracking_uri()


def start_tracker(config, tracker=None):
    """A StudyTracker for `config` (`tracker`, started earlier, or a new one), or None when
    tracking is off. Nothing is written until `open`; a new SQLite store's tables are prepared
    aside meanwhile."""
    if not config.tracking.enabled:
        if tracker is not None:
            tracker.abandon()
        return None
    if tracker is None:
        from trickopt.tracking import StudyTracker

        tracker = StudyTracker()
    tracker.prepare(tracking_uri(config))  # a no-op where an earlier hint prepared it
    return tracker
