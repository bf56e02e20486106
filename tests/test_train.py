"""End to end: real training on tiny configs against a real sqlite MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY, compose_config
from segexp.evaluate import evaluate
from segexp.train import prepare_data, train

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def runs_of(uri: str, experiment: str = "segexp"):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, (client.search_runs([exp.experiment_id]) if exp else [])


def test_smoke_training_is_fully_tracked(make_cfg, store, tmp_path):
    cfg = make_cfg(*TINY, "trainer.epochs=2", f"tracking.uri={store}")
    metrics = train(cfg, tmp_path / "run", ["debug=smoke"])

    scores = {"dice", "iou", "accuracy", "loss", "v_rand", "v_info"}
    assert {f"{role}_{k}" for role in ("select", "report") for k in scores} <= set(metrics)
    assert 0.0 <= metrics["report_dice"] <= 1.0
    client, runs = runs_of(store)
    (run,) = runs
    assert run.info.status == "FINISHED" and run.info.run_name == "debug=smoke"
    assert run.data.params["model.depth"] == "2" and run.data.params["trainer.crop_size"] == "32"
    assert run.data.tags["overrides"] == "debug=smoke" and "git_commit" in run.data.tags
    assert run.data.tags["device"].startswith(("CPU", "GPU")) and run.data.tags["version.keras"].startswith("3.")
    for name in ("select_dice", "select_v_rand", "select_v_info", "loss", "dice"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [0, 1], name
    # the report slices are scored once, at the end, on the chosen checkpoint: never per epoch
    assert not any(k.startswith("report_") for k in client.get_run(run.info.run_id).data.metrics if
                   len(client.get_metric_history(run.info.run_id, k)) > 1)
    assert run.data.metrics["ckpt_select_dice"] == pytest.approx(metrics["select_dice"], abs=1e-6)
    assert run.data.metrics["report_v_rand"] == pytest.approx(metrics["report_v_rand"], abs=1e-6)
    assert run.data.tags["split.select"] == "28" and run.data.tags["split.report"] == "29"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config", "images"} <= artifacts
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert len(images) >= 2  # one mask panel per epoch
    config_text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config/config.yaml")
    assert "crop_size: 32" in config_text
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert [m.source_run_id for m in models] == [run.info.run_id]

    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    # the one-pass selection scoring agrees with Keras' own evaluate (its compiled loss and metrics)
    parts, _ = prepare_data(cfg)
    x, y = np.stack(parts["select"].images), np.stack(parts["select"].masks)[..., None].astype(np.float32)
    keras_scores = model.evaluate(x, y, batch_size=1, return_dict=True, verbose=0)
    for name in ("loss", "accuracy", "dice", "iou"):
        assert metrics[f"select_{name}"] == pytest.approx(keras_scores[name], abs=1e-4), name
    # and the run's own report scores are what `segexp evaluate` says of its checkpoint
    evaluated = evaluate(compose_config("evaluate", f"ckpt={tmp_path / 'run'}", f"tracking.uri={store}"),
                         tmp_path / "eval")
    for name in ("v_rand", "v_info", "dice", "iou", "accuracy"):
        assert metrics[f"report_{name}"] == pytest.approx(evaluated[name], abs=1e-9), name
    slice_ = np.zeros((1, 50, 70, 1), np.float32)
    assert model.predict_on_batch(slice_).shape == (1, 50, 70, 1)
    reloaded = mlflow.keras.load_model(f"models:/{models[0].model_id}")
    np.testing.assert_allclose(reloaded.predict_on_batch(slice_), model.predict_on_batch(slice_), atol=1e-6)


def test_tracking_none_trains_on_a_folder_without_a_store(make_cfg, tmp_path, monkeypatch, folder_data):
    monkeypatch.chdir(tmp_path)
    cfg = make_cfg(*TINY, "data=folder", f"data.images={folder_data[0]}", f"data.masks={folder_data[1]}",
                   "tracking=none", "loss=weighted_bce", "aug=heavy", "split.select=[-2]", "split.report=[-1]")
    metrics = train(cfg, tmp_path / "run")
    assert np.isfinite(metrics["select_loss"]) and np.isfinite(metrics["report_loss"])
    assert not (tmp_path / "outputs" / "mlflow.db").exists()
    assert (tmp_path / "run" / "model.keras").exists() and (tmp_path / "run" / "last.keras").exists()


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segexp", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=600)


def test_cli_bad_input_is_one_line_before_any_run(tmp_path):
    out = run_cli("train", "debug=smoke", "data=folder", f"data.images={tmp_path / 'missing'}",
                  f"data.masks={tmp_path}", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"segexp: error: {tmp_path / 'missing'}: images directory does not exist; check data.images"]
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_cli_unwritable_output_directory_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    out = run_cli("train", "debug=smoke", f"hydra.run.dir={tmp_path / 'a_file' / 'run'}", cwd=tmp_path)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"segexp: error: {tmp_path / 'a_file' / 'run'}: output directory not writable")


def test_without_selection_slices_the_last_epoch_is_reported(make_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = make_cfg(*TINY, "data=synthetic", "data.size=48", "trainer.epochs=2", "tracking=none",
                   "split.select=[]", "trainer.checkpoint=last", "objective=train_minutes")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["checkpoint_epoch"] == 1.0 and np.isfinite(metrics["report_v_rand"])
    assert not any(k.startswith("select_") for k in metrics)  # nothing was selected, nothing claims to be
