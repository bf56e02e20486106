"""The tracking server goes away mid-run (a real `mlflow server`, SIGKILLed): training neither dies nor
waits; the end of the run waits a bounded time, returns as soon as the server is back, and what a server
that never came back did not take is sent later by `segexp upload`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import SHALLOW, TINY, MlflowServer, copy_store

# the caller's MLFLOW_TRACKING_URI must not reach the runs: on a developer's machine it names their real store
ENV = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "TF_CPP_MIN_LOG_LEVEL": "2"}
EPOCHS = 12
JOB = [*TINY, *SHALLOW, "data=synthetic", "data.size=48", f"trainer.epochs={EPOCHS}", "trainer.steps_per_epoch=6",
       "trainer.checkpoint=last", "tracking.log_model=true"]  # the model is the largest upload an outage holds up


def start_training(tmp_path: Path, server: MlflowServer, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "segexp", "train", *JOB, f"tracking.uri={server.uri}",
                             "hydra.run.dir=outputs/run", *args], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def epochs_on_server(server: MlflowServer) -> int:
    """How many epochs of `loss` the server holds for the experiment's only run (0 before it exists)."""
    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("segexp")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return len(client.get_metric_history(runs[0].info.run_id, "loss")) if runs else 0


def kill_after_epochs(job: subprocess.Popen, server: MlflowServer, epochs: int) -> int:
    """SIGKILLs the server once `epochs` epochs reached it; returns how many had."""
    deadline = time.monotonic() + 300
    while (seen := epochs_on_server(server)) < epochs:
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[0][-3000:]
        time.sleep(0.2)
    server.stop()
    return seen


def finished_run(server: MlflowServer):
    client = MlflowClient(server.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("segexp").experiment_id])
    return client, run


def assert_complete(server: MlflowServer, tmp_path: Path) -> None:
    """Everything the run logged is on the server: every epoch, the final scores, its files and model."""
    client, run = finished_run(server)
    assert run.info.status == "FINISHED" and "failure_reason" not in run.data.tags
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(EPOCHS))
    assert "report_dice" in run.data.metrics and run.data.params["trainer.epochs"] == str(EPOCHS)
    assert {"config", "model_card.md", "model_summary.txt"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    models = client.search_logged_models([run.info.experiment_id])
    assert [m.source_run_id for m in models] == [run.info.run_id]
    assert (tmp_path / "outputs" / "run" / "model.keras").is_file()


@pytest.mark.slow
def test_training_outlives_a_server_outage_and_ends_soon_after_it_is_back(tmp_path, mlflow_server):
    job = start_training(tmp_path, mlflow_server, "tracking.outage_wait=600")
    seen = kill_after_epochs(job, mlflow_server, 3)
    killed_at = time.monotonic()
    # training goes on without the server: the last epoch's checkpoint state is written locally
    state = tmp_path / "outputs" / "run" / "last.json"
    while not (state.exists() and json.loads(state.read_text())["epochs_done"] == EPOCHS):
        assert job.poll() is None and time.monotonic() - killed_at < 300, job.communicate()[0][-3000:]
        time.sleep(0.2)
    trained_for = time.monotonic() - killed_at
    time.sleep(5)
    assert job.poll() is None  # waiting for the server, within tracking.outage_wait
    mlflow_server.start()
    back_at = time.monotonic()
    output, _ = job.communicate(timeout=600)
    ended_after = time.monotonic() - back_at
    assert job.returncode == 0, output[-3000:]
    assert seen < EPOCHS and "unreachable" in output and "tracking store back after" in output
    # the server still has to take the model (a SavedModel export and upload): seconds, not a back-off
    assert ended_after < 60, f"the run ended {ended_after:.0f} s after the server came back"
    assert "Traceback" not in output
    assert_complete(mlflow_server, tmp_path)
    print(f"killed after {seen} epochs; training went on for {trained_for:.0f} s; ended {ended_after:.1f} s "
          "after the server was back")


@pytest.mark.slow
def test_a_server_that_never_returns_ends_the_run_in_one_line_and_upload_sends_the_rest(tmp_path, mlflow_server):
    job = start_training(tmp_path, mlflow_server, "tracking.outage_wait=5")
    kill_after_epochs(job, mlflow_server, 3)
    output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    (line,) = [line for line in output.splitlines() if "segexp upload" in line]
    assert "unreachable for tracking.outage_wait=5 s" in line and line.endswith(f"python -m segexp upload {tmp_path / 'outputs' / 'run'}")
    assert (tmp_path / "outputs" / "run" / "model.keras").is_file()

    mlflow_server.start()  # back much later: the run is RUNNING there, its process gone
    upload = [sys.executable, "-m", "segexp", "upload", str(tmp_path / "outputs" / "run")]
    first = subprocess.run(upload, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "uploaded" in first.stdout
    assert_complete(mlflow_server, tmp_path)
    again = subprocess.run(upload, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "nothing to upload" in again.stdout  # nothing is sent twice
    client, run = finished_run(mlflow_server)
    assert len(client.get_metric_history(run.info.run_id, "loss")) == EPOCHS


def test_upload_while_the_server_is_still_away_says_so_in_one_line(tmp_path):
    from conftest import free_port
    from segexp.tracking.spool import JOURNAL

    spool = tmp_path / "run" / "tracking_spool"
    spool.mkdir(parents=True)
    uri = f"http://127.0.0.1:{free_port()}"
    (spool / JOURNAL).write_text(json.dumps({"seq": 0, "kind": "header", "uri": uri, "run_id": "0" * 32}) + "\n"
                                 + json.dumps({"seq": 1, "kind": "metrics", "time": 0, "metrics": {"a": 1.0}}) + "\n")
    out = subprocess.run([sys.executable, "-m", "segexp", "upload", str(tmp_path / "run")], cwd=tmp_path, env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "MLflow server unreachable" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (spool / "sent.txt").exists()  # nothing marked as sent


def test_what_the_store_may_get_over_is_retried_and_what_it_will_not_is_skipped():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    from segexp.tracking.spool import transient

    assert transient(MlflowException("API request to http://127.0.0.1:1 failed with exception ConnectionError"))
    assert transient(ConnectionRefusedError()) and transient(TimeoutError())
    assert not transient(MlflowException("changed param", error_code=INVALID_PARAMETER_VALUE))
    assert not transient(FileNotFoundError("tracking_spool/files/000003/image.npy"))
    assert not transient(ValueError("unknown journal record kind"))


def dead_process_identity() -> str:
    """Returns the process identity of a process of this host that has ended."""
    from segexp.tracking.processes import process_identity

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    identity = process_identity(child.pid)
    child.wait()
    return identity


def spooled_run(tmp_path, empty_store, metrics: int, monkeypatch) -> tuple[str, str, Path]:
    """Returns (store URI, run id, spool directory) of a RUNNING run whose process died, and whose journal (written
    while its store was unreachable) holds `metrics` metric records and then its end, FINISHED."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the sender finds the store away at once

    from segexp.tracking.spool import Spool
    from segexp.tracking.tags import PROCESS_TAG

    uri = copy_store(empty_store, tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("torn"), tags={PROCESS_TAG: dead_process_identity()})
    spool = Spool("http://127.0.0.1:1", run.info.run_id, tmp_path / "spool", say=lambda _: None)  # nothing answers
    for step in range(metrics):
        spool.put("metrics", metrics={"loss": 1.0 / (step + 1)}, step=step)
    spool.put("status", status="FINISHED")
    spool.close(0)
    return uri, run.info.run_id, tmp_path / "spool"


@pytest.mark.parametrize("cut", [1, 9, -1])  # bytes of the last record left: its first, 9, all but its newline
def test_a_journal_torn_in_its_last_record_uploads_every_intact_one(tmp_path, empty_store, cut, monkeypatch):
    from mlflow import MlflowClient

    from segexp.tracking.spool import JOURNAL, Spool, upload

    uri, run_id, spool = spooled_run(tmp_path, empty_store, 21, monkeypatch)
    journal = spool / JOURNAL
    data = journal.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1  # where the status record starts
    journal.write_bytes(data[: last + cut] if cut > 0 else data[:cut])
    said = []
    assert upload(spool, load_model=None, uri=uri, say=said.append) == 21
    assert any("its last record was cut short" in line and "taken as never written" in line for line in said)
    run = MlflowClient(uri).get_run(run_id)
    assert len(MlflowClient(uri).get_metric_history(run_id, "loss")) == 21
    # a record is written once its newline is (as in a write-ahead log): the end, torn away, is not there, and the
    # run's process is gone, so the orphan rule ends it rather than leave it RUNNING
    assert run.info.status == "KILLED"
    Spool("http://127.0.0.1:1", run_id, spool, say=said.append).close(0)  # the run resumed: it appends after them
    assert journal.read_bytes() == data[:last]


def test_a_record_torn_inside_the_journal_is_one_line_naming_the_file_and_line(tmp_path, empty_store, monkeypatch):
    from segexp.errors import DataError
    from segexp.tracking.spool import JOURNAL, upload

    uri, _, spool = spooled_run(tmp_path, empty_store, 3, monkeypatch)
    lines = (spool / JOURNAL).read_text().splitlines(keepends=True)
    lines[2] = lines[2][:10] + "\n"
    (spool / JOURNAL).write_text("".join(lines))
    with pytest.raises(DataError, match=rf"{spool / JOURNAL}:3: this record is not JSON, and records follow it"):
        upload(spool, load_model=None, uri=uri, say=lambda _: None)
