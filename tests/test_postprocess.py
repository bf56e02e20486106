"""The segmentation stage after the network: a membrane gap and a false split it must fix (by the
challenge's reference metric), its parameters chosen on selection slices only, its config checks, and
train / evaluate / predict carrying it end to end on a real tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from PIL import Image

from conftest import SHALLOW, TINY, cli_errors, compose_config, copy_store, write_blob_pairs
from segexp.checks import check_stage
from segexp.errors import ConfigError
from segexp.evaluation.metrics import isbi_scores, label_cells, segmentation_scores
from segexp.postprocessing import stage as stages
from segexp.postprocessing.search import choose, grid_points
from segexp.postprocessing.stage import boundary_map, segment, segmenter
from segexp.postprocessing.watershed import watershed, with_boundaries

CELL, MEMBRANE = 0.95, 0.05

pytestmark = pytest.mark.xdist_group("test_postprocess")  # one worker builds the module fixture once


def faulty_map(gap_rows: tuple[int, int], split_row: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Returns (cell probability, truth) of four cells between a cross of 2-px membranes, where the network
    left a gap in the membrane between the two upper cells (probability 0.8 there) and drew a faint false
    membrane across the lower-left cell (0.45)."""
    truth = np.ones((size, size), np.uint8)
    mid = size // 2
    truth[:, mid - 1:mid + 1] = 0
    truth[mid - 1:mid + 1, :] = 0
    prob = np.where(truth == 1, CELL, MEMBRANE).astype(np.float32)
    prob[gap_rows[0]:gap_rows[1], mid - 1:mid + 1] = 0.8
    prob[split_row, :mid - 1] = 0.45
    return prob, truth


def configured_grid(option: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(f"conf/postprocess/{option}.yaml").grid)


def test_the_chosen_stage_closes_a_membrane_gap_and_merges_a_false_split(monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    select_prob, select_truth = faulty_map((20, 26), 70)  # where the parameters are chosen
    report_prob, report_truth = faulty_map((8, 14), 80)  # the same faults elsewhere: where they are judged
    # no threshold of the map gets both right: below 0.45 the gap merges two cells, above it the line splits one
    per_threshold = isbi_scores([report_prob], [report_truth])["per_threshold"]
    assert max(row["v_rand"] for row in per_threshold) < 0.95

    choice = choose([select_prob], [select_truth], segmenter("agglomerate"), configured_grid("agglomerate"), segmentation_scores)
    labels = segment(report_prob, "agglomerate", choice.params)
    assert labels.max() == 4  # the four true cells: the gap closed, the split merged
    for cell in range(1, 5):  # each true cell is exactly one segment
        inside = label_cells(report_truth) == cell
        assert len(np.unique(labels[inside & (labels > 0)])) == 1
    assert (labels[8:14, 47:49] == 0).any(axis=1).all()  # a boundary runs through the gap, row by row
    before = isbi_scores([report_prob], [report_truth])
    after = segmentation_scores([labels], [report_truth])
    assert after["v_rand"] == pytest.approx(1.0) and after["v_info"] == pytest.approx(1.0)
    assert after["v_rand"] > before["v_rand"] + 0.05

    # the seeded watershed alone closes the gap but keeps the false split: it is what agglomerate adds
    alone = segment(report_prob, "watershed", {"seed_threshold": 0.9, "min_seed_size": 10, "sigma": 0.0})
    assert alone.max() == 5


@pytest.mark.parametrize("option", ["watershed", "agglomerate"])
def test_every_postprocess_option_segments_with_its_params_and_its_grid(make_cfg, option):
    node = make_cfg(f"postprocess={option}").postprocess
    check_stage(node)
    method, params, grid, _ = stages.configured(node)
    prob, truth = faulty_map((20, 26), 70)
    assert segment(prob, method, params).max() >= 3  # the lower cells at least (the gap may merge the upper)
    assert len(choose([prob], [truth], segmenter(method), grid, segmentation_scores).table) == len(grid_points(grid))


def test_segments_never_touch_and_the_boundary_map_is_the_challenge_format():
    regions = np.random.default_rng(0).integers(1, 6, size=(40, 50))
    labels = with_boundaries(regions)
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        touching = (a > 0) & (b > 0)
        assert (a[touching] == b[touching]).all()  # no two segments are 4-adjacent
    assert set(np.unique(boundary_map(labels))) <= {0, 255}
    assert np.array_equal(np.unique(labels[labels > 0]), np.arange(1, labels.max() + 1))  # numbered 1..n


def test_a_map_without_any_seed_is_one_segment():
    assert watershed(np.zeros((16, 16), np.float32), 0.5, 1).max() == 1


def test_choose_keeps_the_first_best_and_reports_every_point():
    prob, truth = faulty_map((20, 26), 70)
    grid = {"seed_threshold": [0.9, 0.9], "min_seed_size": [10], "sigma": [0.0]}
    choice = choose([prob], [truth], segmenter("watershed"), grid, segmentation_scores)
    assert len(choice.table) == 2 and choice.params == {"seed_threshold": 0.9, "min_seed_size": 10, "sigma": 0.0}
    assert choice.score == choice.table[0]["v_rand"]


@pytest.mark.parametrize("override, message", [
    ("+postprocess.params.seed=0.5", r"postprocess.params: watershed takes seed_threshold, min_seed_size, sigma; unknown: seed"),
    ("postprocess.grid.sigma=[]", r"postprocess.grid.sigma: is empty"),
    ("postprocess.grid.seed_threshold=[0.5,1.5]", r"postprocess.grid.seed_threshold: must be numbers in \[0.0, 1.0\], got \[1.5\]"),
])
def test_bad_postprocess_settings_are_one_line_naming_the_key(make_cfg, override, message):
    with pytest.raises(ConfigError, match=message):
        check_stage(make_cfg("postprocess=watershed", override).postprocess)


def test_a_stage_to_choose_without_selection_slices_is_refused_before_training(make_cfg, tmp_path):
    from segexp.training.train import train

    cfg = make_cfg(*TINY, "postprocess=watershed", "split.select=[]", "trainer.checkpoint=last",
                   "trainer.monitor=loss", "objective=loss", "tracking=none")
    with pytest.raises(ConfigError, match="split.select is empty; name selection slices or set postprocess.tune=false"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def trained_with_stage(tmp_path_factory, empty_store):
    """Returns (root, run dir, store, metrics) of a tiny run whose end chose a watershed on its selection slice."""
    from segexp.training.train import train

    root = tmp_path_factory.mktemp("stage")
    images, masks = write_blob_pairs(root, [(48, 48)] * 5)
    store = copy_store(empty_store, root / "mlflow.db")
    cfg = compose_config("train", *TINY, *SHALLOW, "data=folder", f"data.images={images}", f"data.masks={masks}",
                         "split.select=[-2]", "split.report=[-1]", f"tracking.uri={store}", "tracking.log_model=false",
                         "postprocess=watershed", "postprocess.grid.seed_threshold=[0.3,0.6]",
                         "postprocess.grid.min_seed_size=[5]", "postprocess.grid.sigma=[0.0]")
    metrics = train(cfg, root / "run")
    return root, root / "run", store, metrics


def test_train_chooses_the_stage_on_selection_slices_and_records_it(trained_with_stage):
    _, run, store, metrics = trained_with_stage
    record = json.loads((run / "postprocess.json").read_text())
    assert record["method"] == "watershed" and record["chosen_on"] == ["s3"] and record["objective"] == "v_rand"
    # recomputed: the chosen point is the grid's best on the selection slice, predicted as the run predicts it
    from segexp.evaluation.slices import role_set
    from segexp.inference.predictor import load_predictor
    from segexp.rundir import RunDir

    block = role_set(RunDir(run), "select")
    predict = load_predictor(run / "model.keras", RunDir(run), compose_config("train", *TINY).inference).predict
    probs = [predict(image) for image in block.images]
    scored = {t: segmentation_scores([segment(p, "watershed", {"seed_threshold": t, "min_seed_size": 5, "sigma": 0.0})
                                      for p in probs], list(block.masks))["v_rand"] for t in (0.3, 0.6)}
    assert record["params"]["seed_threshold"] == max(scored, key=scored.get)
    assert record["score"] == pytest.approx(max(scored.values()), abs=1e-12)
    assert metrics["postprocess_select_v_rand"] == pytest.approx(record["score"])
    assert {"report_v_rand", "report_v_info", "report_map_v_rand", "report_map_v_info", "report_dice"} <= set(metrics)
    client = MlflowClient(store)
    (logged,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert logged.data.params["postprocess_applied.seed_threshold"] == str(record["params"]["seed_threshold"])
    assert logged.data.tags["postprocess"] == "watershed" and logged.data.tags["postprocess.chosen_on"] == "s3"
    assert logged.data.metrics["report_v_rand"] == pytest.approx(metrics["report_v_rand"])
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id, "report_slices")}
    assert "report_slices/s4.segments.png" in artifacts
    card = client.download_artifacts(logged.info.run_id, "model_card.md")
    assert "segmentation stage after the network: watershed (seed_threshold=" in open(card).read()


def test_evaluate_reuses_the_runs_choice_and_scores_segments_and_map_apart(trained_with_stage, tmp_path, monkeypatch):
    from segexp.commands.evaluate import evaluate

    root, run, store, trained = trained_with_stage
    monkeypatch.chdir(tmp_path)
    cfg = compose_config("evaluate", f"ckpt={run}", f"tracking.uri={store}", "inference.tile=32", "inference.overlap=8")
    metrics = evaluate(cfg, tmp_path / "eval")
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["postprocess"] == json.loads((run / "postprocess.json").read_text())
    assert metrics["v_rand"] == pytest.approx(trained["report_v_rand"])  # the run's own stage, as at its end
    assert metrics["map_v_rand"] == pytest.approx(trained["report_map_v_rand"])
    # postprocess=none scores the map alone, under the plain keys
    plain = evaluate(compose_config("evaluate", f"ckpt={run}", f"tracking.uri={store}", "postprocess=none",
                                    "inference.tile=32", "inference.overlap=8"), tmp_path / "plain")
    assert plain["v_rand"] == pytest.approx(trained["report_map_v_rand"]) and "map_v_rand" not in plain


def test_evaluate_with_another_stage_chooses_it_on_the_runs_selection_slices(trained_with_stage, tmp_path, monkeypatch):
    from segexp.commands.evaluate import evaluate

    _, run, store, _ = trained_with_stage
    monkeypatch.chdir(tmp_path)
    grid = ["postprocess.grid.seed_threshold=[0.6]", "postprocess.grid.min_seed_size=[5]",
            "postprocess.grid.merge_threshold=[0.3,0.5]"]
    cfg = compose_config("evaluate", f"ckpt={run}", f"tracking.uri={store}", "postprocess=agglomerate", *grid,
                         "inference.tile=32", "inference.overlap=8")
    metrics = evaluate(cfg, tmp_path / "eval")
    chosen = json.loads((tmp_path / "eval" / "metrics.json").read_text())["postprocess"]
    assert chosen["method"] == "agglomerate" and chosen["chosen_on"] == ["s3"]  # the selection slice, not s4
    assert chosen["params"]["merge_threshold"] in (0.3, 0.5) and 0 <= metrics["v_rand"] <= 1
    assert sorted(p.name for p in (tmp_path / "eval" / "panels").iterdir()) == ["s4.png"]
    client = MlflowClient(store)
    (logged,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert logged.data.metrics["eval_v_rand_agglomerate"] == pytest.approx(metrics["v_rand"])


def test_another_checkpoint_of_the_run_chooses_its_own_stage_and_keeps_its_own_keys(trained_with_stage, tmp_path,
                                                                                      monkeypatch, capsys):
    from segexp.commands.evaluate import evaluate

    _, run, store, _ = trained_with_stage
    client = MlflowClient(store)
    (before,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    monkeypatch.chdir(tmp_path)
    metrics = evaluate(compose_config("evaluate", f"ckpt={run / 'last.keras'}", f"tracking.uri={store}",
                                      "inference.tile=32", "inference.overlap=8"), tmp_path / "eval")
    # the run's recorded choice was made on model.keras's maps: the last epoch's are chosen on anew
    assert "choosing postprocess=watershed on selection slices s3" in capsys.readouterr().out
    (logged,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert logged.info.run_id == before.info.run_id
    assert logged.data.metrics["eval_v_rand_watershed_last"] == pytest.approx(metrics["v_rand"])
    assert logged.data.tags["checkpoint"] == before.data.tags["checkpoint"] == str((run / "model.keras").resolve())
    assert logged.data.tags["evaluated_checkpoint_last"] == str((run / "last.keras").resolve())


def test_predict_writes_label_images_and_boundary_maps(trained_with_stage, tmp_path):
    from segexp.commands.predict import predict

    root, run, _, _ = trained_with_stage
    cfg = compose_config("predict", f"ckpt={run}", f"input={root / 'images'}", f"output={tmp_path}")
    predict(cfg)
    labels = np.asarray(Image.open(tmp_path / "s0_labels.png"))
    boundaries = np.asarray(Image.open(tmp_path / "s0_boundaries.png"))
    assert labels.shape == boundaries.shape == (48, 48) and labels.max() >= 1
    assert np.array_equal(boundaries == 255, labels > 0)
    # parameters given outright are applied as given
    given = ["postprocess=watershed", "postprocess.tune=false", "postprocess.params.seed_threshold=0.99",
             "postprocess.params.min_seed_size=100000"]
    predict(compose_config("predict", f"ckpt={run}", f"input={root / 'images' / 's0.png'}",
                           f"output={tmp_path / 'given'}", *given))
    assert np.asarray(Image.open(tmp_path / "given" / "s0_labels.png")).max() == 1  # no seed survives: one segment


def test_a_streamed_prediction_refuses_the_runs_own_stage_in_one_line_before_tensorflow_loads(trained_with_stage,
                                                                                               tmp_path):
    import tifffile

    root, run, _, _ = trained_with_stage
    tifffile.imwrite(tmp_path / "s0.tif", np.asarray(Image.open(root / "images" / "s0.png")))
    streamed = ["predict", f"ckpt={run}", f"input={tmp_path / 's0.tif'}", f"output={tmp_path / 'out'}",
                "output_format=zarr"]  # postprocess unset: the run's own watershed, which segments whole images
    ((code, err, tensorflow),) = cli_errors(tmp_path, [streamed])
    assert code == 2 and len(err.strip().splitlines()) == 1 and not tensorflow, err
    assert "postprocess=watershed needs the whole image in memory" in err and "set postprocess=none" in err
    assert not (tmp_path / "out").exists()
