"""Logging that neither stops nor stalls training when the tracking store goes away.

Every record of a run (parameters, metrics, tags, files, images, its data sets, the model and the run's
end) is first appended to a journal in the run's directory, then sent to MLflow in order by one
background thread. A failure the store may get over (no answer, a 5xx, a locked database) is retried
every few seconds, probing the server's /health first; a record the store refuses outright (a 4xx
answer, such as a changed parameter) is skipped with one warning. `close` waits for the queue to drain,
but at most a bounded time while the store is unreachable; what is left stays in the journal, and
`segexp upload <run dir>` sends it later (`upload`). The journal holds only JSON and the files it points
to, so the upload needs no live process.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from segexp.tracking.store import ping_server
from segexp.tracking.tags import FAILURE_REASON, ORPHANED

JOURNAL = "journal.jsonl"  # one record per line: {"seq", "kind", "time", ...}; the first is the header
SENT = "sent.txt"  # seq of every record the store took (or refused for good), one per line
RETRY_SECONDS = 2.0  # how often an unreachable store is tried again


def now_ms() -> int:
    return int(time.time() * 1000)


def transient(err: BaseException) -> bool:
    """True for failures a store gets over (no answer, a server error, a locked sqlite database),
    False for an answer that will not change (a bad parameter, a missing run)."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        return err.get_http_status_code() >= 500
    if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return False  # a local file the record names is gone or unreadable: retrying will not help
    return isinstance(err, OSError) or type(err).__name__ in ("OperationalError", "TimeoutError")


def refused(record: Mapping[str, Any], err: BaseException) -> str:
    """The one-line warning for a record the store refused outright."""
    return (f"[segexp] warning: the tracking store refused {record['kind']} record {record['seq']} "
            f"({type(err).__name__}: {str(err)[:300]}); skipped")


def server_answers(uri: str, timeout: float = 2.0) -> bool:
    """True if the store at uri can be tried: a server's /health answers (a file store always can)."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        ping_server(uri, timeout)
        return True
    except OSError:
        return False


class Spool:
    """The journal and sender of one run; `put_*` return at once, whatever the store is doing."""

    def __init__(self, uri: str, run_id: str, directory: Path, say: Callable[[str], None] = print):
        self.uri, self.run_id, self.directory, self.say = uri, run_id, Path(directory), say
        self.directory.mkdir(parents=True, exist_ok=True)
        self.journal, self.sent_file = self.directory / JOURNAL, self.directory / SENT
        self.seq = 0
        if self.journal.exists():  # a resumed run appends, after cutting a record its killed process left torn
            records, length = read_journal(self.journal, say)
            with self.journal.open("r+b") as journal:
                journal.truncate(length)
            self.seq = max((r["seq"] for r in records), default=-1) + 1
        if not self.seq:
            self._append({"seq": 0, "kind": "header", "uri": uri, "run_id": run_id, "time": now_ms()})
        self.objects: dict[int, Any] = {}  # in-memory model objects, so the live sender need not reload them
        self.pending, self.lock, self.drained = 0, threading.Lock(), threading.Condition()
        self.down_since: float | None = None
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._send_all, name="segexp-tracking", daemon=True)
        self.thread.start()

    # --- producers (the training thread) ---------------------------------------------------------
    def put(self, kind: str, obj: Any = None, **payload: Any) -> None:
        with self.lock:
            self.seq += 1
            record = {"seq": self.seq, "kind": kind, "time": now_ms(), **payload}
            self._append(record)
            if obj is not None:
                self.objects[self.seq] = obj
        with self.drained:
            self.pending += 1
        self.queue.put(record)

    def put_file(self, kind: str, name: str, write: Callable[[Path], None], **payload: Any) -> None:
        """Writes a file for a record (text, an image array) into the journal's directory, then queues it."""
        path = self.directory / "files" / f"{self.seq + 1:06d}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
        self.put(kind, path=str(path), **payload)

    def _append(self, record: Mapping[str, Any]) -> None:
        with self.journal.open("a") as f:
            f.write(json.dumps(record) + "\n")

    # --- the sender thread -------------------------------------------------------------------------
    def _send_all(self) -> None:
        from mlflow import MlflowClient

        client = MlflowClient(self.uri)
        while True:
            record = self.queue.get()
            self._deliver(client, record)
            self.objects.pop(record["seq"], None)
            with self.sent_file.open("a") as f:
                f.write(f"{record['seq']}\n")
            with self.drained:
                self.pending -= 1
                self.drained.notify_all()
            if record["kind"] == "status":  # the run's last record: the thread ends with it
                return

    def _deliver(self, client, record: Mapping[str, Any]) -> None:
        while True:
            if self.down_since is not None and not server_answers(self.uri):
                time.sleep(RETRY_SECONDS)
                continue
            try:
                send(client, self.run_id, record, self.objects.get(record["seq"]))
            except Exception as err:  # noqa: BLE001 - any store error: retried or skipped, never raised into training
                if not transient(err):
                    self.say(refused(record, err))
                    return
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    self.say(f"[segexp] tracking store {self.uri} unreachable ({str(err)[:200]}); training goes on "
                             f"and what it logs is kept in {self.directory} until the store is back")
                time.sleep(RETRY_SECONDS)
                continue
            if self.down_since is not None:
                self.say(f"[segexp] tracking store back after {time.monotonic() - self.down_since:.0f} s; "
                         f"sending the {self.pending} queued record(s)")
                self.down_since = None
            return

    def close(self, outage_seconds: float) -> int:
        """Waits until every queued record is sent - however long a store that answers takes (a model upload
        takes seconds) - but gives up once the store has been unreachable for `outage_seconds` of this wait;
        returns how many records are left."""
        started = time.monotonic()
        with self.drained:
            while self.pending:
                down = self.down_since
                if down is not None and time.monotonic() - max(down, started) >= outage_seconds:
                    break
                self.drained.wait(timeout=0.5)
            return self.pending


def send(client, run_id: str, record: Mapping[str, Any], obj: Any = None) -> None:
    """Sends one journal record to the run in the store behind `client`."""
    from mlflow.entities import Metric, Param, RunTag

    kind, t = record["kind"], record["time"]
    if kind == "params":
        client.log_batch(run_id, params=[Param(k, v) for k, v in record["params"].items()])
    elif kind == "metrics":
        client.log_batch(run_id, metrics=[Metric(k, v, t, record.get("step") or 0)
                                          for k, v in record["metrics"].items()])
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in record["tags"].items()])
    elif kind == "file":
        client.log_artifact(run_id, record["path"], record.get("artifact_dir"))
    elif kind == "dir":
        client.log_artifacts(run_id, record["path"], record.get("artifact_dir"))
    elif kind == "image":
        image = np.load(record["path"])
        if record.get("key"):
            client.log_image(run_id, image, key=record["key"], step=record["step"], timestamp=t, synchronous=True)
        else:
            client.log_image(run_id, image, artifact_file=record["artifact_file"])
    elif kind == "dataset":
        client.log_inputs(run_id, datasets=dataset_inputs(record))
    elif kind == "model":
        log_model(client, run_id, record, obj)
    elif kind == "status":
        client.set_terminated(run_id, record["status"], end_time=t)
    else:
        raise ValueError(f"unknown journal record kind {kind!r}")


def dataset_inputs(record: Mapping[str, Any]) -> list:
    """The MLflow dataset inputs of one `dataset` record: each role's slices, with their pixel digest."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    try:
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are the local file source
            warnings.simplefilter("ignore", UserWarning)
            origin = resolve_dataset_source(record["source"])
    except Exception:  # not a path or URI MLflow knows (e.g. generated data): record it as code
        from mlflow.data.code_dataset_source import CodeDatasetSource

        origin = CodeDatasetSource({"source": record["source"]})
    inputs = []
    for role in record["roles"]:
        dataset = MetaDataset(origin, name=record["name"], digest=role["digest"])._to_mlflow_entity()
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, role["context"])] + [InputTag(k, v) for k, v in role["tags"].items()]
        inputs.append(DatasetInput(dataset, tags))
    return inputs


def log_model(client, run_id: str, record: Mapping[str, Any], model: Any) -> None:
    """Logs a Keras model (the live object, or the checkpoint the record names, loaded) to the run, with the
    signature and input example the record gives. MLflow's model logging reads the store and experiment
    from its global state: both are pointed at the run's."""
    import logging

    import keras
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    mlflow.set_tracking_uri(client.tracking_uri)
    mlflow.set_experiment(experiment_id=client.get_run(run_id).info.experiment_id)
    channels_in, channels_out = record["channels"]
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1, channels_in))]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1, channels_out))]))
    example = np.load(record["path"]) if record.get("path") else None  # put_file wrote it
    # The tensorflow flavor: mlflow.keras.log_model fails with an input example (mlflow#16183). Explicit
    # requirements: inferring them imports and profiles the whole environment. Keras' progress bar off
    # while MLflow checks the example by predicting it.
    absl, level = logging.getLogger("absl"), logging.getLogger("absl").level
    keras.config.disable_interactive_logging()
    absl.setLevel(logging.WARNING)
    try:
        mlflow.tensorflow.log_model(model, name="model", signature=signature, input_example=example,
                                    pip_requirements=record["requirements"], run_id=run_id,
                                    registered_model_name=record.get("register_as"))
    finally:
        keras.config.enable_interactive_logging()
        absl.setLevel(level)


def read_journal(journal: Path, say: Callable[[str], None] = print) -> tuple[list[dict], int]:
    """Returns (the journal's intact records, the byte length they take). A last record cut short (the process
    died while appending it: power loss, a full disk) counts as never written, said in one line; a record that is
    not JSON anywhere else is a DataError naming the file and line, since what follows it cannot be trusted."""
    from segexp.errors import DataError

    data = journal.read_bytes()
    lines = data.split(b"\n")
    complete = lines[:-1]  # every line that ended with a newline; lines[-1] is what follows the last one
    records, length = [], 0
    for number, line in enumerate(complete, start=1):
        try:
            if line.strip():
                records.append(json.loads(line))
        except ValueError:
            if number == len(complete) and not lines[-1]:
                break  # the newline made it but the text did not all: torn as well
            raise DataError(f"{journal}:{number}: this record is not JSON, and records follow it; the journal is "
                            "damaged - restore it from a copy, or cut it before this line to upload what precedes "
                            "it") from None
        length += len(line) + 1
    torn = data[length:]
    if torn.strip():
        say(f"[segexp] {journal}: its last record was cut short ({len(torn)} bytes, written as the process died); "
            "taken as never written")
    return records, length


def unsent(directory: Path, say: Callable[[str], None] = print) -> tuple[dict, list[dict]]:
    """Returns (the journal's header, its intact records the store has not taken) of a spool directory."""
    journal = Path(directory) / JOURNAL
    if not journal.is_file():
        raise FileNotFoundError(journal)
    records, _ = read_journal(journal, say)
    sent_file = Path(directory) / SENT
    sent = {int(s) for s in sent_file.read_text().split()} if sent_file.exists() else set()
    return records[0], [r for r in records[1:] if r["seq"] not in sent]


def upload(directory: Path, load_model: Callable[[Path], Any], uri: str | None = None,
           say: Callable[[str], None] = print) -> int:
    """Sends what a run's journal holds and its store has not taken, in order, to `uri` (default: the
    store the run was made in); returns how many records were sent. `load_model` loads the checkpoint a
    `model` record names (segexp.models.loading.load_model: the tracking layer knows no model code). A record the store refuses outright is
    skipped with a warning; any other failure stops it, and a second upload continues where this one stopped. A run that segexp had ended as KILLED because its
    process was gone, and whose journal says it finished, becomes FINISHED again. A journal whose end was torn
    away (no final status record) leaves its run to the orphan rule: RUNNING while its process lives, else
    ended as KILLED."""
    from mlflow import MlflowClient

    from segexp.tracking.store import end_orphaned_runs

    header, records = unsent(directory, say)
    uri, run_id = uri or header["uri"], header["run_id"]
    client = MlflowClient(uri)
    with (Path(directory) / SENT).open("a") as sent:
        for record in records:
            if record["kind"] == "status" and record["status"] == "FINISHED" and \
                    client.get_run(run_id).data.tags.get(FAILURE_REASON, "").startswith(ORPHANED):
                client.delete_tag(run_id, FAILURE_REASON)
            try:
                model = load_model(Path(record["checkpoint"])) if record["kind"] == "model" else None
                send(client, run_id, record, model)
            except Exception as err:  # noqa: BLE001 - as the live sender: a refusal is skipped, the rest stops it
                if transient(err):
                    raise
                say(refused(record, err))
            sent.write(f"{record['seq']}\n")
            sent.flush()
    say(f"[segexp] uploaded {len(records)} record(s) of run {run_id} to {uri}")
    if client.get_run(run_id).info.status == "RUNNING":
        for run in end_orphaned_runs(uri)[0]:
            say(f"[segexp] run {run.run_id}'s journal holds no end and its process is gone: ended as KILLED")
    return len(records)

