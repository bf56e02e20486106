"""predict and evaluate on a real checkpoint: odd-sized RGB JPEGs, ISBI scores, MLflow linkage."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from conftest import SHALLOW, TINY, cli_errors, compose_config, copy_store, write_blob_pairs
from segexp.errors import ConfigError
from segexp.commands.evaluate import evaluate
from segexp.commands.predict import predict
from segexp.training.train import train

SIZES = [(45, 61), (70, 38), (33, 90), (64, 64), (50, 50)]


pytestmark = pytest.mark.xdist_group("test_predict")  # one worker builds the module fixture once


@pytest.fixture(scope="module")
def trained(tmp_path_factory, empty_store):
    """Returns (root, checkpoint, store uri) of a tiny RGB model trained on odd-sized JPEGs."""
    root = tmp_path_factory.mktemp("rgb")
    images, masks = write_blob_pairs(root, SIZES, rgb=True, suffix=".jpg")
    store = copy_store(empty_store, root / "mlflow.db")
    cfg = compose_config("train", *TINY, *SHALLOW, "data=folder", f"data.images={images}", f"data.masks={masks}",
                         "split.select=[-3]", "split.report=[-2,-1]", f"tracking.uri={store}", "tracking.log_model=false")
    train(cfg, root / "run")
    return root, root / "run" / "model.keras", store


def test_predict_writes_full_size_maps_for_odd_rgb_jpegs(trained, tmp_path):
    root, checkpoint, _ = trained
    cfg = compose_config("predict", f"ckpt={checkpoint}", f"input={root / 'images'}", f"output={tmp_path}",
                         "save_overlay=true", "inference.tile=32", "inference.overlap=8")
    written = predict(cfg)
    assert [p.name for p in written] == [f"s{i}.png" for i in range(len(SIZES))]
    for i, (h, w) in enumerate(SIZES):
        prob = np.asarray(Image.open(tmp_path / f"s{i}.png"))
        assert prob.shape == (h, w) and prob.dtype == np.uint8
        mask = np.asarray(Image.open(tmp_path / f"s{i}_mask.png"))
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, prob >= 128)  # mask is the probability thresholded at 0.5
        assert np.asarray(Image.open(tmp_path / f"s{i}_overlay.png")).shape == (h, w, 3)


def test_predict_with_tta_accepts_a_run_directory(trained, tmp_path):
    root, checkpoint, _ = trained
    cfg = compose_config("predict", f"ckpt={checkpoint.parent}", f"input={root / 'images' / 's1.jpg'}",
                         f"output={tmp_path}", "inference.tta=true", "save_mask=false")
    (path,) = predict(cfg)
    assert np.asarray(Image.open(path)).shape == SIZES[1]


def training_run(store: str, checkpoint: Path):
    """Returns the one MLflow run that trained `checkpoint` (found by its tag, whatever else the store holds)."""
    client = MlflowClient(store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments, f"tags.checkpoint = '{checkpoint.resolve()}'")
    return run


def evaluate_cfg(checkpoint, store, *overrides):
    return compose_config("evaluate", f"ckpt={checkpoint}", f"tracking.uri={store}", "inference.tile=32",
                          "inference.overlap=8", *overrides)


def test_evaluate_scores_the_runs_report_slices_and_logs_into_the_training_run(trained, tmp_path, monkeypatch):
    root, checkpoint, store = trained
    monkeypatch.chdir(tmp_path)
    # no data= and no slices=: the run's own data (its config.yaml) and its report slices (split.json)
    metrics = evaluate(evaluate_cfg(checkpoint.parent, store), tmp_path / "eval")
    assert set(metrics) >= {"v_rand", "v_info", "dice", "iou", "accuracy", "pixel_error"}
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("v_rand", "v_info", "dice", "accuracy"))
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["slices"] == ["s3", "s4"] and written["slices_status"] == "report"
    assert {k: written[k] for k in metrics} == pytest.approx(metrics)
    run = training_run(store, checkpoint)  # evaluate logs into the run that trained the checkpoint
    assert run.info.status == "FINISHED"
    assert run.data.metrics["eval_v_rand"] == pytest.approx(metrics["v_rand"])
    assert run.data.tags["evaluated_slices"] == "s3,s4" and run.data.tags["evaluated_slices_status"] == "report"
    # the same slices named by position in another copy of the data are recognised by their pixels
    again = evaluate(evaluate_cfg(checkpoint, store, "data=folder", f"data.images={root / 'images'}",
                                  f"data.masks={root / 'masks'}", "slices=[3,4]"), tmp_path / "again")
    assert again == pytest.approx(metrics)


@pytest.mark.parametrize("slices, seen", [("[0]", r"s0 \(train\)"), ("[2,3]", r"s2 \(select\)")])
def test_evaluate_refuses_slices_the_checkpoint_trained_or_was_selected_on(trained, tmp_path, slices, seen):
    _, checkpoint, store = trained
    with pytest.raises(ConfigError, match=rf"slices={re.escape(slices.replace(',', ', '))}: {seen} trained or selected"):
        evaluate(evaluate_cfg(checkpoint, store, f"slices={slices}"), tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_evaluate_scores_seen_slices_only_when_allowed_and_keeps_them_apart(trained, tmp_path, monkeypatch):
    _, checkpoint, store = trained
    monkeypatch.chdir(tmp_path)
    metrics = evaluate(evaluate_cfg(checkpoint, store, "slices=[0,1]", "allow_seen=true"), tmp_path / "eval")
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["slices_status"] == "seen"
    run = training_run(store, checkpoint)
    assert run.data.metrics["eval_seen_v_rand"] == pytest.approx(metrics["v_rand"])


def test_evaluate_on_other_data_scores_every_slice_the_checkpoint_never_saw(trained, tmp_path):
    root, checkpoint, store = trained
    images, masks = write_blob_pairs(tmp_path / "other", [(30, 30), (40, 36)])
    shutil.copy(root / "images" / "s0.jpg", images / "t0.jpg")  # a training slice hidden under a new name
    shutil.copy(root / "masks" / "s0.png", masks / "t0.png")
    evaluate(evaluate_cfg(checkpoint, store, "data=folder", f"data.images={images}", f"data.masks={masks}"),
             tmp_path / "eval")
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["slices"] == ["s0", "s1"] and written["slices_status"] == "unseen"
    with pytest.raises(ConfigError, match=r"t0 \(train\) trained or selected the checkpoint"):
        evaluate(evaluate_cfg(checkpoint, store, "data=folder", f"data.images={images}", f"data.masks={masks}",
                              "slices=[2]"), tmp_path / "eval2")


def test_evaluate_of_a_checkpoint_without_its_run_folder_needs_explicit_slices(trained, tmp_path):
    root, checkpoint, store = trained
    bare = tmp_path / "bare.keras"
    shutil.copy(checkpoint, bare)
    data = ["data=folder", f"data.images={root / 'images'}", f"data.masks={root / 'masks'}"]
    with pytest.raises(ConfigError, match=r"no split\.json beside the checkpoint"):
        evaluate(evaluate_cfg(bare, store, *data), tmp_path / "eval")
    evaluate(evaluate_cfg(bare, store, *data, "slices=[-1]", "allow_seen=true"), tmp_path / "eval")
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["slices_status"] == "unknown"


def test_unknown_checkpoint_is_one_clear_error(trained, tmp_path):
    root, _, _ = trained
    cfg = compose_config("predict", f"ckpt={tmp_path / 'nope.keras'}", f"input={root / 'images'}", f"output={tmp_path}")
    with pytest.raises(ConfigError, match=r"nope\.keras: no model\.keras there"):
        predict(cfg)


def test_a_stage_the_checkpoint_cannot_take_is_refused_in_one_line_before_tensorflow_loads(trained, tmp_path):
    root, checkpoint, _ = trained
    cases = {  # command line -> what the one line says
        ("predict", f"ckpt={checkpoint.parent}", f"input={root / 'images'}", f"output={tmp_path / 'p'}",
         "postprocess=mutex_watershed"): "postprocess=mutex_watershed partitions affinities, but this model predicts",
        ("evaluate", f"ckpt={checkpoint.parent}", "tracking=none", "postprocess=mutex_watershed"):
            "postprocess=mutex_watershed partitions affinities, but this model predicts",
    }
    for (argv, message), (code, err, tensorflow) in zip(cases.items(), cli_errors(tmp_path, [list(c) for c in cases])):
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, (argv, err)
        assert not tensorflow, argv
    assert not (tmp_path / "p").exists()


def test_a_model_trained_on_resized_slices_predicts_at_that_size(trained, tmp_path, capsys):
    root, checkpoint, _ = trained
    run = tmp_path / "resized_run"  # a run directory whose training config says data.resize
    run.mkdir()
    (run / "model.keras").write_bytes(checkpoint.read_bytes())
    (run / "config.yaml").write_text("data:\n  resize: [24, 32]\n")
    image = root / "images" / "s2.jpg"
    predict(compose_config("predict", f"ckpt={run}", f"input={image}", f"output={tmp_path / 'auto'}"))
    assert "predicting at 24x32" in capsys.readouterr().out
    predict(compose_config("predict", f"ckpt={checkpoint}", f"input={image}", f"output={tmp_path / 'explicit'}",
                           "inference.resize=[24,32]"))
    predict(compose_config("predict", f"ckpt={checkpoint}", f"input={image}", f"output={tmp_path / 'native'}"))
    auto, explicit, native = (np.asarray(Image.open(tmp_path / d / "s2.png")) for d in ("auto", "explicit", "native"))
    assert auto.shape == native.shape == SIZES[2]  # back at the image's own size
    assert np.array_equal(auto, explicit) and not np.array_equal(auto, native)


def large_rgb_image(height: int = 700, width: int = 900) -> np.ndarray:
    """Returns uint8 (height, width, 3) blobs on a ramp: structure at every scale the tiles cut through."""
    rows, cols = np.mgrid[0:height, 0:width]
    blobs = np.sin(rows / 17.0) * np.cos(cols / 23.0) + 0.5 * np.sin((rows + 2 * cols) / 41.0)
    gray = (blobs - blobs.min()) / np.ptp(blobs)
    return (np.stack([gray, gray[::-1], np.fliplr(gray)], axis=-1) * 255).astype(np.uint8)


def test_a_large_image_streamed_to_zarr_is_the_in_memory_prediction(trained, tmp_path, capsys):
    """700 x 900 (no multiple of the 128-pixel tile) from a chunked Zarr array: output_format=auto streams it once a
    slice passes stream_megapixels, band by band into Zarr, and the map equals the whole-image prediction's."""
    import zarr

    from segexp.data.images import to_channels, to_unit_float
    from segexp.inference.predictor import load_source
    from segexp.tracking.references import resolve_model_source

    _, checkpoint, _ = trained
    image = large_rgb_image()
    zarr.create_array(store=str(tmp_path / "big.zarr"), data=image, chunks=(128, 128, 3))
    tiles = ["inference.tile=128", "inference.overlap=16"]
    (group,) = predict(compose_config("predict", f"ckpt={checkpoint}", f"input={tmp_path / 'big.zarr'}",
                                      f"output={tmp_path / 'out'}", "stream_megapixels=0.5", *tiles))
    assert "output_format=auto: " in capsys.readouterr().out and group == tmp_path / "out" / "big.zarr"
    stored = zarr.open_group(str(group), mode="r")
    streamed, mask = stored["probability"][:], stored["mask"][:]
    assert streamed.shape == mask.shape == image.shape[:2] and streamed.dtype == np.float32
    assert stored["probability"].chunks == (128, 128)

    cfg = compose_config("predict", f"ckpt={checkpoint}", "input=x", "output=y", *tiles)
    in_memory = load_source(resolve_model_source(str(checkpoint)), cfg.inference).predict(
        to_channels(to_unit_float(image), 3))
    np.testing.assert_allclose(streamed, in_memory, rtol=0, atol=1e-6)
    assert np.ptp(in_memory) > 0.01  # a map with something in it, not a constant both paths agree on
    assert np.array_equal(mask == 255, streamed >= 0.5)

    # the same array below stream_megapixels: in memory, one PNG named as the array
    (png,) = predict(compose_config("predict", f"ckpt={checkpoint}", f"input={tmp_path / 'big.zarr'}",
                                    f"output={tmp_path / 'png'}", *tiles))
    assert png.name == "big.png"
    assert np.abs(np.asarray(Image.open(png)).astype(int) - np.round(in_memory * 255)).max() <= 1


def test_what_a_stream_cannot_do_is_refused_in_one_line_before_any_tile(trained, tmp_path):
    from segexp.__main__ import check_command_line
    from segexp.errors import DataError

    import tifffile

    root, checkpoint, _ = trained
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, large_rgb_image(64, 80))
    base = [f"ckpt={checkpoint}", f"input={image}", f"output={tmp_path / 'out'}", "output_format=zarr"]
    with pytest.raises(ConfigError, match=r"^output_format=zarr: postprocess=watershed needs the whole image .* "
                                          r"set postprocess=none"):
        check_command_line("predict", [*base, "postprocess=watershed"])
    with pytest.raises(ConfigError, match=r"^stream_megapixels: must be > 0"):
        check_command_line("predict", [*base, "stream_megapixels=0"])
    with pytest.raises(ConfigError, match=r"^output_format=zarr: inference.tta=true .* set inference.tta=false"):
        predict(compose_config("predict", *base, "inference.tta=true"))
    with pytest.raises(DataError, match=r"s0.jpg: output_format=zarr reads a TIFF .* set output_format=png"):
        predict(compose_config("predict", *base[:1], f"input={root / 'images' / 's0.jpg'}", *base[2:]))
    import zarr

    zarr.create_array(store=str(tmp_path / "x.zarr"), data=large_rgb_image(64, 80))
    with pytest.raises(ConfigError, match=r"^output=.*x.zarr would overwrite the input"):
        predict(compose_config("predict", base[0], f"input={tmp_path / 'x.zarr'}", f"output={tmp_path}",
                               "output_format=zarr"))
    assert not (tmp_path / "out").exists()


def test_at_size_feeds_the_model_the_resized_image_and_returns_the_original_size():
    from segexp.inference.predictor import at_size

    seen = []

    def model_like(image):
        seen.append(image.shape)
        return np.full(image.shape[:2], 0.25, np.float32)

    prob = at_size(model_like, [16, 8])(np.zeros((45, 61, 3), np.float32))
    assert seen == [(16, 8, 3)] and prob.shape == (45, 61) and np.allclose(prob, 0.25)
    assert at_size(model_like, [16, 8])(np.zeros((45, 61, 1), np.float32)).shape == (45, 61)
    assert seen[-1] == (16, 8, 1)  # cv2 drops a single channel; it is put back


def test_bad_inference_resize_is_one_clear_error(trained, tmp_path):
    root, checkpoint, _ = trained
    cfg = compose_config("predict", f"ckpt={checkpoint}", f"input={root / 'images'}", f"output={tmp_path}",
                         "inference.resize=[0,32]")
    with pytest.raises(ConfigError, match=r"inference\.resize: must be null or \[height, width\]"):
        predict(cfg)


def test_a_split_record_without_pixel_digests_proves_nothing(folder_data):
    from segexp.data.datasets import load_folder
    from segexp.data.splits import split, split_record
    from segexp.evaluation.slices import choose_slices

    data = load_folder(*map(str, folder_data))
    parts = split(data, [-2], [-1])
    record = split_record({role: dataclasses.replace(part, digests=None) for role, part in parts.items()})
    with pytest.raises(ConfigError, match="has no pixel digests"):
        choose_slices(data, record, None, allow_seen=False, ckpt="run")
    assert choose_slices(data, split_record(parts), None, allow_seen=False, ckpt="run") == ([5], "report")
    # the run's own data must still hold every recorded slice: a changed file is not silently "unseen"
    changed = dataclasses.replace(data, digests=["x", *data.digests[1:]])
    with pytest.raises(ConfigError, match="1 slices of the run's split.json are not in data"):
        choose_slices(changed, split_record(parts), None, allow_seen=False, ckpt="run", same_data=True)


def test_evaluate_takes_the_runs_data_at_the_labels_resolution(tmp_path):
    from segexp.evaluation.slices import data_to_score
    from segexp.rundir import RunDir

    run = RunDir(tmp_path)
    run.write_config(compose_config("train", "experiment=seed_replica"))  # trains on slices resized to 256
    data = data_to_score(compose_config("evaluate", f"ckpt={tmp_path}"), run)
    assert data.name == "isbi2012" and {image.shape for image in data.images} == {(512, 512, 1)}


@pytest.mark.parametrize("fmt, suffix, size", [("onnx", ".onnx", None), ("saved_model", "", None),
                                                ("litert", ".tflite", [32, 40])])
def test_export_runs_the_exported_model_on_a_real_slice_within_tolerance(trained, tmp_path, fmt, suffix, size,
                                                                         capsys):
    from segexp.commands.export import export, exported_runner

    root, _, _ = trained
    output = tmp_path / f"model{suffix}"
    overrides = [f"ckpt={root / 'run'}", f"format={fmt}", f"output={output}",
                 *([f"size=[{size[0]},{size[1]}]"] if size else [])]
    environment = dict(os.environ)
    difference = export(compose_config("export", *overrides))
    assert output.exists() and difference <= 1e-4
    assert dict(os.environ) == environment  # tf2onnx sets TF_CPP_MIN_LOG_LEVEL=3 there: not for what runs next
    line = capsys.readouterr().out
    assert f"as {fmt}" in line and "largest absolute difference from Keras" in line
    # the file serves other inputs too: any size unless fixed, 3 channels as trained
    batch = np.random.default_rng(1).random((1, *(size or [37, 53]), 3)).astype(np.float32)
    import keras

    expected = keras.saving.load_model(root / "run" / "model.keras").predict_on_batch(batch)
    assert np.abs(exported_runner(fmt, output)(batch) - expected).max() <= 1e-4


def test_export_refuses_an_unknown_format_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "segexp", "export", f"ckpt={tmp_path}", "format=tflite",
                          f"output={tmp_path / 'x'}"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "format" in out.stderr and "onnx" in out.stderr


def test_export_bioimageio_writes_a_package_bioimageio_core_validates_offline(trained, tmp_path, monkeypatch, capsys):
    import socket
    import zipfile

    import yaml
    from segexp.commands.export import export

    root, _, _ = trained
    attempts = []

    def offline(sock, address):  # the package names no URL: validating it must not reach for the network
        attempts.append(address)
        raise OSError(f"test: no network ({address})")
    monkeypatch.setattr(socket.socket, "connect", offline)
    package = tmp_path / "model.zip"
    environment = dict(os.environ)
    checks = export(compose_config("export", f"ckpt={root / 'run'}", "format=bioimageio", f"output={package}"))
    assert {c.weight_format: c.passed for c in checks} == {"onnx": True, "tensorflow_saved_model_bundle": True}
    assert attempts == []
    # bioimageio.core's test sets TF_ENABLE_ONEDNN_OPTS=0, which the processes started after it must not inherit
    assert dict(os.environ) == environment
    out = capsys.readouterr().out
    assert "with onnx weights: passed" in out and "with tensorflow_saved_model_bundle weights: passed" in out
    with zipfile.ZipFile(package) as archive:
        assert set(archive.namelist()) == {"rdf.yaml", "README.md", "cover.png", "test_input.npy", "test_output.npy",
                                           "weights.onnx", "tf_saved_model.zip"}
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        test_input = np.load(io.BytesIO(archive.read("test_input.npy")))
    # the test input is the run's first report slice (s3) as its JPEG decodes, 8-bit, scaled by 1/255 in the package
    assert test_input.dtype == np.uint8 and test_input.shape == (1, *SIZES[3], 3)
    assert np.array_equal(test_input[0], np.asarray(Image.open(root / "images" / "s3.jpg")))
    assert rdf["inputs"][0]["preprocessing"][1] == {"id": "scale_linear", "kwargs": {"gain": 1 / 255}}
    assert rdf["outputs"][0]["axes"][-1]["channel_names"] == ["foreground"]
    assert rdf["cite"][0]["doi"] == "10.1007/978-3-319-24574-4_28"
    assert rdf["config"]["segexp"]["run_id"] == training_run(trained[2], trained[1]).info.run_id
    assert "report slices" in rdf["description"] and "V_rand" in rdf["description"]


@pytest.mark.parametrize("train_overrides, export_overrides, message", [
    ([], ["output=package"], r"writes one zip package: output=package must end in \.zip"),
    (None, [], r"has no run folder \(config.yaml, split.json\) beside it"),
    ([], ["size=[32,32]"], r"size= does not apply"),
    (["data.normalize=percentile"], [], r"normalized its images by percentile, which this export does not describe"),
    (["data.resize=[256,256]"], [], r"trained on slices resized to \[256, 256\]"),
])
def test_export_bioimageio_refuses_what_a_package_cannot_describe_in_one_line(tmp_path, train_overrides,
                                                                               export_overrides, message):
    from segexp.commands.export import export
    from segexp.rundir import RunDir

    (tmp_path / "model.keras").write_bytes(b"")  # never loaded: each refusal comes before the model
    if train_overrides is not None:
        RunDir(tmp_path).write_config(compose_config("train", *train_overrides))
    with pytest.raises(ConfigError, match=f"^format=bioimageio[: ].*{message}") as refused:
        export(compose_config("export", f"ckpt={tmp_path}", "format=bioimageio", f"output={tmp_path / 'model.zip'}",
                              *export_overrides))
    assert "\n" not in str(refused.value)
