"""The MLflow store: where it is, whether it can be written, its experiments, reading runs back."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import urllib.request
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from segexp.errors import ConfigError, TrackingError
from segexp.rundir import read_sweep_record
from segexp.tracking.processes import process_alive
from segexp.tracking.records import RunRecord, run_record
from segexp.tracking.tags import FAILURE_REASON, ORPHANED, OUTPUT_DIR

DEFAULT_STORE = Path("outputs") / "mlflow.db"
RUN_ID_LENGTH = 32


def resolve_uri(configured: str | None) -> str:
    """Returns tracking.uri if set, else $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/outputs/mlflow.db."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(Path.cwd() / DEFAULT_STORE).resolve()}"


def existing_store(configured: str | None) -> str:
    """Returns the resolved tracking URI of a store that must already hold runs; ConfigError for a sqlite
    file that does not exist (reading commands never create an empty store)."""
    uri = resolve_uri(configured)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise ConfigError(f"tracking.uri={uri}: no such store; point tracking.uri (or MLFLOW_TRACKING_URI) at the "
                          "store that holds the runs")
    return uri


def ping_server(uri: str, timeout: float) -> None:
    """Raises OSError unless the MLflow server at uri answers on /health within timeout seconds."""
    urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).read()


@contextlib.contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Raises the named loggers to WARNING for the block: MLflow's INFO notices are not the user's news."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def create_sqlite_store(path: Path) -> None:
    """Gives a sqlite store that does not exist yet its full MLflow schema, atomically.

    MLflow migrates an empty database in whichever process opens it first, with no lock: two processes
    that open a new store at once (a sweep's driver and its first job, `mlflow ui`, a script polling it)
    both run the migrations, and one fails ("table ... already exists") or both leave the schema broken
    for good. So the schema is built in a private file and linked into place; os.link fails if the path
    exists, so the first creator wins and no process opens a store segexp is still building. (A plain MLflow
    process that creates the file itself still migrates it in place: that race is MLflow's.)
    """
    import mlflow

    private = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.creating")
    private.unlink(missing_ok=True)
    try:
        with quiet_loggers("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables..."
            mlflow.MlflowClient(f"sqlite:///{private}").search_experiments(max_results=1)  # runs the migrations
        try:
            os.link(private, path)
        except FileExistsError:
            pass  # another process created it first: theirs is complete too
        except OSError:  # a file system without hard links: a move, which only narrows the window
            if not path.exists():
                os.replace(private, path)
    except OSError:
        raise  # check_store reports it as a store that is not writable
    except Exception as err:  # mlflow raises many types; report one line
        raise TrackingError(f"{path}: cannot create the MLflow store ({type(err).__name__}: {err})") from err
    finally:
        private.unlink(missing_ok=True)


def check_store(uri: str) -> None:
    """Raises TrackingError if a sqlite store cannot be written or a server does not answer; creates a
    sqlite store that does not exist yet (see create_sqlite_store)."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                create_sqlite_store(path)
            with open(path, "ab"):
                pass
        except OSError as err:
            raise TrackingError(f"{path}: MLflow store is not writable ({err.strerror}); "
                                "set MLFLOW_TRACKING_URI or tracking.uri to a writable location") from err
    elif uri.startswith(("http://", "https://")):
        try:
            ping_server(uri, timeout=5)
        except OSError as err:  # urllib.error.URLError is one
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


def run_tag(run_id: str, tag: str, uri: str | None = None) -> str | None:
    """Returns one tag of an MLflow run (e.g. `checkpoint`, `output_dir`), or None; never creates a store."""
    import mlflow

    uri = resolve_uri(uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        return None
    try:
        return run_record(mlflow.MlflowClient(uri).get_run(run_id)).tags.get(tag)
    except Exception:  # unknown id or unreachable store: the caller reports the value it was given
        return None


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """Returns [(step, value)] of one metric of one run, by step."""
    from mlflow.tracking import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def find_runs(uri: str, experiment_name: str, *, output_dir: str | Path | None = None, run_name: str | None = None,
              newest_first: bool = True, max_results: int = 1000) -> list[RunRecord]:
    """Returns the records of the experiment's runs trained in output_dir and/or named run_name (None: any)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    conditions = [*([f"tags.{OUTPUT_DIR} = '{Path(output_dir).resolve()}'"] if output_dir is not None else []),
                  *([f"attributes.run_name = '{run_name}'"] if run_name is not None else [])]
    order = ["attributes.start_time DESC" if newest_first else "attributes.start_time ASC"]
    return [run_record(r) for r in client.search_runs([experiment.experiment_id], " and ".join(conditions),
                                                      order_by=order, max_results=max_results)]


def get_run(uri: str, run_id: str) -> RunRecord:
    """Returns the record of run `run_id` (MLflow's exception when the store lacks it)."""
    from mlflow.tracking import MlflowClient

    return run_record(MlflowClient(uri).get_run(run_id))


def timed_metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, int, float]]:
    """Returns [(timestamp in ms, step, value)] of one metric of one run, in logging order."""
    from mlflow.tracking import MlflowClient

    return sorted((m.timestamp, m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def log_artifact(uri: str, run_id: str, path: Path, artifact_path: str) -> None:
    """Adds a local file to a (finished or running) run's artifacts."""
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).log_artifact(run_id, str(path), artifact_path)


def all_experiment_ids(client) -> list[str]:
    from mlflow.entities import ViewType

    return [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]


def find_run(uri: str, ref: str) -> RunRecord:
    """Returns the record of the run `ref` names in the store at uri: a run id, a sweep directory (its sweep.json) or
    a run directory (the run tagged with it as output_dir); raises ConfigError naming the ref otherwise."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)

    path = Path(ref).expanduser()
    if path.is_dir():
        record = read_sweep_record(path)
        if record is not None:
            ref_id = record.parent_run_id
        else:
            runs = client.search_runs(all_experiment_ids(client), f"tags.{OUTPUT_DIR} = '{path.resolve()}'",
                                      max_results=1)
            if not runs:
                raise ConfigError(f"{ref}: no run in the tracking store was trained in this directory; "
                                  "name an MLflow run id, or set tracking.uri to the store the run used")
            return run_record(runs[0])
    elif len(ref) == RUN_ID_LENGTH and all(c in "0123456789abcdef" for c in ref):
        ref_id = ref
    else:
        raise ConfigError(f"{ref}: neither a run directory nor an MLflow run id (32 hex digits)")
    try:
        return run_record(client.get_run(ref_id))
    except MlflowException:
        raise ConfigError(f"{ref}: run {ref_id} is not in the tracking store; set tracking.uri to the store "
                          "that holds it") from None


def end_orphaned_runs(uri: str) -> tuple[list[RunRecord], list[RunRecord]]:
    """Ends, as KILLED with a failure_reason, every RUNNING run whose process is known dead (it ran on this
    host and is gone: SIGKILL, OOM, power loss). Returns (the runs ended, the RUNNING runs of other hosts
    or without a process tag, which only their own host can judge)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    running = [run_record(r) for r in client.search_runs(all_experiment_ids(client), "attributes.status = 'RUNNING'",
                                                         max_results=10000)]
    ended, unknown = [], []
    for run in running:
        alive = process_alive(run.process)
        if alive is None:
            unknown.append(run)
        elif not alive:
            client.set_tag(run.run_id, FAILURE_REASON,
                           f"{ORPHANED}{run.process}) ended without closing the run "
                           "(killed, out of memory or power loss); found and ended by segexp")
            client.set_terminated(run.run_id, "KILLED")
            ended.append(run)
    return ended, unknown


def report_orphans(uri: str) -> None:
    """Ends the store's RUNNING runs whose process died on this host, saying so in one line."""
    ended, _ = end_orphaned_runs(uri)
    if ended:
        print(f"[segexp] ended {len(ended)} run(s) left RUNNING by a process that died, as KILLED: "
              + ", ".join(f"{r.name} ({r.run_id})" for r in ended), flush=True)


def artifact_names(uri: str, run_id: str, folder: str) -> list[str]:
    """Returns the file names a run logged under an artifact folder (none: [])."""
    from mlflow.tracking import MlflowClient

    return [Path(a.path).name for a in MlflowClient(uri).list_artifacts(run_id, folder)]


def artifact_paths(uri: str, run_id: str) -> list[str]:
    """Returns the paths of a run's top-level artifacts (files and folders), e.g. ["confusion", "model"]."""
    from mlflow.tracking import MlflowClient

    return sorted(a.path for a in MlflowClient(uri).list_artifacts(run_id))


def download_artifacts(uri: str, run_id: str, path: str, destination: Path) -> Path:
    """Downloads a run's artifact file or folder into destination; returns the local path."""
    from mlflow.tracking import MlflowClient

    destination.mkdir(parents=True, exist_ok=True)
    return Path(MlflowClient(uri).download_artifacts(run_id, path, str(destination)))


def log_finished_run(uri: str, experiment_name: str, name: str, tags: Mapping[str, str],
                     metrics: Mapping[str, float], files: Sequence[Path]) -> str:
    """Logs a run that is complete at once (a comparison, a report): tags, metrics and files, FINISHED;
    returns its id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = client.create_run(ensure_experiment(uri, experiment_name), run_name=name, tags=dict(tags))
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, float(value))
    for file in files:
        client.log_artifact(run.info.run_id, str(file))
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
