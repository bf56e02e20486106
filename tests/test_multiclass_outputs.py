"""K-class predictions end to end: tiling, TTA and resizing of (H, W, K) probabilities, the class pictures, and
what predict and export make of a K-class checkpoint; a binary checkpoint's predictions stay as they were."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from conftest import compose_config
from segexp.data.classes import parse_classes
from segexp.data.sets import IGNORE
from segexp.errors import ConfigError
from segexp.evaluation.visualize import (
    DIMMED,
    IGNORED_GRAY,
    class_panel,
    color_labels,
    confusion_figure,
    confusion_table,
    to_rgb8,
)
from segexp.rundir import ModelSource, RunDir

CLASSES = ["background", "disc", "square"]
INFERENCE = OmegaConf.create({"tile": 48, "overlap": 24, "batch_size": 4, "tta": True, "resize": None,
                              "threshold": 0.5})


def tiny_unet(outputs: int):
    import keras

    from segexp.models.unet import build_unet

    keras.utils.set_random_seed(0)
    return build_unet(depth=1, base_filters=4, batch_norm=False, dropout=0.0, dropout_levels=0,
                      upsampling="transpose", activation="relu", head_filters=0, channels=1, outputs=outputs)


def saved_unet(path, outputs: int):
    """Returns the path of a tiny U-Net of `outputs` outputs saved at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tiny_unet(outputs).save(path)
    return path


def random_image(shape, seed: int = 0) -> np.ndarray:
    # spread over [-2, 2] so the untrained model's probabilities spread too and differences show
    return np.random.default_rng(seed).random(shape, dtype=np.float32) * 4 - 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Returns the RunDir of a 3-class run on data=shapes: its model, config and split, as train writes them."""
    from segexp.data.datasets import load
    from segexp.data.splits import split, split_record

    run = RunDir(tmp_path_factory.mktemp("run"))
    cfg = compose_config("train", "data=shapes", "data.count=4", "data.size=40", f"data.classes=[{','.join(CLASSES)}]",
                         "split.select=[-2]", "split.report=[-1]")
    run.write_split(split_record(split(load(cfg.data), [-2], [-1])))
    run.write_config(cfg)
    saved_unet(run.checkpoint, outputs=len(CLASSES))
    return run


# --- tiling, TTA, resizing ---------------------------------------------------------------------------


def test_tiled_tta_class_probabilities_sum_to_one_and_match_the_whole_image_pass():
    from segexp.inference.predictor import make_predictor
    from segexp.inference.tiling import plan_axis, predict_tta

    model = tiny_unet(outputs=3)
    image = random_image((70, 90, 1))
    assert len(plan_axis(70, 48, 24, 2).starts) * len(plan_axis(90, 48, 24, 2).starts) >= 6  # several tiles

    probs = make_predictor(model, INFERENCE)(image)

    def whole_image(view: np.ndarray, margin: int = 12) -> np.ndarray:
        # reflected context at the border, as tiling gives it, so only the seams can differ
        padded = np.pad(view, ((margin, margin), (margin, margin), (0, 0)), mode="reflect")
        return model(padded[None], training=False).numpy()[0, margin:-margin, margin:-margin]

    reference = predict_tta(whole_image, image)
    assert probs.shape == (70, 90, 3) and probs.dtype == np.float32
    assert np.abs(probs.sum(axis=-1) - 1).max() < 1e-5
    assert reference.max() - reference.min() > 0.5  # the tolerance below is small next to the signal
    assert np.abs(probs - reference).max() < 5e-3


def test_a_binary_models_predictor_still_returns_its_own_probability_map():
    from segexp.inference.predictor import make_predictor, model_outputs

    model = tiny_unet(outputs=1)
    image = random_image((40, 52, 1), seed=1)
    # no overlap and sides already a multiple of the model's: one tile that is exactly the image
    prob = make_predictor(model, OmegaConf.merge(INFERENCE, {"tile": 64, "overlap": 0, "tta": False}))(image)
    assert model_outputs(model) == 1
    assert prob.shape == (40, 52) and prob.dtype == np.float32
    assert np.abs(prob - model(image[None], training=False).numpy()[0, ..., 0]).max() < 1e-6


def test_at_size_resizes_every_class_channel_back():
    from segexp.inference.predictor import at_size

    levels = np.array([0.2, 0.3, 0.5], np.float32)
    probs = at_size(lambda image: np.broadcast_to(levels, (*image.shape[:2], 3)).copy(), [16, 8])(
        np.zeros((45, 61, 1), np.float32))
    assert probs.shape == (45, 61, 3) and np.allclose(probs, levels)


def test_an_ensemble_of_class_models_averages_their_probabilities(tmp_path):
    from segexp.inference.predictor import load_source

    first, second = saved_unet(tmp_path / "a" / "model.keras", 3), tmp_path / "b" / "model.keras"
    second.parent.mkdir()
    model = tiny_unet(3)
    model.set_weights([w * 1.5 for w in model.get_weights()])  # another member predicts something else
    model.save(second)
    inference = OmegaConf.merge(INFERENCE, {"tta": False})
    image = random_image((30, 40, 1), seed=2)
    alone = [load_source(ModelSource(((path, None),)), inference).predict(image) for path in (first, second)]
    ensemble = load_source(ModelSource(((first, None), (second, None))), inference)
    assert ensemble.outputs == 3 and not np.allclose(alone[0], alone[1])
    assert np.allclose(ensemble.predict(image), (alone[0] + alone[1]) / 2, atol=1e-6)

    binary = saved_unet(tmp_path / "c" / "model.keras", 1)
    with pytest.raises(ConfigError, match=r"have different outputs \[1, 3\]"):
        load_source(ModelSource(((first, None), (binary, None))), inference)


# --- classes of a checkpoint -----------------------------------------------------------------------------


def test_a_checkpoint_names_its_runs_classes_or_numbered_ones(run, tmp_path):
    from segexp.inference.predictor import checkpoint_classes

    assert checkpoint_classes(run, 3).names == tuple(CLASSES)
    assert checkpoint_classes(None, 3).names == ("class0", "class1", "class2")
    assert checkpoint_classes(None, 1).binary
    other = RunDir(tmp_path)
    other.write_config(OmegaConf.create({"data": {"classes": ["a", "b", "c", "d"]}}))
    with pytest.raises(ConfigError, match="names 4 classes .4 model outputs., but the checkpoint's model has 3"):
        checkpoint_classes(other, 3)


# --- pictures ----------------------------------------------------------------------------------------------


def test_class_panel_draws_truth_prediction_and_errors_in_class_colours():
    classes = parse_classes(CLASSES)
    colors = classes.colors()
    image = np.full((6, 5, 1), 0.5, np.float32)
    truth = np.zeros((6, 5), np.uint8)
    truth[1, 1], truth[2, 2], truth[3, 3] = 2, 1, IGNORE
    predicted = truth.copy()
    predicted[2, 2], predicted[3, 3] = 2, 0  # one pixel wrong (truly disc, predicted square)
    probs = np.eye(3, dtype=np.float32)[predicted] * 0.8 + 0.2 / 3

    gap = 2
    panel = class_panel(image, truth, probs, classes, gap=gap)
    tiles = [panel[:6, i * (5 + gap): i * (5 + gap) + 5] for i in range(4)]
    assert panel.dtype == np.uint8 and panel.shape[1] == 4 * 5 + 3 * gap and panel.shape[0] > 6  # legend below
    assert (tiles[1][1, 1] == colors[2]).all() and (tiles[1][2, 2] == colors[1]).all()
    assert (tiles[1][3, 3] == IGNORED_GRAY).all() and (tiles[1][0, 0] == colors[0]).all()
    assert (tiles[2][2, 2] == colors[2]).all() and (tiles[2][3, 3] == colors[0]).all()
    errors = tiles[3]
    assert (errors[2, 2] == colors[2]).all() and (errors[3, 3] == IGNORED_GRAY).all()
    dimmed = (to_rgb8(image)[0, 0] * DIMMED).round()
    assert (errors[0, 0] == dimmed).all() and (errors[1, 1] == dimmed).all()
    legend = panel[6 + gap:]
    for color in colors:  # each class's swatch is in the legend
        assert (legend == color).all(axis=-1).sum() >= 9


def test_color_labels_draws_unlabelled_pixels_gray():
    colors = parse_classes(CLASSES).colors()
    drawn = color_labels(np.array([[0, 1, 2, IGNORE]], np.uint8), colors)
    assert (drawn[0, :3] == colors).all() and (drawn[0, 3] == IGNORED_GRAY).all()


def test_confusion_figure_and_table_show_counts_by_truth_and_prediction():
    matrix = np.array([[50, 0, 0], [5, 15, 0], [0, 0, 0]])
    figure = confusion_figure(matrix, CLASSES)
    assert figure.dtype == np.uint8 and figure.ndim == 3 and figure.shape[2] == 3 and min(figure.shape[:2]) > 100
    darkest, lightest = (8, 48, 107), (247, 251, 255)  # matplotlib's Blues at fractions 1 and 0
    assert (figure == darkest).all(axis=-1).sum() > 100 and (figure == lightest).all(axis=-1).sum() > 100
    assert confusion_table(matrix, CLASSES).splitlines() == [
        "truth \\ predicted,background,disc,square", "background,50,0,0", "disc,5,15,0", "square,0,0,0"]


# --- predict and export -------------------------------------------------------------------------------------


def test_predict_writes_index_colour_and_per_class_maps(run, tmp_path):
    from segexp.data.datasets import make_shapes
    from segexp.data.images import read_image, to_channels, to_unit_float
    from segexp.commands.predict import predict
    from segexp.inference.predictor import make_predictor
    from segexp.models.loading import load_model

    inputs = tmp_path / "in"
    inputs.mkdir()
    data = make_shapes(count=2, size=40, classes=CLASSES, seed=3)
    for i, image in enumerate(data.images):
        Image.fromarray((image[..., 0] * 255).round().astype(np.uint8)).save(inputs / f"s{i}.png")
    cfg = compose_config("predict", f"ckpt={run.path}", f"input={inputs}", f"output={tmp_path / 'out'}",
                         "inference.tile=32", "inference.overlap=8", "save_overlay=true")
    written = predict(cfg)

    assert [p.name for p in written] == ["s0.png", "s1.png"]
    predictor = make_predictor(load_model(run.checkpoint), cfg.inference)
    colors = parse_classes(CLASSES).colors()
    for path in inputs.iterdir():
        probs = predictor(to_channels(to_unit_float(read_image(path), cfg.normalize), 1))
        out = tmp_path / "out"
        index = np.asarray(Image.open(out / path.name))
        assert index.shape == (40, 40) and index.dtype == np.uint8
        assert np.array_equal(index, probs.argmax(axis=-1))
        assert np.array_equal(np.asarray(Image.open(out / f"{path.stem}_color.png")), colors[index])
        for k, name in enumerate(CLASSES):
            prob = np.asarray(Image.open(out / f"{path.stem}_prob_{name}.png"))
            assert np.array_equal(prob, (probs[..., k] * 255).round().astype(np.uint8))
        assert np.asarray(Image.open(out / f"{path.stem}_overlay.png")).shape == (40, 40, 3)
        assert not (out / f"{path.stem}_mask.png").exists()


def test_predict_refuses_a_segmentation_stage_for_a_class_checkpoint(run, tmp_path):
    from segexp.commands.predict import predict

    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(image)
    cfg = compose_config("predict", f"ckpt={run.path}", f"input={image}", f"output={tmp_path}", "postprocess=watershed")
    with pytest.raises(ConfigError, match="postprocess=watershed segments binary boundary maps; this checkpoint "
                                          "predicts 3 classes; use postprocess=none"):
        predict(cfg)


def test_export_compares_every_class_channel(run, tmp_path, capsys):
    from segexp.commands.export import export, largest_difference

    difference = export(compose_config("export", f"ckpt={run.path}", "format=onnx", f"output={tmp_path / 'm.onnx'}"))
    assert difference <= 1e-4 and "over its 3 output channels" in capsys.readouterr().out

    keras_output = np.zeros((1, 4, 4, 3), np.float32)
    exported = keras_output.copy()
    exported[0, 1, 2, 2] = 0.25  # a difference in the last class channel only
    assert largest_difference([exported], [keras_output], "onnx", "a slice") == 0.25
    with pytest.raises(ConfigError, match=r"returns shape \[1, 4, 4, 1\] where Keras returns \[1, 4, 4, 3\]"):
        largest_difference([exported[..., :1]], [keras_output], "the onnx model", "a slice")
