"""Per-run trackers, chosen by the tracking config group's `_target_`: `MlflowTracker` checks its store
(or server) when built, before any model is, and `NullTracker` (tracking=none) records nothing.
`tracker.run(...)` is a context manager that ends the run FINISHED, FAILED (with a `failure_reason`
tag) or KILLED, so no run is ever left RUNNING.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from segexp.errors import TrackingError, TrainingInterrupted
from segexp.provenance import process_identity, tf_version
from segexp.tracking.store import PROCESS_TAG, check_store, end_orphaned_runs, ensure_experiment, resolve_uri

DATASET_DIGEST = 16  # hex characters of a role's pixel digest shown in the UI's Dataset column (all in its tag)


def report_orphans(uri: str) -> None:
    """Ends the store's RUNNING runs whose process died on this host, saying so in one line."""
    ended, _ = end_orphaned_runs(uri)
    if ended:
        print(f"[segexp] ended {len(ended)} run(s) left RUNNING by a process that died, as KILLED: "
              + ", ".join(f"{r.info.run_name} ({r.info.run_id})" for r in ended), flush=True)


class NullTracker:
    """tracking=none: the same calls as MlflowTracker, recording nothing."""

    records = False  # a sweep makes no parent run for it
    uri = None
    run_id = None

    def __init__(self, uri: str | None = None, experiment_name: str | None = None, log_model: bool = False,
                 system_metrics: float | None = None, register_as: str | None = None):
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
    def log_model(self, model: Any, input_example: np.ndarray | None = None) -> None: ...
    def log_dataset(self, name: str, source: str, roles: Mapping[str, tuple[str, Sequence[str]]]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def keras_callbacks(self) -> list:
        return []


class MlflowTracker:
    """One MLflow run per training job in the configured experiment, in the store at `uri`
    (None: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/outputs/mlflow.db), checked when built."""

    records = True

    def __init__(self, uri: str | None, experiment_name: str, log_model: bool, system_metrics: float | None = None,
                 register_as: str | None = None):
        import mlflow

        uri = resolve_uri(uri)
        check_store(uri)  # fails fast on an unwritable store or an unreachable server
        self.uri, self.log_model_enabled, self.run_id = uri, log_model, None
        self.system_metrics, self.register_as = system_metrics, register_as
        mlflow.set_tracking_uri(uri)
        try:
            mlflow.set_experiment(experiment_id=ensure_experiment(uri, experiment_name))
        except Exception as err:  # mlflow raises many types for a broken store; report one line
            raise TrackingError(f"{uri}: cannot open the MLflow store ({type(err).__name__}: {err})") from err
        report_orphans(uri)

    @contextlib.contextmanager
    def run(self, name: str, tags: Mapping[str, str], run_id: str | None = None,
            parent_run_id: str | None = None) -> Iterator["MlflowTracker"]:
        """Starts a new run (a child of `parent_run_id`, a sweep's), or reopens `run_id` (resume, and
        evaluate logs into the run that trained the model)."""
        import mlflow

        child_tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id and not run_id else {}
        if self.system_metrics:  # CPU, memory (and GPU) sampled by MLflow's own monitor thread (psutil)
            logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # not 4 INFO lines per run
            mlflow.set_system_metrics_sampling_interval(self.system_metrics)
            mlflow.set_system_metrics_samples_before_logging(1)
        sampled = bool(self.system_metrics)
        if run_id:
            run = mlflow.start_run(run_id=run_id, log_system_metrics=sampled)
            mlflow.set_tags(dict(tags))
        else:
            run = mlflow.start_run(run_name=name, tags={**tags, **child_tags}, log_system_metrics=sampled)
        self.run_id = run.info.run_id
        mlflow.set_tag(PROCESS_TAG, process_identity())  # who has it open: see store.end_orphaned_runs
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

    def log_model(self, model: Any, input_example: np.ndarray | None = None) -> None:
        """Logs the Keras model with a signature (float32 images of any size, batch first, channels last ->
        probability maps) and, if given, an input example (a batch of one real crop)."""
        import mlflow
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        if not self.log_model_enabled:
            return
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1, int(model.input_shape[-1])))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1, int(model.output_shape[-1])))]))
        # The tensorflow flavor: mlflow.keras.log_model fails with an input example (mlflow#16183). Explicit
        # requirements: inferring them imports and profiles the whole environment. Keras' progress bar off
        # while MLflow checks the example by predicting it.
        import keras

        absl, level = logging.getLogger("absl"), logging.getLogger("absl").level
        keras.config.disable_interactive_logging()  # its messages then go to the absl logger, quieted here
        absl.setLevel(logging.WARNING)
        try:
            mlflow.tensorflow.log_model(model, name="model", signature=signature, input_example=input_example,
                                        pip_requirements=self._requirements(), registered_model_name=self.register_as)
        finally:
            keras.config.enable_interactive_logging()
            absl.setLevel(level)

    def log_dataset(self, name: str, source: str, roles: Mapping[str, tuple[str, Sequence[str]]]) -> None:
        """Logs each role's slices (train, select, report) as an MLflow dataset input: the data set's name
        and source, the digest of that role's pixels, and the slice names as a tag."""
        import mlflow
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        try:
            with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are the local file source
                warnings.simplefilter("ignore", UserWarning)
                origin = resolve_dataset_source(source)
        except Exception:  # not a path or URI MLflow knows (e.g. generated data): record it as code
            from mlflow.data.code_dataset_source import CodeDatasetSource

            origin = CodeDatasetSource({"source": source})
        for role, (digest, names) in roles.items():
            if names:
                shown = ",".join(names)
                mlflow.log_input(MetaDataset(origin, name=name, digest=digest[:DATASET_DIGEST]), context=role,
                                 tags={"slices": shown if len(shown) <= 500 else shown[:497] + "...",
                                       "count": str(len(names)), "pixel_digest": digest})

    @staticmethod
    def _requirements() -> list[str]:
        from importlib.metadata import version

        return [f"keras=={version('keras')}", f"tensorflow=={tf_version()}", f"numpy=={version('numpy')}"]

    def keras_callbacks(self) -> list:
        import mlflow.keras

        return [mlflow.keras.MlflowCallback(log_every_epoch=True)]
