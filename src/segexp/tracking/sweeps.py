"""Sweeps in the store: one parent run per multirun, its jobs' runs as children (used by segexp.experiments.sweeps)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from segexp.errors import TrackingError
from segexp.tracking.records import RunRecord, SweepRecord, run_record
from segexp.tracking.store import check_store, ensure_experiment, get_run, report_orphans
from segexp.tracking.tags import FAILURE_REASON, PARENT_RUN_ID, PROCESS_TAG


def start_parent_run(uri: str, experiment_name: str, name: str, tags: Mapping[str, str]) -> str:
    """Creates the experiment if needed and a RUNNING parent run in it; returns the run id.

    Uses MlflowClient, not the fluent API, so no run becomes "active" in this process and
    in-process jobs can still start their own runs.
    """
    from mlflow.tracking import MlflowClient

    check_store(uri)
    try:
        # a new sqlite store gets its schema here, once, before any job starts
        experiment_id = ensure_experiment(uri, experiment_name)
        report_orphans(uri)
        return MlflowClient(uri).create_run(experiment_id, run_name=name, tags=dict(tags)).info.run_id
    except Exception as err:  # mlflow raises many types for a broken store; report one line
        raise TrackingError(f"{uri}: cannot create the sweep's parent run ({type(err).__name__}: {err})") from err


def child_runs(uri: str, parent_run_id: str) -> list[RunRecord]:
    """Returns the records of the runs whose parent is parent_run_id (a sweep's jobs), oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], f"tags.{PARENT_RUN_ID} = '{parent_run_id}'",
                                  order_by=["attributes.start_time ASC"], page_token=token)
        runs += [run_record(r) for r in page]
        token = page.token
        if not token:
            return runs


def sweep_record(uri: str, parent_run_id: str) -> SweepRecord:
    """Returns the sweep whose parent run is parent_run_id: the parent's record and its children's."""
    return SweepRecord(get_run(uri, parent_run_id), tuple(child_runs(uri, parent_run_id)))


def record_failed_child(uri: str, parent_run_id: str, name: str, tags: Mapping[str, str], reason: str) -> str:
    """Creates a FAILED child run for a job that failed before its own run started; returns its id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run = client.create_run(experiment_id, run_name=name, tags={
        **tags, PARENT_RUN_ID: parent_run_id, FAILURE_REASON: reason[:5000]})
    client.set_terminated(run.info.run_id, "FAILED")
    return run.info.run_id


def end_parent_run(uri: str, run_id: str, status: str, metrics: Mapping[str, float], tags: Mapping[str, str],
                   texts: Mapping[str, str], figures: Mapping[str, Any]) -> None:
    """Logs the sweep summary (metrics, tags, text files, matplotlib figures) and ends the run with status."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    for path, text in texts.items():
        client.log_text(run_id, text, path)
    for path, figure in figures.items():
        client.log_figure(run_id, figure, path)
    client.set_terminated(run_id, status)


def alias_best_version(uri: str, model_name: str, run_id: str, alias: str = "best") -> str | None:
    """Points `alias` of a registered model at the version that run `run_id` logged; returns the version."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    versions = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    if not versions:
        return None
    version = max(versions, key=lambda v: int(v.version)).version
    client.set_registered_model_alias(model_name, alias, version)
    return version


def reopen_parent_run(uri: str, run_id: str, process: str) -> None:
    """Marks a sweep's parent run RUNNING again, held by `process` (a resumed sweep)."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(uri)
        client.set_tag(run_id, PROCESS_TAG, process)
        client.update_run(run_id, status="RUNNING")
    except Exception as err:  # mlflow raises many types for a missing run or a broken store; report one line
        raise TrackingError(f"{uri}: cannot reopen the sweep's parent run {run_id} ({type(err).__name__}: {err}); "
                            "resume a sweep with the tracking.uri it was started with") from err


def job_runs(uri: str, parent_run_id: str, output_dir: str) -> list[RunRecord]:
    """Returns the parent's child runs that the job writing to output_dir made, oldest first."""
    return [r for r in child_runs(uri, parent_run_id) if r.output_dir == output_dir]


def delete_runs(uri: str, runs: Sequence[RunRecord]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for run in runs:
        client.delete_run(run.run_id)
