"""Typed run records, read from a store written the way segexp wrote runs before the records existed: through
the plain MLflow client, every tag name spelled out as it was then. A tag renamed in tracking/tags.py makes
these old runs unreadable, and this test fail."""

from __future__ import annotations

import os
import socket

import pytest
from mlflow.tracking import MlflowClient

from conftest import copy_store
from segexp.experiments import replicates
from segexp.experiments.reproduce import environment_differences
from segexp.experiments.sweeps import best_child
from segexp.tracking.records import RunRecord
from segexp.tracking.store import end_orphaned_runs, find_run, find_runs, get_run, metric_history
from segexp.tracking.sweeps import child_runs, sweep_record

PROVENANCE = {"code_digest": "ab" * 32, "git_commit": "c0ffee" * 6 + "abcd", "git_dirty": "False",
              "version.keras": "3.0.0", "version.tensorflow": "2.0.0", "segexp_version": "0.1.0", "hostname": "h1"}


@pytest.fixture
def old_store(tmp_path, empty_store):
    """Returns (uri, {name: run id}) of a sweep of four jobs (one pruned, one failed, one resumed), its parent's
    summary, a comparison run and a run whose process died while it was RUNNING."""
    uri = copy_store(empty_store, tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    experiment = client.create_experiment("segexp", artifact_location=(tmp_path / "artifacts").as_uri())
    ids = {}
    parent = client.create_run(experiment, run_name="sweep optimizer.lr", start_time=1_000, tags={
        **PROVENANCE, "overrides": "optimizer.lr=1e-3,1e-2 trainer.seed=1,2", "sweep_dir": str(tmp_path / "sweep")})
    ids["parent"] = parent.info.run_id
    jobs = [("0.001", "1", "FINISHED", {}), ("0.01", "1", "FINISHED", {"resumed_from_epoch": "3"}),
            ("0.01", "2", "FINISHED", {"pruned": "epoch 1"}), ("0.001", "2", "FAILED", {"failure_reason": "boom"})]
    for i, (lr, seed, status, extra) in enumerate(jobs):
        (tmp_path / f"job{i}").mkdir()
        run = client.create_run(experiment, run_name=f"optimizer.lr={lr}", start_time=2_000 + i, tags={
            **PROVENANCE, "mlflow.parentRunId": ids["parent"], "overrides": f"optimizer.lr={lr} trainer.seed={seed}",
            "output_dir": str(tmp_path / f"job{i}"), "precision": "float32", **extra})
        client.log_param(run.info.run_id, "trainer.seed", seed)
        client.log_metric(run.info.run_id, "report_v_rand", 0.9 + i / 100)
        for step, value in ((1, 0.6), (0, 0.5)):
            client.log_metric(run.info.run_id, "select_dice", value, step=step)
        client.set_terminated(run.info.run_id, status)
        ids[f"job{i}"] = run.info.run_id
    for key, value in {"objective": "report_v_rand (max)", "children": "4", "failed_children": "1",
                       "pruned_children": "1", "best_child_run_id": ids["job1"],
                       "best_child_run_name": "optimizer.lr=0.01"}.items():
        client.set_tag(ids["parent"], key, value)
    client.set_terminated(ids["parent"], "FINISHED")
    comparison = client.create_run(experiment, run_name="compare a vs b", start_time=3_000, tags={
        "compared_runs": f"{ids['job0']},{ids['job1']}", "compare.A": "a (x)", "mlflow.note.content": "B beats A"})
    ids["comparison"] = comparison.info.run_id
    client.set_terminated(ids["comparison"], "FINISHED")
    boot_and_pid = f"{open('/proc/sys/kernel/random/boot_id').read().strip()}:{os.getpid()}"
    orphan = client.create_run(experiment, run_name="doomed", start_time=4_000, tags={  # this pid, another start
        "process": f"{socket.gethostname()}:{boot_and_pid}:0"})
    ids["orphan"] = orphan.info.run_id
    return uri, ids


def test_a_sweep_written_before_the_records_reads_back_as_typed_records(old_store, tmp_path):
    uri, ids = old_store
    sweep = sweep_record(uri, ids["parent"])
    assert sweep.parent.best_child_id == ids["job1"] and sweep.parent.best_child_name == "optimizer.lr=0.01"
    assert sweep.parent.failed_children == 1 and sweep.parent.parent_id is None
    assert [r.run_id for r in sweep.children] == [ids[f"job{i}"] for i in range(4)]  # oldest first
    assert [r.run_id for r in sweep.finished] == [ids[f"job{i}"] for i in range(3)]
    first, resumed, pruned, failed = sweep.children
    assert first.parent_id == ids["parent"] and first.name == "optimizer.lr=0.001" and first.status == "FINISHED"
    assert first.overrides == ["optimizer.lr=0.001", "trainer.seed=1"]
    assert first.output_dir == str(tmp_path / "job0") and first.params == {"trainer.seed": "1"}
    assert first.metrics == {"report_v_rand": 0.9, "select_dice": 0.6}  # the last step's value
    assert first.code_digest == "ab" * 32 and first.git_commit.startswith("c0ffee") and first.git_dirty is False
    assert first.versions == {"keras": "3.0.0", "tensorflow": "2.0.0"} and first.precision == "float32"
    assert first.hostname == "h1" and first.start_time == 2_000 and first.end_time >= first.start_time
    assert (first.resumed_from_epoch, resumed.resumed_from_epoch) == (None, 3)
    assert [r.pruned for r in sweep.children] == [False, False, True, False]
    assert failed.failure_reason == "boom" and first.failure_reason == ""
    assert child_runs(uri, ids["parent"]) == list(sweep.children)
    assert metric_history(uri, ids["job0"], "select_dice") == [(0, 0.5), (1, 0.6)]

    # what the experiments read from them
    assert best_child(sweep.children, "report_v_rand", "max").run_id == ids["job1"]  # the pruned one scored higher
    assert sorted(replicates.group_by_recipe(sweep.finished)) == ["optimizer.lr=0.001", "optimizer.lr=0.01"]
    assert [replicates.replicate_key(r) for r in sweep.finished] == [("seed", "1"), ("seed", "1"), ("seed", "2")]
    here = RunRecord("", tags={**PROVENANCE, "version.keras": "3.1.0"})
    assert environment_differences(first, here) == ["keras 3.0.0 then, 3.1.0 here"]
    assert environment_differences(RunRecord("x"), here)[0].startswith("code (the run records no code digest")

    # found by what a user names: a run folder, a run id; by folder or name in an experiment
    assert find_run(uri, str(tmp_path / "job2")).run_id == ids["job2"]
    assert find_run(uri, ids["comparison"]).note == "B beats A"
    assert [r.run_id for r in find_runs(uri, "segexp", output_dir=tmp_path / "job3")] == [ids["job3"]]
    assert [r.run_id for r in find_runs(uri, "segexp", run_name="doomed")] == [ids["orphan"]]


def test_an_orphan_written_before_the_records_is_ended_and_returned_as_a_record(old_store):
    uri, ids = old_store
    ended, unknown = end_orphaned_runs(uri)
    assert [r.run_id for r in ended] == [ids["orphan"]] and ended[0].name == "doomed" and unknown == []
    after = get_run(uri, ids["orphan"])
    assert after.status == "KILLED" and "ended without closing the run" in after.failure_reason
