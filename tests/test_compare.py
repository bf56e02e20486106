"""Replicates, cross-validation folds and `segexp compare`, on real tiny runs in a real store.

One sweep crosses a recipe that learns (lr 1e-2) with one that cannot (lr 1e-9) over three seeds; a
single run with other held-out slices gives the unfair case. Every test reads that store back.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats
from statsmodels.stats.power import TTestIndPower, TTestPower

from conftest import copy_store
from segexp.data.splits import held_out
from segexp.experiments import replicates
from segexp.experiments.comparison import markdown, printed_lines, read_comparison

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
ENV.pop("MLFLOW_TRACKING_URI", None)
# synthetic cells learn in seconds, so a working and a broken recipe differ beyond their seed spread
LEARNS = ["debug=smoke", "data=synthetic", "trainer.verbose=0", "trainer.preview_slices=0", "tracking.log_model=false",
          "trainer.crop_size=64", "trainer.epochs=3", "trainer.steps_per_epoch=10", "trainer.batch_size=4",
          "model.depth=1", "model.batch_norm=false", "model.base_filters=8"]  # a shallow net still finds 1-px membranes
WORKING, BROKEN = "optimizer.lr=0.01", "optimizer.lr=1e-09"
METRICS = ("report_v_rand", "report_v_info", "report_dice", "report_accuracy")


def segexp(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "segexp", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


pytestmark = pytest.mark.xdist_group("test_compare")  # one worker builds the module fixture once


@pytest.fixture(scope="module")
def store(tmp_path_factory, empty_store):
    """Returns (directory, client, sweep parent, {recipe override: children by seed}, other-split run)."""
    root = tmp_path_factory.mktemp("compare")
    copy_store(empty_store, root / "outputs" / "mlflow.db")  # the runs' default store, already made
    segexp(root, "train", "-m", *LEARNS, "optimizer.lr=1e-9,1e-2", "trainer.seed=1,2,3",
           f"hydra.sweep.dir={root / 'sweep'}")
    # the single run in this process, as `segexp train <overrides>` from root would run it (its default store
    # there, not the caller's): the sweep above already runs the CLI, this saves a TensorFlow import
    from conftest import compose_config
    from segexp.training.train import train

    overrides = [*LEARNS, "optimizer.lr=1e-2", "split.select=[-4]", "split.report=[-3]"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        train(compose_config("train", *overrides), root / "other_split", overrides)
    client = MlflowClient(f"sqlite:///{root / 'outputs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("segexp").experiment_id])
    (parent,) = [r for r in runs if r.info.run_name.startswith("sweep ")]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    recipes = {lr: sorted((r for r in children if lr in r.data.tags["overrides"].split()),
                          key=lambda r: r.data.params["trainer.seed"]) for lr in (WORKING, BROKEN)}
    (other,) = [r for r in runs if r.data.tags.get("output_dir") == str(root / "other_split")]
    return root, client, parent, recipes, other


def test_the_module_group_reaches_xdist_so_one_worker_builds_the_store(request):
    """Under pytest 9, xdist_group was silently ignored (pytest-xdist#1386) and every worker trained its own store."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("runs in one process (-n0): nothing to group")
    assert request.node.nodeid.endswith("@test_compare")


@pytest.mark.slow
def test_replicates_parent_carries_mean_std_ci_and_n_per_recipe_as_numpy_computes_them(store):
    _, _, parent, recipes, _ = store
    assert all(len(runs) == 3 for runs in recipes.values())
    for recipe, runs in recipes.items():
        prefix = replicates.metric_label(recipe) + "/"
        for metric in METRICS:
            values = np.array([r.data.metrics[metric] for r in runs])
            std = values.std(ddof=1)
            assert parent.data.metrics[f"{prefix}{metric}_mean"] == pytest.approx(values.mean(), abs=1e-12)
            assert parent.data.metrics[f"{prefix}{metric}_std"] == pytest.approx(std, abs=1e-12)
            assert parent.data.metrics[f"{prefix}{metric}_ci95"] == pytest.approx(
                stats.t.ppf(0.975, 2) * std / math.sqrt(3), abs=1e-12)
            assert parent.data.metrics[f"{prefix}{metric}_n"] == 3


@pytest.mark.slow
def test_compare_names_the_working_recipe_and_finds_no_difference_of_a_recipe_with_itself(store):
    root, client, parent, recipes, _ = store
    parent_id = parent.info.run_id
    # the sweep twice: A broken, B working, C broken again, D working again - each later one against A
    out = segexp(root, "compare", parent_id, str(root / "sweep"), f"hydra.run.dir={root / 'cmp'}",
                 "target_difference=0.005")
    lines = [line for line in out.stdout.splitlines() if line.startswith("[segexp] ")]
    assert any(f"A ({BROKEN})" in line for line in lines) and any(f"B ({WORKING})" in line for line in lines)
    v_rand = [line for line in lines if " v_rand " in line]
    assert v_rand[0].startswith(f"[segexp] B ({WORKING}) beats A ({BROKEN}) on v_rand by ")
    assert "paired by seed, B ahead in 3 of 3" in v_rand[0]
    assert v_rand[1].startswith("[segexp] no detectable difference on v_rand (+0.0000 ± 0.0000, p = 1")  # C: itself
    assert v_rand[2].startswith(f"[segexp] D ({WORKING}) beats A ({BROKEN}) on v_rand by ")
    assert not any("WARNING" in line for line in lines)

    diff = [recipes[WORKING][i].data.metrics["report_v_rand"] - recipes[BROKEN][i].data.metrics["report_v_rand"]
            for i in range(3)]
    expected_p = stats.ttest_rel([r.data.metrics["report_v_rand"] for r in recipes[WORKING]],
                                 [r.data.metrics["report_v_rand"] for r in recipes[BROKEN]]).pvalue
    assert f"by {np.mean(diff):.4f} ± " in v_rand[0] and f"p = {expected_p:.2g}," in v_rand[0]

    # what 3 paired seeds could have seen, and what a 0.005 difference would need (statsmodels' power figures)
    spread = np.std(diff, ddof=1)
    detectable = TTestPower().solve_power(effect_size=None, nobs=3, alpha=0.05, power=0.8) * spread
    needed = math.ceil(TTestPower().solve_power(effect_size=0.005 / spread, nobs=None, alpha=0.05, power=0.8))
    (power,) = [line for line in lines if line.startswith("[segexp] B vs A on v_rand: ")]
    assert f"3 pairs by seed with spread {spread:.4f} detect a difference of {detectable:.4f} or more" in power
    assert power.endswith(f"; 0.005 would need {needed} pairs by seed")
    # what the resolved configs differ in: the learning rate alone, read from the runs' own params
    # (the schedule's rate interpolates optimizer.lr, so the resolved configs differ there too)
    assert [line for line in lines if line.startswith("[segexp] config ")] == [
        "[segexp] config optimizer.lr: A 1e-09, B 0.01, C 1e-09, D 0.01",
        "[segexp] config optimizer.schedule.lr: A 1e-09, B 0.01, C 1e-09, D 0.01"]

    # its own MLflow run, tagged with the compared runs, holding the report that opens without MLflow
    (run_id,) = re.findall(r"MLflow run ([0-9a-f]{32})", out.stdout)  # the run this command logged, not any other
    run = client.get_run(run_id)
    assert run.info.experiment_id == client.get_experiment_by_name("segexp-compare").experiment_id
    compared = set(run.data.tags["compared_runs"].split(","))
    assert compared == {r.info.run_id for runs in recipes.values() for r in runs}
    assert run.data.metrics["B_minus_A/report_v_rand_diff"] == pytest.approx(np.mean(diff))
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"comparison.json", "report.html", "report.md",
                                                                        "panel.png", "curves.png"}
    page = (root / "cmp" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "beats" in page
    # the same comparison as data: what was printed and the report are rendered from it
    data = read_comparison(root / "cmp")
    assert [f"[segexp] {line}" for line in printed_lines(data)] == lines[:-1]  # all but where the report is
    assert (root / "cmp" / "report.md").read_text() == markdown(data)
    (b_v_rand,) = [d for d in data["differences"] if d["letter"] == "B" and d["metric"] == "report_v_rand"]
    assert b_v_rand["diff"] == pytest.approx(np.mean(diff)) and b_v_rand["p"] == pytest.approx(expected_p)
    assert b_v_rand["paired_by"] == "seed" and b_v_rand["b_ahead"] == 3 and b_v_rand["detectable"] == pytest.approx(detectable)


@pytest.mark.slow
def test_compare_warns_when_the_runs_held_out_different_slices(store, tmp_path):
    from segexp.config.compose import compose
    from segexp.experiments.compare import compare

    root, _, _, recipes, other = store
    uri = f"tracking.uri=sqlite:///{root / 'outputs' / 'mlflow.db'}"
    same = recipes[WORKING][0].info.run_id
    for runs, expected in (([same, recipes[BROKEN][0].info.run_id], []),
                           ([same, other.info.run_id], ["held-out (report) slices differ"])):
        cfg = compose("compare", [f"runs=[{','.join(runs)}]", uri])
        compare(cfg, tmp_path / "out")
        text = (tmp_path / "out" / "report.md").read_text()
        warnings = [line for line in text.splitlines() if line.startswith("- WARNING")]
        assert [w for w in warnings if any(e in w for e in expected)] == warnings and len(warnings) == len(expected)
        assert "not testable with n = 1" in text  # single runs: a difference, but no error bar


def test_variants_compare_two_evaluations_of_the_same_checkpoints_paired(store, tmp_path):
    """As `segexp evaluate ... postprocess=watershed` logs eval_*_watershed beside eval_* in the same runs."""
    from segexp.config.compose import compose
    from segexp.errors import ConfigError
    from segexp.experiments.compare import compare

    root, client, _, recipes, _ = store
    uri = f"tracking.uri=sqlite:///{root / 'outputs' / 'mlflow.db'}"
    shifts = [0.010, 0.012, 0.014]  # what the second evaluation adds, seed by seed
    for runs in recipes.values():
        for run, shift in zip(runs, shifts):
            client.log_metric(run.info.run_id, "report_v_rand_later", run.data.metrics["report_v_rand"] + shift)
    with pytest.raises(ConfigError, match="compare needs two recipes"):  # one run, one variant: nothing to compare
        compare(compose("compare", [f"runs=[{recipes[WORKING][0].info.run_id}]", uri]), tmp_path / "none")
    cfg = compose("compare", [f"runs=[{root / 'sweep'}]", uri, "metrics=[report_v_rand]", "variants=['',_later]"])
    differences = compare(cfg, tmp_path / "out")
    later = differences[0]  # B: the first recipe's runs, read as their _later evaluation, against A: as logged
    assert later.paired_by == "seed" and later.n == 3
    assert later.diff == pytest.approx(np.mean(shifts))
    text = (tmp_path / "out" / "report.md").read_text()
    assert "[as logged]" in text and "[later]" in text


def test_a_comparison_is_data_that_reads_back_renders_the_report_and_refuses_an_older_compare_directory(tmp_path):
    """comparison.json from records alone (no store): what studies and renderers read instead of the prose."""
    from segexp.errors import ConfigError
    from segexp.experiments.compare import Entry, comparison_data, metric_rows
    from segexp.experiments.comparison import differences_by_letter, table_rows, write_comparison
    from segexp.tracking.records import RunRecord

    def runs(scores, lr):
        return tuple(RunRecord(f"{lr}{seed}", params={"trainer.seed": str(seed), "optimizer.lr": lr},
                               metrics={"report_v_rand": v}) for seed, v in enumerate(scores, 1))

    entries = [Entry("A", "lr=0.1", "sweep_a", runs([0.90, 0.92, 0.91], "0.1")),
               Entry("B", "lr=0.2", "sweep_b", runs([0.93, 0.94, 0.95], "0.2")),
               Entry("C", "one run", "run_c", runs([0.5], "0.3"))]
    rows = metric_rows(entries, ["report_v_rand"])
    data = comparison_data(entries, rows, {"B": [], "C": ["data differ: A x; C y"]}, {}, ["no slice panel"],
                           [("optimizer.lr", ["0.1", "0.2", "0.3"])], 0.01)
    write_comparison(data, tmp_path)
    back = read_comparison(tmp_path)
    assert back == data
    b, c = back["differences"]
    assert b["diff"] == pytest.approx(0.03) and b["p"] == pytest.approx(stats.ttest_rel([0.93, 0.94, 0.95],
                                                                                     [0.90, 0.92, 0.91]).pvalue)
    assert b["a"]["n"] == 3 and b["paired_by"] == "seed" and b["verdict"].startswith("B (lr=0.2) beats A (lr=0.1)")
    assert c["p"] is None and c["ci95"] is None and c["paired_by"] is None  # not testable: null, never NaN
    assert differences_by_letter(back) == {"B": {"report_v_rand": (b["diff"], b["ci95"], b["p"])}}
    text = markdown(back)
    assert "| report_v_rand | 0.9100 ± 0.0100" in text and "- WARNING data differ: A x; C y" in text
    assert "- A and B: same budget" in text and "| optimizer.lr | 0.1 | 0.2 | 0.3 |" in text
    assert [row[0] for row in table_rows(back, "report_")] == ["report_v_rand", "report_v_rand"]
    assert printed_lines(back)[:3] == ["A (lr=0.1): sweep_a, 3 run(s)", "B (lr=0.2): sweep_b, 3 run(s)",
                                       "C (one run): run_c, 1 run(s)"]
    assert "config optimizer.lr: A 0.1, B 0.2, C 0.3" in printed_lines(back)

    older = tmp_path / "older"  # what segexp compare wrote before: the report, no data
    older.mkdir()
    (older / "report.md").write_text(text)
    with pytest.raises(ConfigError, match=r"older/?: no comparison.json .* run `segexp compare` of the same runs again$"):
        read_comparison(older)


def test_paired_difference_matches_scipy():
    a = {("seed", "1"): 0.90, ("seed", "2"): 0.92, ("seed", "3"): 0.91}
    b = {("seed", "1"): 0.93, ("seed", "2"): 0.94, ("seed", "3"): 0.95}
    d = replicates.difference("report_v_rand", a, b)
    deltas = np.array([0.03, 0.02, 0.04])
    assert d.paired_by == "seed" and d.n == 3
    assert d.diff == pytest.approx(deltas.mean())
    assert d.ci95 == pytest.approx(stats.t.ppf(0.975, 2) * deltas.std(ddof=1) / math.sqrt(3))
    assert d.p == pytest.approx(stats.ttest_rel(list(b.values()), list(a.values())).pvalue)
    assert replicates.verdict(d, "A", "B", "v_rand").startswith("B beats A on v_rand by 0.0300 ± ")


def test_unpaired_difference_is_welch_and_a_lower_loss_wins():
    a = {("seed", "1"): 0.50, ("seed", "2"): 0.40, ("seed", "3"): 0.45}
    b = {("seed", "7"): 0.20, ("seed", "8"): 0.25}
    d = replicates.difference("report_loss", a, b)
    assert d.paired_by is None
    assert d.p == pytest.approx(stats.ttest_ind([0.20, 0.25], [0.50, 0.40, 0.45], equal_var=False).pvalue)
    assert replicates.verdict(d, "A", "B").startswith("B beats A on report_loss")


def test_single_runs_are_not_testable_and_equal_values_are_no_difference():
    one = replicates.difference("report_dice", {("seed", "1"): 0.8}, {("seed", "1"): 0.9})
    assert math.isnan(one.p) and "not testable" in replicates.verdict(one, "A", "B")
    same = replicates.difference("report_dice", {("fold", "0/6"): 0.8, ("fold", "1/6"): 0.7},
                                 {("fold", "0/6"): 0.8, ("fold", "1/6"): 0.7})
    assert same.paired_by == "fold" and same.p == 1.0
    assert replicates.verdict(same, "A", "B").startswith("no detectable difference")


def test_summarize_ignores_nan_and_needs_two_values_for_a_spread():
    s = replicates.summarize([0.9, math.nan, 0.8])
    assert s.n == 2 and s.mean == pytest.approx(0.85) and s.std == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert math.isnan(replicates.summarize([0.9]).ci95)


@pytest.mark.parametrize("count, folds, fold, select, report", [
    (30, 6, 5, list(range(20, 25)), list(range(25, 30))),  # the holdout split is the last fold
    (30, 6, 0, list(range(25, 30)), list(range(0, 5))),    # the first fold selects on the last block
    (10, 3, 1, [0, 1, 2, 3], [4, 5, 6]),                    # uneven blocks: 4, 3, 3
])
def test_folds_are_contiguous_blocks_selecting_on_the_block_before(count, folds, fold, select, report):
    assert held_out([-2], [-1], count, folds, fold) == (select, report)
    assert held_out([], [-1], count, folds, fold) == ([], report)  # split.select=[] still selects nothing


def test_recipes_group_by_everything_but_seed_and_fold():
    from segexp.tracking.records import RunRecord

    def run(overrides):
        return RunRecord("0" * 32, tags={"overrides": overrides})

    runs = [run("aug=heavy optimizer.lr=0.1 trainer.seed=1"), run("aug=heavy optimizer.lr=0.1 trainer.seed=2"),
            run("aug=heavy optimizer.lr=0.2 data.fold=1 trainer.seed=1"),
            # a job that `segexp train -m resume=DIR` ran again belongs with the jobs it kept
            run("aug=heavy optimizer.lr=0.1 trainer.seed=3 resume_sweep=True hydra.sweep.dir=x")]
    groups = replicates.group_by_recipe(runs)
    assert {k: len(v) for k, v in groups.items()} == {"optimizer.lr=0.1": 3, "optimizer.lr=0.2": 1}


@pytest.mark.slow
def test_a_cross_validation_aggregates_its_folds_predicts_as_an_ensemble_and_scores_fold_by_fold(tmp_path, default_store):
    from PIL import Image

    from segexp.config.compose import compose
    from segexp.data.datasets import load
    from segexp.data.images import to_channels
    from segexp.commands.evaluate import evaluate
    from segexp.evaluation.metrics import segmentation_scores
    from segexp.evaluation.slices import role_set
    from segexp.commands.predict import predict
    from segexp.inference.predictor import load_predictor
    from segexp.postprocessing.stage import Stage
    from segexp.experiments.compare import compare
    from segexp.commands.crossval import evaluate_folds, fold_indices
    from segexp.tracking.references import resolve_checkpoint, resolve_model_source

    sweep_dir = tmp_path / "cv"
    segexp(tmp_path, "train", "-m", *LEARNS, "trainer.epochs=1", "data.folds=3", "data.fold=range(3)",
           f"hydra.sweep.dir={sweep_dir}")
    uri = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    client = MlflowClient(uri)
    parent_id = json.loads((sweep_dir / "sweep.json").read_text())["parent_run_id"]
    folds = sorted(client.search_runs([client.get_run(parent_id).info.experiment_id],
                                      f"tags.mlflow.parentRunId = '{parent_id}'"),
                   key=lambda r: int(r.data.params["data.fold"]))
    # 12 synthetic slices in blocks 0-3, 4-7, 8-11: each fold reports its block and selects on the one before
    assert [(r.data.tags["split.select"], r.data.tags["split.report"]) for r in folds] == [
        (",".join(f"synthetic_{i}" for i in range(s, s + 4)), ",".join(f"synthetic_{i}" for i in range(b, b + 4)))
        for s, b in ((8, 0), (0, 4), (4, 8))]
    values = [r.data.metrics["report_dice"] for r in folds]
    metrics = client.get_run(parent_id).data.metrics
    assert metrics["report_dice_mean"] == pytest.approx(np.mean(values), abs=1e-12)
    assert metrics["report_dice_n"] == 3

    # predict with the sweep directory: the mean of the three fold models' probabilities
    image = tmp_path / "in" / "slice.png"
    image.parent.mkdir()
    Image.fromarray((np.random.default_rng(0).random((96, 80)) * 255).astype(np.uint8)).save(image)
    predict(compose("predict", [f"ckpt={sweep_dir}", f"input={image}", f"output={tmp_path / 'out'}"]))
    written = np.asarray(Image.open(tmp_path / "out" / "slice.png"), np.float32) / 255
    pixels = np.asarray(Image.open(image), np.float32)[..., None] / 255
    members = [load_predictor(*resolve_checkpoint(str(sweep_dir / str(i))), compose("predict").inference).predict
               for i in range(3)]
    assert np.abs(written - np.mean([m(pixels) for m in members], axis=0)).max() <= 1 / 255

    # on other data the sweep is one model, the mean of its folds', scored into the parent
    scores = evaluate(compose("evaluate", [f"ckpt={parent_id}", f"tracking.uri={uri}", "data=synthetic",
                                           "data.seed=7"]), tmp_path / "eval")
    logged = client.get_run(parent_id)
    assert logged.data.metrics["ensemble_eval_v_rand"] == pytest.approx(scores["v_rand"])
    assert logged.data.tags["ensemble_size"] == "3" and logged.info.status == "FINISHED"

    # on its own data, a cross-validation: every fold's model on its own report block, one watershed chosen over
    # all three selection blocks pooled (12 slices) and applied to every report block
    out = segexp(tmp_path, "evaluate", f"ckpt={sweep_dir}", "postprocess=watershed",
                 "postprocess.grid.seed_threshold=[0.5,0.8]", "postprocess.grid.min_seed_size=[5]",
                 "postprocess.grid.sigma=[0.0]", f"hydra.run.dir={tmp_path / 'cv_eval'}").stdout
    assert "cross-validation of 3 folds" in out
    result = json.loads((tmp_path / "cv_eval" / "metrics.json").read_text())
    assert sorted(result["postprocess"]["chosen_on"]) == sorted(f"synthetic_{i}" for i in range(12))
    params = result["postprocess"]["params"]
    # recomputed: the chosen point is the best of the grid over the 12 selection slices, each fold's by its model
    pooled = {threshold: [] for threshold in (0.5, 0.8)}
    members = {}  # each fold's model, loaded once for the selection and the report blocks
    for fold in result["folds"]:
        checkpoint, run_dir = resolve_checkpoint(fold["checkpoint"])
        member = members[fold["checkpoint"]] = load_predictor(checkpoint, run_dir,
                                                              compose("evaluate").inference).predict
        block = role_set(run_dir, "select")
        for threshold, labels in pooled.items():
            grid_point = Stage("watershed", {"seed_threshold": threshold, "min_seed_size": 5, "sigma": 0.0})
            labels += [(grid_point.apply(member(to_channels(image, 1))), truth)
                       for image, truth in zip(block.images, block.masks)]
    scored = {t: segmentation_scores(*zip(*pairs))["v_rand"] for t, pairs in pooled.items()}
    assert params == {"seed_threshold": max(scored, key=scored.get), "min_seed_size": 5, "sigma": 0.0}
    assert result["postprocess"]["score"] == pytest.approx(max(scored.values()), abs=1e-12)
    stage = Stage("watershed", params)
    data = load(compose("train", LEARNS).data)
    for fold, run in zip(result["folds"], folds):
        assert fold["slices"] == run.data.tags["split.report"].split(",")
        # rescored here from the fold's own model and block: the pooled parameters, on that fold's report slices
        block = [data.names.index(name) for name in fold["slices"]]
        member = members[fold["checkpoint"]]
        labels = [stage.apply(member(to_channels(data.images[i], 1))) for i in block]
        expected = segmentation_scores(labels, [data.masks[i] for i in block])["v_rand"]
        assert fold["metrics"]["v_rand"] == pytest.approx(expected, abs=1e-9)
        assert client.get_run(run.info.run_id).data.metrics["eval_v_rand_watershed_pooled"] == pytest.approx(expected)
    parent = client.get_run(parent_id).data.metrics
    assert parent["eval_v_rand_watershed_pooled_mean"] == pytest.approx(np.mean([f["metrics"]["v_rand"]
                                                                                  for f in result["folds"]]))
    assert parent["eval_v_rand_watershed_pooled_n"] == 3
    # and the map of the same folds (in-process: the command above ran the CLI), paired by fold in compare
    source = resolve_model_source(str(sweep_dir))
    evaluate_folds(compose("evaluate", [f"ckpt={sweep_dir}", f"tracking.uri={uri}", "postprocess=none"]), source,
                   fold_indices(source, str(sweep_dir)), tmp_path / "cv_map")
    [difference] = compare(compose("compare", [f"runs=[{sweep_dir}]", f"tracking.uri={uri}", "metrics=[eval_v_rand]",
                                               "variants=['',_watershed_pooled]"]), tmp_path / "cv_compare")
    assert (difference.paired_by, difference.n) == ("fold", 3)
    assert difference.b.mean == pytest.approx(parent["eval_v_rand_watershed_pooled_mean"])


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
def test_detectable_differences_and_replicates_needed_match_statsmodels(n):
    spread = 0.0123
    paired = TTestPower().solve_power(effect_size=None, nobs=n, alpha=0.05, power=0.8) * spread
    assert replicates.detectable_difference(spread, n, paired=True) == pytest.approx(paired, rel=1e-5)
    # unpaired sides: spread is the std of one difference, sqrt(2) times each side's std
    unpaired = TTestIndPower().solve_power(effect_size=None, nobs1=n, ratio=1.0, alpha=0.05, power=0.8) * spread
    assert replicates.detectable_difference(spread * math.sqrt(2), n, paired=False) == pytest.approx(unpaired, rel=1e-5)
    # half those differences need more replicates than n: as many as statsmodels solves for, rounded up
    assert replicates.replicates_needed(paired / 2, spread, paired=True) == math.ceil(
        TTestPower().solve_power(effect_size=paired / 2 / spread, nobs=None, alpha=0.05, power=0.8))
    assert replicates.replicates_needed(unpaired / 2, spread * math.sqrt(2), paired=False) == math.ceil(
        TTestIndPower().solve_power(effect_size=unpaired / 2 / spread, nobs1=None, alpha=0.05, power=0.8))


def test_a_comparison_without_a_spread_has_no_power_figure():
    assert math.isnan(replicates.detectable_difference(math.nan, 3, paired=True))
    assert math.isnan(replicates.detectable_difference(0.01, 1, paired=True))
    assert replicates.replicates_needed(0.01, math.nan, paired=True) is None
    assert replicates.replicates_needed(1e-9, 1.0, paired=True) is None  # beyond MOST_REPLICATES
