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

from conftest import SHALLOW, TINY, compose_config
from segexp.commands.evaluate import evaluate
from segexp.training.build import build_model, build_training_state, prepare_data
from segexp.training.train import train

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def runs_of(uri: str, experiment: str = "segexp"):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, (client.search_runs([exp.experiment_id]) if exp else [])


@pytest.mark.slow
def test_smoke_training_is_fully_tracked(make_cfg, store, tmp_path):
    # the cheapest U-Net: what a run logs is under test, and the logged model is traced, saved and loaded again
    cfg = make_cfg(*TINY, *SHALLOW, "trainer.epochs=2", f"tracking.uri={store}", "tracking.system_metrics=0.5",
                   "tracking.log_model=true")
    metrics = train(cfg, tmp_path / "run", ["debug=smoke"])

    scores = {"dice", "iou", "accuracy", "loss", "v_rand", "v_info"}
    assert {f"{role}_{k}" for role in ("select", "report") for k in scores} <= set(metrics)
    assert 0.0 <= metrics["report_dice"] <= 1.0
    client, runs = runs_of(store)
    (run,) = runs
    assert run.info.status == "FINISHED" and run.info.run_name == "debug=smoke"
    assert run.data.params["model.depth"] == "1" and run.data.params["trainer.crop_size"] == "32"
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
    reloaded = mlflow.tensorflow.load_model(f"models:/{models[0].model_id}")
    np.testing.assert_allclose(reloaded.predict_on_batch(slice_), model.predict_on_batch(slice_), atol=1e-6)
    assert_mlflow_native(client, run, models[0], parts, cfg, tmp_path)


def assert_mlflow_native(client, run, logged_model, parts, cfg, tmp_path) -> None:
    """The run, read back from the store: data lineage, system metrics, a servable model, its card and the
    augmentation preview."""
    from PIL import Image

    from segexp.data.images import combined_digest

    inputs = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i
              for i in client.get_run(run.info.run_id).inputs.dataset_inputs}
    assert set(inputs) == {"train", "select", "report"}
    for role, dataset_input in inputs.items():
        tags = {t.key: t.value for t in dataset_input.tags}
        assert dataset_input.dataset.name == "isbi2012"
        assert tags["pixel_digest"] == combined_digest(parts[role].digests) == run.data.tags[f"split.{role}_digest"]
        assert dataset_input.dataset.digest == tags["pixel_digest"][:16]
        assert tags["slices"] == ",".join(parts[role].names)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)

    info = mlflow.models.get_model_info(f"models:/{logged_model.model_id}")
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, -1, -1, 1]
    example = mlflow.models.Model.load(f"models:/{logged_model.model_id}").load_input_example(
        mlflow.artifacts.download_artifacts(f"models:/{logged_model.model_id}", dst_path=str(tmp_path / "m")))
    assert example.shape == (1, 64, 64, 1) and example.dtype == np.float32
    served = mlflow.pyfunc.load_model(f"models:/{logged_model.model_id}").predict(example)
    assert np.asarray(served).shape == (1, 64, 64, 1)

    card = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/model_card.md")
    assert f"{run.data.metrics['report_v_rand']:.4f}" in card and "- report (1): 29" in card
    assert run.data.tags["data_digest"][:16] in card and cfg.model._target_ in card
    preview = Image.open(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/augmentation_preview.png"))
    crop = cfg.trainer.crop_size
    assert preview.size[1] == 2 * crop + 8 and preview.size[0] > 8 * crop  # 2 rows of 4 (image | mask) pairs


@pytest.mark.slow
def test_tracking_none_trains_on_a_folder_without_a_store(make_cfg, tmp_path, monkeypatch, folder_data):
    monkeypatch.chdir(tmp_path)
    cfg = make_cfg(*TINY, *SHALLOW, "data=folder", f"data.images={folder_data[0]}", f"data.masks={folder_data[1]}",
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
    cfg = make_cfg(*TINY, *SHALLOW, "data=synthetic", "data.size=48", "trainer.epochs=2", "tracking=none",
                   "split.select=[]", "trainer.checkpoint=last", "objective=train_minutes")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["checkpoint_epoch"] == 1.0 and np.isfinite(metrics["report_v_rand"])
    assert not any(k.startswith("select_") for k in metrics)  # nothing was selected, nothing claims to be


@pytest.mark.slow
def test_output_to_a_file_is_one_line_per_epoch_without_native_notices(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_TRACKING_URI")}
    log = tmp_path / "train.log"
    with open(log, "w") as out:  # stdout and stderr to a file, as under nohup, CI or a scheduler
        # as a user runs it (the model logged, default verbosity), on the cheapest data and model to trace; three
        # epochs show a line per epoch as well as ten did
        done = subprocess.run([sys.executable, "-m", "segexp", "train", *TINY[:1], "data=synthetic", "data.size=48",
                               "trainer.crop_size=32", *SHALLOW, "trainer.epochs=3",
                               f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    assert "\r" not in text and "\x1b[" not in text  # no progress bar redrawn in place, no colour codes
    epochs = [line for line in text.splitlines() if line.startswith("[segexp] epoch ")]
    assert [line.split(":")[0] for line in epochs] == [f"[segexp] epoch {i}/3" for i in range(1, 4)]
    assert all("select_v_rand" in line for line in epochs)
    assert len(text.splitlines()) <= 3 + 4, text  # a line per epoch, the store's set-up lines and the summary
    for noise in ("oneDNN", "cpu_feature_guard", "absl::InitializeLog", "without specifying model signature"):
        assert noise not in text
    assert text.rstrip().splitlines()[-1].startswith("[segexp] checkpoint epoch ")


@pytest.mark.slow
def test_tensorflow_notices_stay_when_the_user_sets_the_log_level():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}
    code = "from segexp.native_logs import import_tensorflow; import_tensorflow()"
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    env.pop("TF_CPP_MIN_LOG_LEVEL")
    hidden = subprocess.run([sys.executable, "-c", code + "; import sys; print('kept', file=sys.stderr)"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert "oneDNN custom operations" in shown.stderr
    assert "oneDNN" not in hidden.stderr and hidden.stderr.strip().endswith("kept")


@pytest.mark.slow
def test_reproduce_a_deterministic_run_gives_zero_difference_and_refuses_other_code(make_cfg, store, tmp_path):
    from segexp.errors import ConfigError
    from segexp.experiments.reproduce import reproduce
    from segexp.training.train import retrain

    cfg = make_cfg(*TINY, *SHALLOW, "trainer.epochs=2", "trainer.deterministic=true", f"tracking.uri={store}",
                   "tracking.log_model=false")
    train(cfg, tmp_path / "run", ["debug=smoke", *SHALLOW, "trainer.deterministic=true"])
    from tensorflow.python.framework import config as tf_config

    assert not tf_config.is_op_determinism_enabled()  # later runs and tests of this process are not held to it
    client, (run,) = runs_of(store)
    rows = reproduce(compose_config("reproduce", f"run={run.info.run_id}", f"tracking.uri={store}"),
                     tmp_path / "again", retrain)
    assert {r[0] for r in rows} >= {"report_v_rand", "report_dice", "ckpt_select_v_rand", "epochs_run"}
    assert all(delta == 0 for *_, delta in rows), rows
    (again,) = [r for r in runs_of(store)[1] if r.data.tags.get("reproduces") == run.info.run_id]
    assert again.info.run_name == run.info.run_name and again.info.status == "FINISHED"

    digest = run.data.tags["code_digest"]
    client.set_tag(run.info.run_id, "code_digest", "0" * 64)  # as if made by other code
    out = subprocess.run([sys.executable, "-m", "segexp", "reproduce", run.info.run_id, f"tracking.uri={store}"],
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert f"cannot reproduce run {run.info.run_id} here: code (digest 000000000000 then" in out.stderr
    client.set_tag(run.info.run_id, "code_digest", digest)
    client.set_tag(run.info.run_id, "version.numpy", "1.0.0")
    with pytest.raises(ConfigError, match=r"here: numpy 1.0.0 then, \d"):
        reproduce(compose_config("reproduce", f"run={run.info.run_id}", f"tracking.uri={store}"), tmp_path / "x", retrain)


def test_a_model_built_for_training_traces_its_train_step_once(make_cfg):
    """build_training_state leans on Keras' private Model._symbolic_build: without it TensorFlow traces the train
    step twice (the optimizer's and metrics' variables are made inside the first trace). This fails if Keras
    changes either way - the private method stops sparing the trace, or Keras builds them up front itself."""
    cfg = make_cfg(*TINY, *SHALLOW)
    rng = np.random.default_rng(0)
    batch = (rng.random((2, 16, 16, 1), np.float32), (rng.random((2, 16, 16, 1)) > 0.5).astype(np.float32))

    def traces(prebuilt: bool) -> int:
        keras.backend.clear_session()
        model = build_model(cfg, 1, 0, 1e-3, False)
        if prebuilt:
            build_training_state(model, batch)
        step, traced = model.train_step, []
        model.train_step = lambda data: traced.append(1) or step(data)  # runs once per trace, not per step
        for _ in range(3):
            model.train_on_batch(*batch)
        return len(traced)

    assert traces(prebuilt=False) == 2
    assert traces(prebuilt=True) == 1
