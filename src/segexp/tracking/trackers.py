"""Per-run trackers, chosen by the tracking config group's `_target_`: `MlflowTracker` checks its store
(or server) when built, before any model is, and `NullTracker` (tracking=none) records nothing.
`tracker.run(...)` is a context manager that ends the run FINISHED, FAILED (with a `failure_reason`
tag) or KILLED, so no run is ever left RUNNING.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from segexp.errors import TrackingError, TrainingInterrupted
from segexp.tracking.processes import process_identity
from segexp.tracking.provenance import tf_version
from segexp.tracking.spool import Spool
from segexp.tracking.store import check_store, ensure_experiment, report_orphans, resolve_uri
from segexp.tracking.tags import FAILURE_REASON, PARENT_RUN_ID, PROCESS_TAG

DATASET_DIGEST = 16  # hex characters of a role's pixel digest shown in the UI's Dataset column (all in its tag)
SPOOL = "tracking_spool"  # the journal's folder inside the run's directory
# MLflow's own HTTP retries back off for minutes; a few quick ones suffice, the spool retries for good
HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


class NullTracker:
    """tracking=none: the same calls as MlflowTracker, recording nothing."""

    records = False  # a sweep makes no parent run for it
    uri = None
    run_id = None

    def __init__(self, uri: str | None = None, experiment_name: str | None = None, log_model: bool = False,
                 system_metrics: float | None = None, register_as: str | None = None, outage_wait: float = 0):
        """Takes the tracking group's keys and ignores them, so `tracking=none` is a one-word switch."""

    @contextlib.contextmanager
    def run(self, name: str, tags: Mapping[str, str], run_id: str | None = None,
            parent_run_id: str | None = None, spool_dir: Path | None = None) -> Iterator["NullTracker"]:
        yield self

    def run_for_checkpoint(self, path: Path) -> str | None:
        return None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_text(self, text: str, path: str) -> None: ...
    def log_artifacts(self, directory: Path, path: str) -> None: ...
    def log_image(self, image: np.ndarray, key: str, step: int) -> None: ...
    def log_image_file(self, image: np.ndarray, path: str) -> None: ...
    def log_model(self, model: Any, input_example: np.ndarray | None = None, checkpoint: Path | None = None) -> None: ...
    def log_dataset(self, name: str, source: str, roles: Mapping[str, tuple[str, Sequence[str]]]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...


class MlflowTracker:
    """One MLflow run per training job in the configured experiment, in the store at `uri`
    (None: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/outputs/mlflow.db), checked when built.

    Inside a run, everything is logged through a spool (tracking.spool): a journal in the run's directory
    and one sender thread, so a store that goes away mid-run neither stops nor slows training. At the end
    the run waits for the store to take what is queued, giving up once it has been unreachable for
    `outage_wait` seconds of that wait; what it did not take is left for `segexp upload <run dir>`, and the
    run ends with one line saying so.
    """

    records = True

    def __init__(self, uri: str | None, experiment_name: str, log_model: bool, system_metrics: float | None = None,
                 register_as: str | None = None, outage_wait: float = 120.0):
        import mlflow

        uri = resolve_uri(uri)
        check_store(uri)  # fails fast on an unwritable store or an unreachable server
        if uri.startswith(("http://", "https://")):  # a few quick retries; the spool retries for as long as it takes
            for key, value in HTTP_RETRIES.items():
                os.environ.setdefault(key, value)
        self.uri, self.log_model_enabled, self.run_id = uri, log_model, None
        self.system_metrics, self.register_as, self.outage_wait = system_metrics, register_as, outage_wait
        self.spool: Spool | None = None
        mlflow.set_tracking_uri(uri)
        try:
            self.experiment_id = ensure_experiment(uri, experiment_name)
        except Exception as err:  # mlflow raises many types for a broken store; report one line
            raise TrackingError(f"{uri}: cannot open the MLflow store ({type(err).__name__}: {err})") from err
        report_orphans(uri)

    @contextlib.contextmanager
    def run(self, name: str, tags: Mapping[str, str], run_id: str | None = None,
            parent_run_id: str | None = None, spool_dir: Path | None = None) -> Iterator["MlflowTracker"]:
        """Starts a new run (a child of `parent_run_id`, a sweep's), or reopens `run_id` (resume, and
        evaluate logs into the run that trained the model); its journal goes to `spool_dir` (default: a
        temporary directory). The run ends FINISHED, FAILED (with a `failure_reason` tag) or KILLED."""
        from mlflow import MlflowClient
        from mlflow.tracking.context import registry as context_tags

        client, reopened = MlflowClient(self.uri), run_id is not None
        tags = {**tags, PROCESS_TAG: process_identity()}  # who has it open: see store.end_orphaned_runs
        if run_id:
            client.update_run(run_id, status="RUNNING")
        else:
            child = {PARENT_RUN_ID: parent_run_id} if parent_run_id else {}
            run_id = client.create_run(self.experiment_id, run_name=name,
                                       tags=context_tags.resolve_tags({**tags, **child})).info.run_id
        self.run_id = run_id
        self.spool = Spool(self.uri, run_id, Path(spool_dir or tempfile.mkdtemp(prefix="segexp-spool-")) / SPOOL)
        self.set_tags(tags)
        monitor = self._system_monitor(run_id, resumed=reopened)
        status = "FINISHED"
        try:
            yield self
        except (KeyboardInterrupt, TrainingInterrupted):
            self.set_tags({FAILURE_REASON: "interrupted (SIGINT/SIGTERM)"})
            status = "KILLED"
            raise
        except BaseException as err:
            self.set_tags({FAILURE_REASON: f"{type(err).__name__}: {err}"[:5000]})
            status = "FAILED"
            raise
        finally:
            if monitor:
                monitor.finish()
            self._end(status, temporary=spool_dir is None)

    def _system_monitor(self, run_id: str, resumed: bool):
        """CPU, memory (and GPU) sampled by MLflow's own monitor thread (psutil), if configured."""
        if not self.system_metrics:
            return None
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # not 4 INFO lines per run
        monitor = SystemMetricsMonitor(run_id, sampling_interval=self.system_metrics, samples_before_logging=1,
                                       resume_logging=resumed, tracking_uri=self.uri)
        monitor.start()
        return monitor

    def _end(self, status: str, temporary: bool) -> None:
        """Queues the run's end and waits for the store to take everything, until it has been unreachable for
        outage_wait seconds (or Ctrl-C); a temporary journal the store took in full is deleted."""
        spool, self.spool = self.spool, None
        spool.put("status", status=status)
        try:
            left = spool.close(self.outage_wait)
        except KeyboardInterrupt:  # no second wait and no traceback: the journal keeps what is left
            left = spool.pending
        if left:
            print(f"[segexp] tracking store {self.uri} was unreachable for tracking.outage_wait={self.outage_wait:g} s "
                  f"and did not take {left} record(s) of run {self.run_id}; they are kept in {spool.directory} - "
                  f"once the store is back, send them with: python -m segexp upload {spool.directory.parent}",
                  flush=True)
        else:
            shutil.rmtree(spool.directory.parent if temporary else spool.directory / "files", ignore_errors=True)

    def run_for_checkpoint(self, path: Path) -> str | None:
        """Returns the id of the run whose `checkpoint` tag is this file, if the store has one."""
        import mlflow

        runs = mlflow.search_runs(filter_string=f"tags.checkpoint = '{Path(path).resolve()}'",
                                  search_all_experiments=True, output_format="list", max_results=1)
        return runs[0].info.run_id if runs else None

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.spool.put("params", params={k: str(v)[:6000] for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.spool.put("metrics", metrics={k: float(v) for k, v in metrics.items()}, step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.spool.put("tags", tags={k: str(v) for k, v in tags.items()})

    def log_text(self, text: str, path: str) -> None:
        folder, _, name = path.rpartition("/")
        self.spool.put_file("file", name, lambda f: f.write_text(text), artifact_dir=folder or None)

    def log_artifacts(self, directory: Path, path: str) -> None:
        if Path(directory).is_dir():  # the run's own files (its Hydra config), which stay where they are
            self.spool.put("dir", path=str(Path(directory).resolve()), artifact_dir=path)

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        self.spool.put_file("image", "image.npy", lambda f: np.save(f, image), key=key, step=int(step))

    def log_image_file(self, image: np.ndarray, path: str) -> None:
        self.spool.put_file("image", "image.npy", lambda f: np.save(f, image), artifact_file=path)

    def log_model(self, model: Any, input_example: np.ndarray | None = None, checkpoint: Path | None = None) -> None:
        """Logs the Keras model with a signature (float32 images of any size, batch first, channels last ->
        probability maps) and, if given, an input example (a batch of one real crop); `checkpoint` is the
        file it was loaded from, for an upload after this process has gone."""
        if not self.log_model_enabled:
            return
        record = {"checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
                  "channels": [int(model.input_shape[-1]), int(model.output_shape[-1])],
                  "requirements": self._requirements(), "register_as": self.register_as}
        if input_example is not None:
            self.spool.put_file("model", "input_example.npy", lambda f: np.save(f, input_example), obj=model,
                                **record)
        else:
            self.spool.put("model", obj=model, **record)

    def log_dataset(self, name: str, source: str, roles: Mapping[str, tuple[str, Sequence[str]]]) -> None:
        """Logs each role's slices (train, select, report) as an MLflow dataset input: the data set's name
        and source, the digest of that role's pixels, and the slice names as a tag."""
        entries = []
        for role, (digest, names) in roles.items():
            if names:
                shown = ",".join(names)
                entries.append({"context": role, "digest": digest[:DATASET_DIGEST],
                                "tags": {"slices": shown if len(shown) <= 500 else shown[:497] + "...",
                                         "count": str(len(names)), "pixel_digest": digest}})
        if entries:
            self.spool.put("dataset", name=name, source=source, roles=entries)

    @staticmethod
    def _requirements() -> list[str]:
        from importlib.metadata import version

        return [f"keras=={version('keras')}", f"tensorflow=={tf_version()}", f"numpy=={version('numpy')}"]


@dataclass(frozen=True)
class LoggedRun:
    """What a run logged, as its own journal holds it (no store needed): its MLflow run id, its tags and the last
    value of each metric."""

    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]


def logged_run(run_dir: Path) -> LoggedRun | None:
    """Returns the LoggedRun of a run folder from its journal, or None for a run trained with tracking=none."""
    from segexp.tracking.spool import JOURNAL, read_journal

    journal = Path(run_dir) / SPOOL / JOURNAL
    if not journal.is_file():
        return None
    records, _ = read_journal(journal, lambda _: None)
    tags: dict[str, str] = {}
    metrics: dict[str, float] = {}
    for record in records[1:]:
        if record["kind"] == "tags":
            tags.update(record["tags"])
        elif record["kind"] == "metrics":
            metrics.update(record["metrics"])
    return LoggedRun(records[0]["run_id"], tags, metrics)
