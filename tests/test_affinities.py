"""target=affinities and the partitioning stages (issue 33): the affinity target against hand-computed values, the
cell map it implies, TTA over turned offsets, the loss's masking, each stage returning a perfect input's
segmentation exactly and repairing a known gap and a known false split, the refusals, one tiny affinity run
through train, evaluate and predict, and two folds of an affinity cross-validation through evaluate and predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import SHALLOW, TINY, compose_config, copy_store, write_blob_pairs
from segexp.data.affinities import UNLABELLED, Target, affinity_target, cell_map, check_offsets, object_ids
from segexp.data.sets import IGNORE
from segexp.errors import ConfigError
from segexp.evaluation.metrics import segmentation_scores
from segexp.postprocessing.stage import segment

PAPER = Target("affinities", ((-1, 0), (0, -1), (-9, 0), (0, -9), (-9, -9), (9, -9), (-9, -4), (-4, -9), (4, -9),
                              (9, -4), (-27, 0), (0, -27)))


def test_object_ids_number_the_cells_and_leave_membranes_and_unlabelled_pixels_out():
    mask = np.array([[1, 1, 0, 1],
                     [1, 1, 0, 1],
                     [0, 0, 0, IGNORE]], np.uint8)  # 1 = cell, 0 = membrane (foreground, as ISBI scores it)
    ids = object_ids(mask, foreground=0, ignore=IGNORE)
    assert ids.tolist() == [[1, 1, 0, 2], [1, 1, 0, 2], [0, 0, 0, UNLABELLED]]


def test_the_affinity_target_matches_hand_computed_pairs():
    ids = np.array([[1, 1, 0, 2],
                    [1, 1, 0, 2],
                    [0, 0, 0, UNLABELLED]])
    target = affinity_target(ids, [(-1, 0), (0, -1), (0, 2)])
    same, valid = target[..., :3], target[..., 3:]
    # [-1, 0]: a pixel and the one above it; row 0 has none (masked)
    assert same[..., 0].tolist() == [[0, 0, 0, 0], [1, 1, 0, 1], [0, 0, 0, 0]]
    assert valid[..., 0].tolist() == [[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]]  # (2,3) is unlabelled
    # [0, -1]: a pixel and the one left of it; membrane pairs are 0 ("not the same object"), not masked
    assert same[..., 1].tolist() == [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    assert valid[..., 1].tolist() == [[0, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 0]]
    # [0, 2]: two to the right; cells 1 and 2 are different objects
    assert same[..., 2].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert valid[..., 2].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]]


def test_the_cell_map_of_perfect_affinities_is_zero_on_membranes_and_one_inside_cells():
    mask = np.ones((9, 9), np.uint8)
    mask[4, :] = 0  # a membrane row between two cells
    affinities = affinity_target(object_ids(mask, 0, IGNORE), PAPER.offsets)[..., :len(PAPER.offsets)]
    cells = cell_map(affinities, PAPER)
    assert np.all(cells[4] == 0)
    assert cells[1, 4] == 1 and cells[7, 4] == 1  # no neighbour on the membrane
    assert cells[3, 4] == pytest.approx(0.75)  # three of its four neighbours share its cell


@pytest.mark.parametrize("offsets, problem", [
    ([[0, -1], [-3, 0]], "needs the direct neighbour [-1, 0]"),
    ([[-1, 0], [0, -1], [0, 0]], "[0, 0] pairs a pixel with itself"),
    ([[-1, 0], [0, -1], [0, -1]], "repeats an offset"),
    ([[-1, 0, 2]], "must be a list of [dy, dx] integer pairs"),
])
def test_offsets_a_stage_cannot_use_are_named(offsets, problem):
    assert any(problem in p for p in check_offsets(offsets))


def test_tta_maps_turned_channels_back_to_their_offsets():
    from segexp.inference.tiling import predict_tta_affinities, tta_offset_problem

    rng = np.random.default_rng(0)
    ids = np.kron(rng.integers(1, 6, size=(6, 8)), np.ones((7, 7), int))  # blocks of objects, not square
    ids[rng.random(ids.shape) < 0.1] = 0

    def exact(image):  # a model that predicts the perfect affinities of what it sees, in every view
        return affinity_target(image[..., 0].astype(int), PAPER.offsets)[..., :len(PAPER.offsets)]

    image = ids[..., None].astype(np.float32)
    assert np.array_equal(predict_tta_affinities(exact, image, PAPER.offsets), exact(image))
    assert tta_offset_problem(PAPER.offsets) is None
    assert "[-3, -1] turned or flipped is" in tta_offset_problem([(-1, 0), (0, -1), (-3, -1)])


def test_the_affinity_loss_ignores_masked_pairs_and_rewards_the_right_affinities():
    from segexp.models.losses import SegmentationLoss

    ids = np.array([[1, 1, 0, 2]] * 4)
    ids[3, 3] = UNLABELLED
    target = affinity_target(ids, [(-1, 0), (0, -1)])[None]
    truth = target[..., :2]
    loss = SegmentationLoss(bce=1.0, dice=1.0, affinities=2)
    perfect = float(loss(target, np.clip(truth, 0.01, 0.99)))
    wrong = float(loss(target, np.clip(1 - truth, 0.01, 0.99)))
    masked = np.clip(truth, 0.01, 0.99).copy()
    masked[0, 0, :, 0] = 0.5  # row 0 has no pixel above: masked pairs
    masked[0, 3, 3, :] = 0.5  # the unlabelled pixel
    assert perfect < 0.1 < 1.0 < wrong
    assert float(loss(target, masked)) == pytest.approx(perfect, abs=1e-6)


def isbi_slice(index: int = 25, size: int = 256) -> np.ndarray:
    from segexp.data.datasets import default_isbi_root

    path = default_isbi_root() / "train" / "label" / f"{index}.png"
    return (np.asarray(Image.open(path))[:size, :size] > 127).astype(np.uint8)  # 1 = cell, 0 = membrane


PARAMS = {"mutex_watershed": {"bias": 0.5, "threshold": 0.5},
          "multicut": {"beta": 0.5, "threshold": 0.3, "sigma_seeds": 2.0, "min_size": 25},
          "gasp": {"beta": 0.5, "threshold": 0.3, "sigma_seeds": 2.0, "min_size": 25}}


def voronoi_cells(size: int = 128, cells: int = 40) -> np.ndarray:
    """Returns a boundary mask (1 = cell, 0 = membrane) of random Voronoi cells split by membranes 2-3 px wide."""
    rng = np.random.default_rng(3)
    centres = rng.uniform(0, size, (cells, 2))
    rows, cols = np.mgrid[:size, :size]
    distances = np.sort(np.hypot(rows[..., None] - centres[:, 0], cols[..., None] - centres[:, 1]), axis=-1)
    return (distances[..., 1] - distances[..., 0] > 2.5).astype(np.uint8)


@pytest.mark.parametrize("method, truth", [(m, voronoi_cells) for m in PARAMS] + [("mutex_watershed", isbi_slice)])
def test_each_stage_returns_the_segmentation_of_a_perfect_input_exactly(method, truth):
    truth = truth()
    if method == "mutex_watershed":
        ids = object_ids(truth, 0, IGNORE)
        prediction, target = affinity_target(ids, PAPER.offsets)[..., :len(PAPER.offsets)], PAPER
    else:
        prediction, target = truth.astype(np.float32), Target()
    labels = segment(prediction, method, PARAMS[method], target)
    assert segmentation_scores([labels], [truth]) == pytest.approx({"v_rand": 1.0, "v_info": 1.0}, abs=1e-12)


def two_cells_with_a_gap_and_a_false_membrane() -> tuple[np.ndarray, np.ndarray]:
    """Returns (truth, cell probability): two cells split by a vertical membrane that the prediction leaves open
    for 3 px (a gap merging them), and a faint false membrane (probability of cell 0.35) across the left cell."""
    truth = np.ones((64, 64), np.uint8)
    truth[:, 31:33] = 0
    prob = np.where(truth == 1, 0.95, 0.05).astype(np.float32)
    prob[30:33, 31:33] = 0.95  # the gap
    prob[40, 2:29] = 0.35  # the false membrane, not closed on either side
    return truth, prob


def test_multicut_and_gasp_repair_a_gap_and_a_false_split_that_the_map_keeps():
    from segexp.evaluation.metrics import isbi_scores

    truth, prob = two_cells_with_a_gap_and_a_false_membrane()
    assert isbi_scores([prob], [truth])["v_rand"] < 0.9  # the challenge's best threshold still merges or splits
    for method in ("multicut", "gasp"):
        labels = segment(prob, method, PARAMS[method])
        assert segmentation_scores([labels], [truth])["v_rand"] == 1.0, method


def test_the_mutex_watershed_repairs_a_gap_its_long_range_affinities_see():
    truth, prob = two_cells_with_a_gap_and_a_false_membrane()
    offsets = ((-1, 0), (0, -1), (-9, 0), (0, -9), (0, -27), (-27, 0))
    target = Target("affinities", offsets)
    affinities = affinity_target(object_ids(truth, 0, IGNORE), offsets)[..., :len(offsets)]
    short = affinity_target(object_ids((prob > 0.5).astype(np.uint8), 0, IGNORE), offsets)[..., :2]
    affinities[..., :2] = np.maximum(affinities[..., :2], short)  # the gap: the direct neighbours attract across
    # predicted as certain as the attraction across the gap, the repulsion wins at a bias above 0.5 (ties at 0.5)
    labels = segment(affinities, "mutex_watershed", {"bias": 0.6, "threshold": 0.5}, target)
    merged = segment(affinities, "mutex_watershed", {"bias": 0.0, "threshold": 0.5}, target)  # no repulsion left
    assert segmentation_scores([merged], [truth])["v_rand"] < 0.7
    # the two cells apart again; the line drawn through the gap costs a 3-pixel dent in the left cell
    assert segmentation_scores([labels], [truth])["v_rand"] > 0.999


@pytest.mark.parametrize("overrides, message", [
    (["target=affinities", "loss=weighted_bce"], "loss.weight_map: border weight maps"),
    (["target=affinities", "loss=bce_dice_cldice"], "loss.fn.cldice: clDice thins a boundary map"),
    (["target=affinities", "loss.fn.class_weights=balanced"], "loss.fn.class_weights: class weights"),
    (["target=affinities", "data=shapes"], "data.classes: target=affinities learns the objects"),
    (["target=affinities", "target.offsets=[[0,-1],[-3,0]]"], r"target.offsets: needs the direct neighbour \[-1, 0\]"),
    (["target=affinities", "target.offsets=[[-1,0],[0,-1],[-3,-1]]", "inference.tta=true"],
     r"inference.tta: offset \[-3, -1\] turned"),
    (["postprocess=mutex_watershed"], "postprocess=mutex_watershed partitions affinities, but this model predicts"),
    (["postprocess=multicut", "postprocess.grid.beta=[1.5]"], r"postprocess.grid.beta: must be numbers in \[0.0, 1.0\]"),
])
def test_options_without_meaning_for_the_target_are_refused_before_anything_runs(tmp_path, overrides, message):
    from segexp.training.train import train

    cfg = compose_config("train", *TINY, "tracking=none", *overrides)
    with pytest.raises(ConfigError, match=message):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


SMALL_OFFSETS = "target.offsets=[[-1,0],[0,-1],[-4,0],[0,-4],[-4,-4],[4,-4]]"


@pytest.fixture(scope="module")
def affinity_run(tmp_path_factory, empty_store):
    """Returns (root, run dir, store, metrics) of a tiny affinity run whose end chose a Mutex Watershed."""
    from segexp.training.train import train

    root = tmp_path_factory.mktemp("affinities")
    images, masks = write_blob_pairs(root, [(48, 48)] * 5)
    store = copy_store(empty_store, root / "mlflow.db")
    cfg = compose_config("train", *TINY, *SHALLOW, "data=folder", f"data.images={images}", f"data.masks={masks}",
                         "split.select=[-2]", "split.report=[-1]", f"tracking.uri={store}", "target=affinities",
                         SMALL_OFFSETS, "postprocess=mutex_watershed", "postprocess.grid.bias=[0.4,0.6]",
                         "postprocess.grid.threshold=[0.5]", "inference.tta=true")
    return root, root / "run", store, train(cfg, root / "run")


def test_an_affinity_run_trains_scores_its_cell_map_and_chooses_its_stage(affinity_run):
    _, run, _, metrics = affinity_run
    record = json.loads((run / "postprocess.json").read_text())
    assert record["method"] == "mutex_watershed" and record["chosen_on"] == ["s3"]
    assert record["params"]["bias"] in (0.4, 0.6) and metrics["postprocess_select_v_rand"] == pytest.approx(record["score"])
    assert {"select_loss", "select_v_rand", "report_v_rand", "report_map_v_rand", "report_dice"} <= set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in ("report_v_rand", "report_map_v_rand", "report_dice", "report_accuracy"))


def test_evaluate_and_predict_read_the_affinity_run(affinity_run, tmp_path, monkeypatch):
    import tifffile

    from segexp.commands.evaluate import evaluate
    from segexp.commands.predict import predict

    root, run, store, trained = affinity_run
    monkeypatch.chdir(tmp_path)
    inference = ["inference.tile=32", "inference.overlap=8", "inference.tta=true"]
    metrics = evaluate(compose_config("evaluate", f"ckpt={run}", f"tracking.uri={store}", *inference), tmp_path / "e")
    assert metrics["v_rand"] == pytest.approx(trained["report_v_rand"])  # the run's recalled stage, as at its end
    assert metrics["map_v_rand"] == pytest.approx(trained["report_map_v_rand"])
    multicut = evaluate(compose_config("evaluate", f"ckpt={run}", f"tracking.uri={store}", "postprocess=multicut",
                                       "postprocess.grid.beta=[0.5]", "postprocess.grid.threshold=[0.3]", *inference),
                        tmp_path / "mc")
    assert json.loads((tmp_path / "mc" / "metrics.json").read_text())["postprocess"]["method"] == "multicut"
    assert 0 <= multicut["v_rand"] <= 1
    predict(compose_config("predict", f"ckpt={run}", f"input={root / 'images' / 's4.png'}", f"output={tmp_path / 'p'}",
                           "save_affinities=true", *inference))
    affinities = tifffile.imread(tmp_path / "p" / "s4_affinities.tif")
    assert affinities.shape == (6, 48, 48) and affinities.dtype == np.float32
    cells = np.asarray(Image.open(tmp_path / "p" / "s4.png"))
    expected = cell_map(np.moveaxis(affinities, 0, -1), Target("affinities", ((-1, 0), (0, -1), (-4, 0), (0, -4),
                                                                               (-4, -4), (4, -4))))
    assert np.abs(cells.astype(float) - np.round(expected * 255)).max() <= 1
    labels = np.asarray(Image.open(tmp_path / "p" / "s4_labels.png"))
    assert labels.shape == (48, 48) and np.array_equal(np.asarray(Image.open(tmp_path / "p" / "s4_boundaries.png")) == 255,
                                                       labels > 0)


def test_a_cross_validation_of_affinity_runs_chooses_its_stage_pooled_and_predicts_as_an_ensemble(tmp_path,
                                                                                                   empty_store):
    """Two folds of a 3-fold affinity cross-validation (the sweep's job folders, trained here in turn): evaluate
    scores each fold's model on its own report block with one Mutex Watershed chosen over both selection blocks,
    and predict averages the folds' affinities."""
    import tifffile

    from segexp.commands.crossval import evaluate_folds, fold_indices
    from segexp.commands.predict import predict
    from segexp.data.images import to_channels
    from segexp.evaluation.slices import role_set
    from segexp.inference.predictor import load_predictor
    from segexp.postprocessing.stage import Stage
    from segexp.rundir import RunDir
    from segexp.tracking.references import resolve_checkpoint, resolve_model_source
    from segexp.training.train import train

    images, masks = write_blob_pairs(tmp_path, [(48, 48)] * 9)
    store = copy_store(empty_store, tmp_path / "mlflow.db")
    cv = tmp_path / "cv"
    for fold in (0, 1):
        train(compose_config("train", *TINY, *SHALLOW, "data=folder", f"data.images={images}", f"data.masks={masks}",
                             "data.folds=3", f"data.fold={fold}", f"tracking.uri={store}", "target=affinities",
                             SMALL_OFFSETS, "inference.tta=false"), cv / str(fold))
    source = resolve_model_source(str(cv))
    assert fold_indices(source, str(cv)) == [0, 1]
    inference = ["inference.tile=32", "inference.overlap=8", "inference.tta=false"]
    cfg = compose_config("evaluate", f"ckpt={cv}", f"tracking.uri={store}", "postprocess=mutex_watershed",
                         "postprocess.grid.bias=[0.2,0.8]", "postprocess.grid.threshold=[0.5]", *inference)
    evaluate_folds(cfg, source, [0, 1], tmp_path / "eval")
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    members = {i: load_predictor(*resolve_checkpoint(str(cv / str(i))), cfg.inference) for i in (0, 1)}
    target = members[0].target
    # the bias is the best over both selection blocks pooled, each predicted by its own fold's model
    selection = {i: role_set(RunDir(cv / str(i)), "select") for i in (0, 1)}
    assert sorted(result["postprocess"]["chosen_on"]) == sorted(n for s in selection.values() for n in s.names)
    pooled = {bias: segmentation_scores(
        [Stage("mutex_watershed", {"bias": bias, "threshold": 0.5}, target=target).apply(
            members[i].predict(to_channels(image, 1))) for i in (0, 1) for image in selection[i].images],
        [truth for i in (0, 1) for truth in selection[i].masks])["v_rand"] for bias in (0.2, 0.8)}
    assert result["postprocess"]["params"]["bias"] == max(pooled, key=pooled.get)
    assert [fold["slices"] for fold in result["folds"]] == [list(role_set(RunDir(cv / str(i)), "report").names)
                                                             for i in (0, 1)]

    # the folds as one model: the mean of their affinities, channel by channel
    predict(compose_config("predict", f"ckpt={cv}", f"input={images / 's0.png'}", f"output={tmp_path / 'p'}",
                           "save_affinities=true", *inference))
    written = tifffile.imread(tmp_path / "p" / "s0_affinities.tif")
    pixels = to_channels(np.asarray(Image.open(images / "s0.png"), np.float32) / 255, 1)
    mean = np.mean([members[i].predict(pixels) for i in (0, 1)], axis=0)
    assert np.abs(np.moveaxis(written, 0, -1) - mean).max() <= 1e-5
