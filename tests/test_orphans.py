"""Runs left RUNNING by a process that died without a handler are found and ended, on a real store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from conftest import copy_store
from segexp.tracking.processes import process_alive, process_identity

# the tracker a training job uses, opening a run and then stalling, as a job does mid-training
OPEN_AND_STALL = """
import sys, time
from segexp.tracking.trackers import MlflowTracker
tracker = MlflowTracker(sys.argv[1], "segexp", False)
context = tracker.run("doomed", {})  # kept referenced: a collected context would end the run
context.__enter__()
print(tracker.run_id, flush=True)
time.sleep(600)
"""


def orphan(uri: str) -> str:
    """Returns the id of a run whose process was SIGKILLed while it held the run open."""
    process = subprocess.Popen([sys.executable, "-c", OPEN_AND_STALL, uri], stdout=subprocess.PIPE, text=True)
    run_id = process.stdout.readline().strip()
    assert MlflowClient(uri).get_run(run_id).info.status == "RUNNING"
    os.kill(process.pid, signal.SIGKILL)  # no handler runs: the run stays RUNNING in the store
    process.wait(timeout=30)
    return run_id


def test_a_killed_process_leaves_a_run_that_the_next_segexp_use_ends_as_killed(tmp_path, capsys, empty_store):
    from segexp.tracking.trackers import MlflowTracker

    uri = copy_store(empty_store, tmp_path / "mlflow.db")
    dead = orphan(uri)
    client = MlflowClient(uri)
    alive = client.create_run(client.get_experiment_by_name("segexp").experiment_id, run_name="alive",
                              tags={"process": process_identity()})  # this very process: must be left alone
    foreign = client.create_run(client.get_experiment_by_name("segexp").experiment_id, run_name="elsewhere",
                                tags={"process": "another-host:boot:123:456"})
    assert client.get_run(dead).info.status == "RUNNING"

    MlflowTracker(uri, "segexp", False)  # any segexp command that opens the store
    run = client.get_run(dead)
    assert run.info.status == "KILLED" and "ended without closing the run" in run.data.tags["failure_reason"]
    assert f"doomed ({dead})" in capsys.readouterr().out
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    assert client.get_run(foreign.info.run_id).info.status == "RUNNING"


@pytest.mark.slow
def test_the_orphans_command_ends_them_and_lists_what_it_cannot_judge(tmp_path, empty_store):
    uri = copy_store(empty_store, tmp_path / "mlflow.db")
    dead = orphan(uri)
    client = MlflowClient(uri)
    client.create_run(client.get_experiment_by_name("segexp").experiment_id, run_name="elsewhere",
                      tags={"process": "another-host:boot:123:456"})
    out = subprocess.run([sys.executable, "-m", "segexp", "orphans", f"tracking.uri={uri}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"ended as KILLED: doomed ({dead})" in out.stdout
    assert "not judged from here: elsewhere" in out.stdout and "on another-host" in out.stdout
    assert client.get_run(dead).info.status == "KILLED"


def test_process_identity_tells_a_live_process_from_a_dead_or_reused_pid():
    me = process_identity()
    assert process_alive(me) is True
    host, boot, pid, start = me.rsplit(":", 3)
    assert process_alive(f"{host}:{boot}:{pid}:{int(start) + 1}") is False  # same pid, another process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = process_identity(child.pid)
    child.wait()
    time.sleep(0.1)
    assert process_alive(identity) is False
    assert process_alive("other-host:x:1:1") is None
