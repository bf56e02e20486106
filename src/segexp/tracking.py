"""Experiment tracking: the only module that imports mlflow.

`open_tracker(cfg.tracking)` checks the store (or server) before any model is built and
returns an `MlflowTracker`, or a `NullTracker` for `tracking=none`. `tracker.run(...)` is a
context manager that ends the run FINISHED, FAILED (with a `failure_reason` tag) or KILLED,
so no run is ever left RUNNING.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from segexp.errors import TrackingError, TrainingInterrupted

DEFAULT_STORE = Path("outputs") / "mlflow.db"
# Set by the sweep callback before jobs start: each job's run becomes a child of this run.
PARENT_RUN_ENV = "SEGEXP_PARENT_RUN_ID"
SWEPT_KEYS_ENV = "SEGEXP_SWEPT_KEYS"  # the sweep's varying keys, so a child is named by them alone


def resolve_uri(configured: str | None) -> str:
    """Returns tracking.uri if set, else $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/outputs/mlflow.db."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(Path.cwd() / DEFAULT_STORE).resolve()}"


def check_store(uri: str) -> None:
    """Raises TrackingError if a sqlite store cannot be written or a server does not answer."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab"):
                pass
        except OSError as err:
            raise TrackingError(f"{path}: MLflow store is not writable ({err.strerror}); "
                                "set MLFLOW_TRACKING_URI or tracking.uri to a writable location") from err
    elif uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).read()
        except (urllib.error.URLError, OSError) as err:
            raise TrackingError(f"tracking.uri={uri}: MLflow server unreachable ({err}); start it with "
                                "`mlflow server --host 127.0.0.1 ...` or use tracking=none") from err


def artifact_root(uri: str) -> str | None:
    """Returns where a sqlite store keeps artifacts: beside the database, not in ./mlruns of the cwd."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None  # a server decides for itself


def ensure_experiment(uri: str, name: str) -> str:
    """Returns the id of experiment `name` in the store at uri, creating it (artifacts beside the store)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_root(uri))
    except mlflow.exceptions.MlflowException:  # another job created it first
        return client.get_experiment_by_name(name).experiment_id


def git_state(directory: Path) -> dict[str, str]:
    """Returns {"git_commit", "git_dirty"} of the checkout holding `directory`, or {} outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        return {"git_commit": git("rev-parse", "HEAD"),
                "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no")))}
    except (OSError, subprocess.SubprocessError):
        return {}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Returns {"a.b.c": value} for nested dicts and lists (list items keyed by index)."""
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


class NullTracker:
    """tracking=none: the same calls as MlflowTracker, recording nothing."""

    uri = None
    run_id = None

    @contextlib.contextmanager
    def run(self, name: str, tags: Mapping[str, str], run_id: str | None = None) -> Iterator["NullTracker"]:
        yield self

    def run_for_checkpoint(self, path: Path) -> str | None:
        return None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_text(self, text: str, path: str) -> None: ...
    def log_artifacts(self, directory: Path, path: str) -> None: ...
    def log_image(self, image: np.ndarray, key: str, step: int) -> None: ...
    def log_model(self, model: Any) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def keras_callbacks(self) -> list:
        return []


class MlflowTracker:
    """One MLflow run per training job in the configured experiment."""

    def __init__(self, uri: str, experiment_name: str, log_model: bool = True):
        import mlflow

        self.uri, self.log_model_enabled, self.run_id = uri, log_model, None
        mlflow.set_tracking_uri(uri)
        try:
            mlflow.set_experiment(experiment_id=ensure_experiment(uri, experiment_name))
        except Exception as err:  # mlflow raises many types for a broken store; report one line
            raise TrackingError(f"{uri}: cannot open the MLflow store ({type(err).__name__}: {err})") from err

    @contextlib.contextmanager
    def run(self, name: str, tags: Mapping[str, str], run_id: str | None = None) -> Iterator["MlflowTracker"]:
        """Starts a new run, or reopens `run_id` (evaluate logs into the run that trained the model)."""
        import mlflow

        parent = os.environ.get(PARENT_RUN_ENV)
        child_tags = {"mlflow.parentRunId": parent} if parent and not run_id else {}
        if run_id:
            run = mlflow.start_run(run_id=run_id)
            mlflow.set_tags(dict(tags))
        else:
            run = mlflow.start_run(run_name=name, tags={**tags, **child_tags})
        self.run_id = run.info.run_id
        try:
            yield self
        except (KeyboardInterrupt, TrainingInterrupted):
            mlflow.set_tag("failure_reason", "interrupted (SIGINT/SIGTERM)")
            mlflow.end_run("KILLED")
            raise
        except BaseException as err:
            mlflow.set_tag("failure_reason", f"{type(err).__name__}: {err}"[:5000])
            mlflow.end_run("FAILED")
            raise
        mlflow.end_run("FINISHED")

    def run_for_checkpoint(self, path: Path) -> str | None:
        """Returns the id of the run whose `checkpoint` tag is this file, if the store has one."""
        import mlflow

        runs = mlflow.search_runs(filter_string=f"tags.checkpoint = '{Path(path).resolve()}'",
                                  search_all_experiments=True, output_format="list", max_results=1)
        return runs[0].info.run_id if runs else None

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow

        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_text(self, text: str, path: str) -> None:
        import mlflow

        mlflow.log_text(text, path)

    def log_artifacts(self, directory: Path, path: str) -> None:
        import mlflow

        if Path(directory).is_dir():
            mlflow.log_artifacts(str(directory), path)

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        import mlflow

        mlflow.log_image(image, key=key, step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        import mlflow

        mlflow.set_tags(dict(tags))

    def log_model(self, model: Any) -> None:
        import mlflow

        if self.log_model_enabled:
            # explicit requirements: inferring them imports and profiles the whole environment
            mlflow.keras.log_model(model, name="model", pip_requirements=self._requirements())

    @staticmethod
    def _requirements() -> list[str]:
        from importlib.metadata import version

        return [f"keras=={version('keras')}", f"tensorflow=={tf_version()}", f"numpy=={version('numpy')}"]

    def keras_callbacks(self) -> list:
        import mlflow.keras

        return [mlflow.keras.MlflowCallback(log_every_epoch=True)]


def tf_version() -> str:
    """Returns the installed TensorFlow distribution's version (cpu or gpu wheel)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("tensorflow", "tensorflow-cpu"):
        with contextlib.suppress(PackageNotFoundError):
            return version(dist)
    return "unknown"


def open_tracker(backend: str, uri: str | None, experiment_name: str, log_model: bool = True):
    """Returns a ready tracker, after checking that its store can be written."""
    if backend == "none":
        return NullTracker()
    resolved = resolve_uri(uri)
    check_store(resolved)
    return MlflowTracker(resolved, experiment_name, log_model)


def run_tag(run_id: str, tag: str, uri: str | None = None) -> str | None:
    """Returns one tag of an MLflow run (e.g. `checkpoint`, `output_dir`), or None."""
    import mlflow

    try:
        return mlflow.MlflowClient(resolve_uri(uri)).get_run(run_id).data.tags.get(tag)
    except Exception:  # unknown id or unreachable store: the caller reports the value it was given
        return None


def run_tags(overrides: list[str], code_dir: Path) -> dict[str, str]:
    """Returns the provenance tags every run carries: code, versions, machine."""
    from importlib.metadata import PackageNotFoundError, version

    from segexp import __version__

    versions = {}
    for dist in ("keras", "mlflow", "albumentations", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            versions[f"version.{dist}"] = version(dist)
    return {
        "segexp_version": __version__,
        "overrides": " ".join(overrides) or "(none)",
        "hostname": socket.gethostname(),
        "version.tensorflow": tf_version(),
        **versions,
        **git_state(code_dir),
    }


# --- sweeps: one parent run per multirun, its jobs' runs as children (used by segexp.sweep) ---

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
        return MlflowClient(uri).create_run(experiment_id, run_name=name, tags=dict(tags)).info.run_id
    except Exception as err:  # mlflow raises many types for a broken store; report one line
        raise TrackingError(f"{uri}: cannot create the sweep's parent run ({type(err).__name__}: {err})") from err


def child_runs(uri: str, parent_run_id: str) -> list:
    """Returns the runs tagged mlflow.parentRunId = parent_run_id, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                  order_by=["attributes.start_time ASC"], page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """Returns [(step, value)] of one metric of one run, by step."""
    from mlflow.tracking import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def record_failed_child(uri: str, parent_run_id: str, name: str, tags: Mapping[str, str], reason: str) -> str:
    """Creates a FAILED child run for a job that failed before its own run started; returns its id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run = client.create_run(experiment_id, run_name=name, tags={
        **tags, "mlflow.parentRunId": parent_run_id, "failure_reason": reason[:5000]})
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
