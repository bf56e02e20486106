"""Multi-device training through tf.distribute, on two logical CPU devices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_mirrored_strategy_trains_over_two_logical_cpus(tmp_path):
    script = f"""
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import compose_config, TINY
from segexp.train import train
cfg = compose_config("train", *TINY, "data=synthetic", "data.size=48", "trainer.preview_slices=0",
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
    from segexp.runtime import is_chief

    assert is_chief("multi_worker_mirrored", tf_config) is chief
    assert is_chief("default", tf_config) is True
