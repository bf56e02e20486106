"""Per-run trackers, chosen by the tracking config group's `_target_`: `MlflowTracker` checks its store
(or server) when built, before any model is, and `NullTracker` (tracking=none) records nothing.
`tracker.run(...)` is a context manager that ends the run FINISHED, FAILED (with a `failure_reason`
tag) or KILLED, so no run is ever left RUNNING.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from segexp.errors import TrackingError, TrainingInterrupted
from segexp.provenance import tf_version
from segexp.tracking.store import check_store, ensure_experiment, resolve_uri


class NullTracker:
    """tracking=none: the same calls as MlflowTracker, recording nothing."""

    records = False  # a sweep makes no parent run for it
    uri = None
    run_id = None

    def __init__(self, uri: str | None = None, experiment_name: str | None = None, log_model: bool = False):
        """Takes the tracking group's keys and ignores them, so `tracking=none` is a one-word switch."""

    @contextlib.contextmanager
    def run(self, name: str, tags: Mapping[str, str], run_id: str | None = None,
            parent_run_id: str | None = None) -> Iterator["NullTracker"]:
        yield self

    def run_for_checkpoint(self, path: Path) -> str | None:
        return None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_text(self, text: str, path: str) -> None: ...
    def log_artifacts(self, directory: Path, path: str) -> None: ...
    def log_image(self, image: np.ndarray, key: str, step: int) -> None: ...
    def log_image_file(self, image: np.ndarray, path: str) -> None: ...
    def log_model(self, model: Any) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def keras_callbacks(self) -> list:
        return []


class MlflowTracker:
    """One MLflow run per training job in the configured experiment, in the store at `uri`
    (None: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/outputs/mlflow.db), checked when built."""

    records = True

    def __init__(self, uri: str | None, experiment_name: str, log_model: bool):
        import mlflow

        uri = resolve_uri(uri)
        check_store(uri)  # fails fast on an unwritable store or an unreachable server
        self.uri, self.log_model_enabled, self.run_id = uri, log_model, None
        mlflow.set_tracking_uri(uri)
        try:
            mlflow.set_experiment(experiment_id=ensure_experiment(uri, experiment_name))
        except Exception as err:  # mlflow raises many types for a broken store; report one line
            raise TrackingError(f"{uri}: cannot open the MLflow store ({type(err).__name__}: {err})") from err

    @contextlib.contextmanager
    def run(self, name: str, tags: Mapping[str, str], run_id: str | None = None,
            parent_run_id: str | None = None) -> Iterator["MlflowTracker"]:
        """Starts a new run (a child of `parent_run_id`, a sweep's), or reopens `run_id` (resume, and
        evaluate logs into the run that trained the model)."""
        import mlflow

        child_tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id and not run_id else {}
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

    def log_image_file(self, image: np.ndarray, path: str) -> None:
        import mlflow

        mlflow.log_image(image, artifact_file=path)

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
