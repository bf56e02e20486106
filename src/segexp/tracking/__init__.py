"""Experiment tracking: the only package that imports mlflow.

trackers: the per-run trackers the `tracking` config group builds; store: the store's location,
checks and read-back; sweeps: a multirun's parent run and its children.
"""

from segexp.tracking.store import (PROCESS_TAG, end_orphaned_runs, find_runs, log_artifact, metric_history,
                                   resolve_uri, run_tag, timed_metric_history)
from segexp.tracking.trackers import MlflowTracker, NullTracker

__all__ = ["PROCESS_TAG", "MlflowTracker", "NullTracker", "end_orphaned_runs", "find_runs", "log_artifact", "metric_history", "resolve_uri", "run_tag",
           "timed_metric_history"]
