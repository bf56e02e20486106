"""Sweeps end to end: `segexp train -m` in a subprocess gives one parent MLflow run with a child per job."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import SHALLOW, TINY
from segexp.experiments.sweeps import objective_metric, parent_status
from segexp.tracking.records import RunRecord

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
ENV.pop("MLFLOW_TRACKING_URI", None)
# what is under test is the sweep around the jobs, so they train the cheapest model to trace on small generated
# slices (scoring a 512x512 ISBI slice at every epoch and at the end costs each job seconds)
FAST = [*TINY, *SHALLOW, "data=synthetic", "data.size=48", "trainer.preview_slices=0", "tracking.log_model=false"]
SUMMARY = {"summary/children.csv", "summary/children.md", "summary/learning_curves.png"}


def sweep(tmp_path, *args: str, fast=FAST) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segexp", "train", "-m", *fast, *args], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=600)


def sweep_tree(tmp_path):
    """Returns (client, parent run, child runs oldest first), asserting the store holds nothing else."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("segexp").experiment_id],
                              order_by=["attributes.start_time ASC"])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r is not parent]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    return client, parent, children


def artifact_text(client, run, path: str, tmp_path) -> str:
    return Path(client.download_artifacts(run.info.run_id, path, str(tmp_path))).read_text()


def summary_table(client, parent, tmp_path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(artifact_text(client, parent, "summary/children.csv", tmp_path))))


def assert_summarizes(client, parent, children, stdout: str, tmp_path, cfg) -> None:
    """The parent holds the table (every child, failed ones too), the plot and the best finished child by
    cfg.objective; the terminal shows the table."""
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "summary")} == SUMMARY
    key, mode = objective_metric(cfg)
    rows = summary_table(client, parent, tmp_path)
    assert sorted(row["run_id"] for row in rows) == sorted(r.info.run_id for r in children)
    assert {"report_v_rand", "report_v_info", "report_dice", "report_accuracy", key} <= set(rows[0])
    finished = [r for r in children if r.info.status == "FINISHED"]
    best = (max if mode == "max" else min)(finished, key=lambda r: r.data.metrics[key])
    assert parent.data.tags["best_child_run_id"] == best.info.run_id
    assert parent.data.metrics[f"best_{cfg.objective}"] == pytest.approx(best.data.metrics[key])
    # the chosen child's unbiased report score sits beside the selection score that chose it
    assert parent.data.metrics["best_child_report_v_rand"] == pytest.approx(best.data.metrics["report_v_rand"])
    assert artifact_text(client, parent, "summary/children.md", tmp_path) in stdout


@pytest.mark.slow
def test_a_sequential_sweep_is_one_parent_with_a_child_per_job_and_a_failing_job_does_not_stop_the_rest(
        tmp_path, make_cfg, default_store):
    # one sweep for both (each sweep costs a TensorFlow import): jobs 0 and 2 report on slice 99 of 12, a
    # DataError at the split, before that job's own MLflow run starts; jobs 1 and 3 train
    sweep_dir = tmp_path / "outputs" / "multirun" / "day" / "time"
    sweep_dir.mkdir(parents=True)
    # a record left by an earlier sweep in the same directory must not adopt this sweep's jobs
    (sweep_dir / "sweep.json").write_text(json.dumps({"parent_run_id": "0" * 32, "swept_keys": ["model"]}))
    out = sweep(tmp_path, "optimizer.lr=1e-4,3e-4", "split.report=[99],[-1]", f"hydra.sweep.dir={sweep_dir}",
                "tracking.log_model=true", "tracking.register_as=membranes")
    # Hydra runs every job, then re-raises the first failure: exit 1 once the sweep is over
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Error executing job with overrides" in out.stderr and "split.report=[99]" in out.stderr

    client, parent, children = sweep_tree(tmp_path)  # every child names this sweep's parent
    assert sorted(r.info.run_name for r in children) == [
        "optimizer.lr=0.0001,split.report=[-1]", "optimizer.lr=0.0001,split.report=[99]",
        "optimizer.lr=0.0003,split.report=[-1]", "optimizer.lr=0.0003,split.report=[99]"]
    bad = [r for r in children if r.info.status == "FAILED"]
    good = [r for r in children if r.info.status == "FINISHED"]
    assert len(bad) == len(good) == 2
    assert sorted(r.data.params["optimizer.lr"] for r in good) == ["0.0001", "0.0003"]
    assert all(r.data.params["split.report.0"] == "-1" for r in good)
    assert sorted(r.data.tags["output_dir"][-2:] for r in good) == ["/1", "/3"]  # the jobs after a failure ran
    assert sorted(r.data.tags["output_dir"][-2:] for r in bad) == ["/0", "/2"]
    for run in bad:
        assert "split.report=[99]" in run.data.tags["overrides"].split()
        assert run.data.tags["failure_reason"].startswith("DataError: split.report=[99]")
    # each finished child's model is a version of the registered model; the best child's carries the alias "best"
    versions = client.search_model_versions("name = 'membranes'")
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in good)
    assert client.get_model_version_by_alias("membranes", "best").run_id == parent.data.tags["best_child_run_id"]
    # a failed job is listed, it does not fail the sweep
    assert parent.info.status == "FINISHED" and parent.info.run_name == "sweep optimizer.lr,split.report day/time"
    assert parent.data.tags["failed_children"] == "2"
    assert json.loads((sweep_dir / "sweep.json").read_text()) == {"parent_run_id": parent.info.run_id,
                                                                   "swept_keys": ["optimizer.lr", "split.report"]}
    assert parent.data.tags["sweep_dir"] == str(sweep_dir)
    assert {"optimizer.lr=1e-4,3e-4", "split.report=[99],[-1]"} <= set(parent.data.tags["overrides"].split())
    assert_summarizes(client, parent, children, out.stdout, tmp_path, make_cfg(*FAST))
    rows = {row["run_id"]: row for row in summary_table(client, parent, tmp_path)}
    assert all(rows[r.info.run_id]["status"] == "FAILED" and rows[r.info.run_id]["report_dice"] == "" for r in bad)
    assert all(float(rows[r.info.run_id]["report_dice"]) == pytest.approx(r.data.metrics["report_dice"])
               for r in good)
    assert "| FAILED | optimizer.lr=0.0001 split.report=[99] |" in out.stdout


@pytest.mark.slow
def test_parallel_sweep_children_reach_the_parent_from_worker_processes(tmp_path, make_cfg):
    # two worker processes writing one sqlite store at once, a job each (a worker process costs a TensorFlow
    # import, each further job in it seconds more; jobs run one after another in one process in the sequential
    # sweep)
    out = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=1e-4,2e-4")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "database is locked" not in out.stderr

    client, parent, children = sweep_tree(tmp_path)
    assert sorted(r.data.params["optimizer.lr"] for r in children) == ["0.0001", "0.0002"]
    assert len({r.data.tags["process"] for r in children}) == 2  # really in two processes; none lost or twice
    assert [r.info.status for r in [parent, *children]] == ["FINISHED"] * 3
    assert parent.data.tags["failed_children"] == "0"
    assert_summarizes(client, parent, children, out.stdout, tmp_path, make_cfg(*FAST))


def test_a_sweep_whose_parent_run_cannot_be_made_stops_before_any_job_with_one_line(tmp_path):
    # Hydra turns a callback's exception into a warning; before this the jobs ran anyway, each failing alone
    (tmp_path / "taken.db").mkdir()  # a directory where the sqlite file should go
    out = sweep(tmp_path, f"tracking.uri=sqlite:///{tmp_path / 'taken.db'}", "optimizer.lr=1e-3,2e-3",
                f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"segexp: error: {tmp_path / 'taken.db'}: MLflow store is not writable (Is a directory); "
        "set MLFLOW_TRACKING_URI or tracking.uri to a writable location")
    assert "Launching" not in out.stdout + out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "sweep" / "0").exists()


@pytest.mark.parametrize("overrides, expected", [
    (("objective=select_dice",), ("ckpt_select_dice", "max")),
    (("objective=select_loss",), ("ckpt_select_loss", "min")),
    (("objective=select_iou", "trainer.monitor=select_iou", "trainer.monitor_mode=min"), ("ckpt_select_iou", "min")),
])
def test_objective_direction_follows_the_monitor_else_the_name(make_cfg, overrides, expected):
    assert objective_metric(make_cfg(*overrides)) == expected


@pytest.mark.parametrize("statuses, interrupted, expected", [
    (["FINISHED", "FAILED"], False, "FINISHED"),  # a failed job is listed, it does not fail the sweep
    (["FINISHED", "KILLED"], False, "KILLED"),  # Ctrl-C in a job: Hydra goes on, but the sweep was interrupted
    (["FINISHED"], True, "KILLED"),
    ([], False, "FAILED"),  # the sweep stopped before any job reached MLflow
])
def test_parent_status(statuses, interrupted, expected):
    children = [RunRecord(str(i), status=s) for i, s in enumerate(statuses)]
    assert parent_status(children, interrupted) == expected


@pytest.mark.slow
def test_optuna_search_trials_are_children_and_the_study_reports_its_best(tmp_path, make_cfg, default_store):
    # quoted: the search space is a string for the sweeper, not a sweep of this command line
    # model.depth on the command line would be a fixed param, taken out of the search space: not here
    out = sweep(tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                "hydra.sweeper.params.loss='choice(bce,dice)'", "hydra.sweeper.params.aug='choice(light)'",
                fast=[f for f in FAST if not f.startswith("model.depth=")])
    assert out.returncode == 0, out.stderr[-3000:]
    client, parent, children = sweep_tree(tmp_path)
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    lrs = [float(r.data.params["optimizer.lr"]) for r in children]
    # sampled from the search space (log-uniform on [1e-4, 3e-3]): two draws, neither the config's default 1e-4
    default = make_cfg().optimizer.lr
    assert all(1e-4 <= lr <= 3e-3 and lr != default for lr in lrs) and len(set(lrs)) == 2, lrs
    (results,) = (tmp_path / "outputs" / "multirun").glob("*/*/optimization_results.yaml")
    text = results.read_text()
    assert "best_params" in text and "best_value" in text
    best = max(children, key=lambda r: r.data.metrics["ckpt_select_v_rand"])
    assert parent.data.tags["best_child_run_id"] == best.info.run_id


@pytest.mark.slow
def test_submitit_jobs_in_their_own_processes_reach_a_real_tracking_server(tmp_path, mlflow_server):
    """A real `mlflow server` on a free loopback port, and the submitit launcher running each job in a process of
    its own (as on a cluster, where a server is the store): structure checked through the server's REST API."""
    import json
    import urllib.request

    base = mlflow_server.uri
    out = sweep(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", f"tracking.uri={base}",
                "optimizer.lr=1e-4,1e-3")
    assert out.returncode == 0, out.stderr[-3000:]

    def api(path: str, body: dict) -> dict:
        request = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(request, timeout=10).read())

    exp = json.loads(urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=segexp",
                                            timeout=10).read())["experiment"]
    runs = api("runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
    tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs}
    parents = [rid for rid, t in tags.items() if "mlflow.parentRunId" not in t]
    assert len(parents) == 1 and len(runs) == 3
    children = [r for r in runs if tags[r["info"]["run_id"]].get("mlflow.parentRunId") == parents[0]]
    assert len(children) == 2 and all(r["info"]["status"] == "FINISHED" for r in children)
    (parent,) = [r for r in runs if r["info"]["run_id"] == parents[0]]
    assert parent["info"]["status"] == "FINISHED"
    params = [{p["key"]: p["value"] for p in r["data"].get("params", [])} for r in children]
    assert sorted(p["optimizer.lr"] for p in params) == ["0.0001", "0.001"]
    assert len({tags[r["info"]["run_id"]]["process"] for r in children}) == 2  # each job in a process of its own
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # nothing went to the local default store
    # the server and its one uvicorn worker, without MLflow's job runner and its huey consumers (server_env)
    import psutil

    workers = psutil.Process(mlflow_server.process.pid).children(recursive=True)
    assert len(workers) == 1, [" ".join(p.cmdline()) for p in workers if p.is_running()]


@pytest.mark.slow
def test_ray_launcher_runs_jobs_on_a_local_ray_instance(tmp_path):
    """The optional `.[ray]` extra (hydra-ray-launcher pins cloudpickle<3, which the joblib launcher's joblib
    refuses, so the test environment does not install it): where it is installed, a sweep runs its jobs as
    Ray tasks on a local Ray instance started by the launcher, into one parent run."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    out = sweep(tmp_path, "hydra/launcher=ray", "optimizer.lr=1e-4,1e-3")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Ray Launcher is launching 2 jobs" in out.stdout + out.stderr
    _, parent, children = sweep_tree(tmp_path)
    assert sorted(r.data.params["optimizer.lr"] for r in children) == ["0.0001", "0.001"]
    assert all(r.info.status == "FINISHED" for r in children) and parent.info.status == "FINISHED"


def test_a_child_is_named_by_the_swept_overrides_alone():
    from segexp.tracking.tags import run_name

    overrides = ["optimizer.lr=0.001", "debug=smoke", "model=unet", "hydra.job.chdir=false"]
    assert run_name(overrides, ["optimizer.lr", "model"]) == "optimizer.lr=0.001,model=unet"
    # a sweeper's own search space: nothing swept on the command line
    assert run_name(overrides, []) == "optimizer.lr=0.001,debug=smoke,model=unet"
    assert run_name(overrides) == "optimizer.lr=0.001,debug=smoke,model=unet" and run_name([]) == "default"


@pytest.mark.slow
def test_a_killed_sweep_resumes_into_the_same_parent_keeping_finished_jobs(tmp_path, default_store):
    import signal
    import time

    sweep_dir = tmp_path / "sweep"
    args = [sys.executable, "-m", "segexp", "train", "-m", *FAST, "trainer.epochs=3", "optimizer.lr=1e-3,2e-3,3e-3",
            f"hydra.sweep.dir={sweep_dir}"]
    driver_log = tmp_path / "driver.log"  # kept for the failure message: what the killed sweep had done
    with driver_log.open("w") as log:
        driver = subprocess.Popen(args, cwd=tmp_path, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    # the store exists before the driver starts (default_store): MlflowClient would create and migrate a missing
    # one in place, racing the driver's own creation (CI, 2026-12-06)
    client, finished = MlflowClient(default_store), []
    deadline = time.monotonic() + 400
    while not finished and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.5)  # kill the driver (no handler runs) once the first job has finished
        experiment = client.get_experiment_by_name("segexp")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        finished = [r for r in runs if r.info.status == "FINISHED"]
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)
    # polled, so two jobs may have finished between two looks; what matters is that some finished and some did not
    assert 1 <= len(finished) < 3, f"the kill did not fall between jobs:\n{driver_log.read_text()[-3000:]}"

    out = subprocess.run([sys.executable, "-m", "segexp", "train", "-m", f"resume={sweep_dir}"], cwd=tmp_path, env=ENV,
                         capture_output=True, text=True, timeout=600)
    told = f"killed sweep:\n{driver_log.read_text()[-3000:]}\nresume:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert out.returncode == 0, told
    assert "already finished" in out.stdout, told

    client, parent, children = sweep_tree(tmp_path)  # still one parent, one child per job
    assert parent.info.status == "FINISHED" and parent.data.tags["children"] == "3"
    assert sorted(r.data.params["optimizer.lr"] for r in children) == ["0.001", "0.002", "0.003"]
    assert all(r.info.status == "FINISHED" for r in children)
    for first in finished:  # the finished jobs were not trained again
        assert client.get_run(first.info.run_id).info.end_time == first.info.end_time
    rows = summary_table(client, parent, tmp_path)
    assert sorted(row["run_id"] for row in rows) == sorted(r.info.run_id for r in children)
    # compare sees the sweep's three recipes, the jobs run again after the kill with the one it kept
    from segexp.experiments.replicates import group_by_recipe
    from segexp.tracking.records import run_record

    assert sorted(group_by_recipe(map(run_record, children))) == ["optimizer.lr=0.001", "optimizer.lr=0.002", "optimizer.lr=0.003"]


PRUNED_SEARCH = """# @package _global_
# segexp's Optuna sweeper (as in hparams_search/optuna.yaml) over the epoch count (and one config group),
# with a pruner no score passes from epoch 2
defaults:
  - override /hydra/sweeper: optuna
  - override /hydra/sweeper/sampler: tpe
pruner:
  _target_: optuna.pruners.ThresholdPruner
  lower: 2.0
  n_warmup_steps: 1
hydra:
  sweeper:
    _target_: hydra_plugins.segexp_sweeper.pruning_optuna_sweeper.PruningOptunaSweeper
    direction: maximize
    study_name: epochs
    n_trials: 2
    sampler:
      seed: 42
    params:
      trainer.epochs: choice(1, 4)
      aug: choice(light)  # a config group: no MLflow param holds it, the resume reads the overrides tag
"""


@pytest.mark.slow
def test_optuna_prunes_trials_and_a_resumed_study_continues(tmp_path, default_store):
    """Jobs with 4 epochs report each epoch to their trial and the pruner (a threshold no score reaches, from
    epoch 2) stops them; 1-epoch jobs end before it may act (TPE's seeded start draws both, 4 then 1). Then the sweep
    is resumed with one more trial: the study continues from the sweep's MLflow runs and runs only that one."""
    search = tmp_path / "conf" / "hparams_search"
    search.mkdir(parents=True)
    (search / "epochs.yaml").write_text(PRUNED_SEARCH)
    sweep_dir = tmp_path / "study"
    out = sweep(tmp_path, f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "hparams_search=epochs",
                f"hydra.sweep.dir={sweep_dir}")
    assert out.returncode == 0, out.stderr[-3000:]
    study = list(csv.DictReader((sweep_dir / "optuna_trials.csv").open()))
    expected = {"4": "PRUNED", "1": "COMPLETE"}
    assert [row["state"] for row in study] == [expected[row["params_trainer.epochs"]] for row in study]
    n_pruned = sum(row["state"] == "PRUNED" for row in study)
    assert n_pruned == 1, study

    client, parent, children = sweep_tree(tmp_path)
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)  # pruned is not failed
    trials = {row["number"]: row for row in study}
    for run in children:
        trial = trials[run.data.params["optuna_trial"]]
        assert trial["params_trainer.epochs"] == run.data.params["trainer.epochs"]
        if trial["state"] == "PRUNED":
            assert run.data.tags["pruned"].startswith("at epoch 2: select_v_rand below the pruner's bar")
            assert run.data.metrics["epochs_run"] == 2
        else:
            assert "pruned" not in run.data.tags and run.data.metrics["epochs_run"] == 1
    assert parent.data.tags["pruned_children"] == str(n_pruned) and parent.data.tags["failed_children"] == "0"
    best = client.get_run(parent.data.tags["best_child_run_id"])
    assert "pruned" not in best.data.tags  # a pruned trial is never the sweep's best
    rows = summary_table(client, parent, tmp_path)
    assert sum(row["status"] == "PRUNED" for row in rows) == n_pruned
    assert f"2 runs, 0 not finished, {n_pruned} pruned" in out.stdout
    assert "optuna_trials.csv" in {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "summary")}

    again = subprocess.run([sys.executable, "-m", "segexp", "train", "-m", f"resume={sweep_dir}",
                            "hydra.sweeper.n_trials=3"], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 trials already done (from the sweep's MLflow runs); 1 to run" in again.stdout + again.stderr
    resumed = list(csv.DictReader((sweep_dir / "optuna_trials.csv").open()))
    assert [row["number"] for row in resumed] == ["0", "1", "2"]
    # the earlier trials, as they ended (MLflow orders them by start time, as they ran)
    assert [(r["params_trainer.epochs"], r["state"]) for r in resumed[:2]] == \
        [(r["params_trainer.epochs"], r["state"]) for r in study]
    _, parent_again, children_again = sweep_tree(tmp_path)
    assert parent_again.info.run_id == parent.info.run_id and parent_again.info.status == "FINISHED"
    (new,) = [r for r in children_again if r.info.run_id not in {c.info.run_id for c in children}]
    assert new.data.params["optuna_trial"] == "2" and (sweep_dir / "2").is_dir()
