"""Multi-device training through tf.distribute, on two logical CPU devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import copy_store

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
# a depth-1 U-Net: the distribution around the model is under test, and each replica traces it (batch norm
# stays: its statistics are what a mirrored strategy has to keep in step)
SHALLOW = ("model.depth=1",)


@pytest.mark.slow
def test_mirrored_strategy_trains_over_two_logical_cpus(tmp_path, empty_store):
    copy_store(empty_store, tmp_path / "mlflow.db")
    script = f"""
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(__file__).parents[1])!r}]  # conftest, and bench/ it imports
from conftest import compose_config, TINY
from segexp.training.train import train
cfg = compose_config("train", *TINY, *{SHALLOW!r}, "data=synthetic", "data.size=48", "trainer.preview_slices=0",
                     "trainer.strategy=mirrored", "tracking.uri=sqlite:///{tmp_path}/mlflow.db", "tracking.log_model=false")
print("METRICS", train(cfg, {str(tmp_path / 'run')!r})["report_dice"])
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "METRICS" in out.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("segexp").experiment_id])
    assert run.data.tags["replicas"] == "2" and run.info.status == "FINISHED"


@pytest.mark.parametrize("tf_config, chief", [
    ('{"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 0}}', True),
    ('{"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 1}}', False),
    ('{"cluster": {"chief": ["h:0"], "worker": ["h:1"]}, "task": {"type": "worker", "index": 0}}', False),
    ('{"cluster": {"chief": ["h:0"], "worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}', True),
    ("", True),
])
def test_only_the_chief_worker_tracks_a_multi_worker_run(tf_config, chief):
    from segexp.training.runtime import is_chief

    assert is_chief("multi_worker_mirrored", tf_config) is chief
    assert is_chief("default", tf_config) is True


@pytest.mark.slow
def test_two_worker_processes_train_one_run_with_multi_worker_mirrored(tmp_path, empty_store):
    """Two real worker processes on loopback ports (TF_CONFIG), gradients all-reduced between them; only the
    chief (worker 0) writes the MLflow run."""
    from conftest import TINY, free_port

    copy_store(empty_store, tmp_path / "mlflow.db")

    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    jobs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        jobs.append(subprocess.Popen(
            [sys.executable, "-m", "segexp", "train", *TINY, *SHALLOW, "data=synthetic", "data.size=48",
             "trainer.epochs=2",
             "trainer.strategy=multi_worker_mirrored", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
             "tracking.log_model=false", f"hydra.run.dir={tmp_path}/worker{index}"],
            cwd=tmp_path, env={**ENV, "TF_CONFIG": tf_config}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True))
    outputs = [job.communicate(timeout=600)[0] for job in jobs]
    for job, output in zip(jobs, outputs):
        assert job.returncode == 0, output[-3000:]
    assert "tracking off" in outputs[1] and "tracking off" not in outputs[0]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("segexp").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["replicas"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1]
    assert all((tmp_path / f"worker{i}" / "model.keras").is_file() for i in range(2))
