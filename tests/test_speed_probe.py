"""precision=auto / jit_compile=auto: a real timed probe of the real model, cached per machine and workload."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from conftest import SHALLOW, TINY
from segexp.checks import check_train
from segexp.errors import ConfigError
from segexp.training import speed_probe
from segexp.training.train import train


def test_the_fastest_setting_wins_only_by_a_clear_margin():
    settings = speed_probe.candidates("auto", "auto", gpu=False)
    assert settings == [("float32", False), ("float32", True), ("mixed_bfloat16", False), ("mixed_bfloat16", True)]
    speeds = {"float32": 10.0, "float32+xla": 10.5, "mixed_bfloat16": 14.0, "mixed_bfloat16+xla": None}
    assert speed_probe.choose(speeds, settings) == ("mixed_bfloat16", False)
    # 5% faster is within timing noise and not worth bf16's rounding: the baseline stays
    assert speed_probe.choose({**speeds, "mixed_bfloat16": 10.5}, settings) == ("float32", False)
    # a setting that failed (None) is never chosen, even when the baseline failed too
    assert speed_probe.choose({"float32": None, "float32+xla": None, "mixed_bfloat16": 3.0,
                               "mixed_bfloat16+xla": None}, settings) == ("mixed_bfloat16", False)
    # what the config fixes is not searched: only XLA is timed here, at bf16
    assert speed_probe.candidates("mixed_bfloat16", "auto", gpu=False) == [("mixed_bfloat16", False),
                                                                            ("mixed_bfloat16", True)]
    assert ("mixed_float16", False) in speed_probe.candidates("auto", False, gpu=True)


def test_jit_compile_takes_true_false_or_auto(make_cfg):
    for value in ("true", "false", "auto"):
        check_train(make_cfg(*TINY, f"trainer.jit_compile={value}"))
    with pytest.raises(ConfigError, match="trainer.jit_compile: must be true, false or auto, got fast"):
        check_train(make_cfg(*TINY, "trainer.jit_compile=fast"))


@pytest.mark.slow
def test_auto_probes_once_per_machine_and_tags_the_run(make_cfg, store, tmp_path, capsys):
    cache = tmp_path / "cache" / "speed_probe.json"
    # the cheapest U-Net to trace (bench.training.TINY_MODEL's): the probe's timing, caching and tagging are under
    # test, and each of the four settings (two XLA-compiled) builds and traces the model again
    overrides = (*TINY, *SHALLOW, "data=synthetic", "data.size=48", "trainer.epochs=1", f"tracking.uri={store}",
                 "trainer.precision=auto",
                 "trainer.jit_compile=auto", f"trainer.speed_cache={cache}", "tracking.log_model=false")
    # the first run as a user starts it: its whole output, TensorFlow's C++ logging on file descriptor 2 too
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_TRACKING_URI")}
    first = subprocess.run([sys.executable, "-m", "segexp", "train", *overrides, "run_name=first",
                            f"hydra.run.dir={tmp_path / 'first'}"], capture_output=True, text=True, timeout=600,
                           cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "timing float32, float32+xla, mixed_bfloat16, mixed_bfloat16+xla" in first.stdout
    output = first.stdout + first.stderr
    for notice in ("service.cc", "StreamExecutor", "Compiled cluster using XLA", "port.cc", "cpu_feature_guard",
                   "INFO mlflow", "Creating initial MLflow database tables", "alembic"):
        assert notice not in output, f"{notice!r} reached the user:\n{output[-3000:]}"
    (entry,) = json.loads(cache.read_text()).values()
    speeds = entry["images_per_s"]
    assert set(speeds) == {"float32", "float32+xla", "mixed_bfloat16", "mixed_bfloat16+xla"}
    assert speeds["float32"] > 0  # the baseline always runs on CPU
    expected = speed_probe.choose(speeds, speed_probe.candidates("auto", "auto", gpu=False))
    assert (entry["precision"], entry["jit_compile"]) == expected

    train(make_cfg(*overrides), tmp_path / "second", ["second"])
    assert "timing" not in capsys.readouterr().out  # the cache answered
    client = MlflowClient(store)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("segexp").experiment_id])}
    for name, source in (("first", "probe"), ("second", f"cache {cache}")):
        tags = runs[name].data.tags
        assert tags["precision"] == expected[0] and tags["jit_compile"] == str(expected[1]).lower()
        assert tags["speed_choice"].startswith(f"{source} (images/s: float32 "), tags["speed_choice"]


def test_a_damaged_cache_is_probed_again_and_rewritten(tmp_path):
    import keras
    import numpy as np

    def build(jit: bool):  # a one-layer model: the probe's logic, not a U-Net's speed, is under test
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse", jit_compile=jit)
        return model

    cache = tmp_path / "speed_probe.json"
    cache.write_text("{not json")
    printed: list[str] = []
    batch = (np.zeros((2, 4), np.float32), np.zeros((2, 1), np.float32))
    choice = speed_probe.resolve("float32", "auto", build, batch, {"model": "dense"}, cache, log=printed.append)
    assert printed == [f"timing float32, float32+xla for precision/jit_compile=auto (cached in {cache})"]
    (entry,) = json.loads(cache.read_text()).values()
    assert set(entry["images_per_s"]) == {"float32", "float32+xla"}
    assert (choice.precision, choice.jit_compile, choice.source) == (entry["precision"], entry["jit_compile"], "probe")
