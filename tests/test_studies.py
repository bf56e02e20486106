"""The studies' own logic that needs no training: studies.label_tolerance in quick mode (the annotation scored as
its own prediction, altered), how studies.replicates names a recipe with overrides, and how studies.partitioning
pools its fold records and pairs chosen checkpoints with last epochs."""

from __future__ import annotations

import pytest

from studies import label_tolerance, partitioning, replicates


def test_the_annotation_is_its_own_perfect_prediction_and_moved_boundaries_cost_pixels_more_than_segments(tmp_path):
    result = label_tolerance.main(["--quick", "--out", str(tmp_path)])
    rows = {row[0]: row[1:] for row in result["tables"][0]["rows"]}
    assert rows["the annotation itself"] == [1.0, 1.0, 1.0, 1.0]
    for moved in ("each boundary 1 px outward (membranes 2 px wider)", "shifted 1 px right and 1 px down"):
        v_rand, v_info, dice, accuracy = rows[moved]
        assert v_rand > 0.98 and v_info > 0.97 and dice < 0.95 and accuracy < 0.99, (moved, rows[moved])
    # thinner membranes open gaps where they were one or two pixels wide: cells merge, the segment scores fall
    assert rows["each boundary 1 px inward (membranes 2 px thinner)"][0] < 0.9
    # a larger move costs more on every pixel score
    assert rows["shifted 2 px right and 2 px down"][2] < rows["shifted 1 px right and 1 px down"][2]
    assert result["slices"] == ["25", "26", "27", "28", "29"]  # the default split's report block of ISBI
    assert "| shifted 2 px right |" in (tmp_path / "label_tolerance.md").read_text()


@pytest.mark.parametrize("recipe, name", [
    ("isbi_best", "isbi_best"),
    ("isbi_best model.base_filters=32", "isbi_best_model.base_filters-32"),
    ("isbi_best optimizer/schedule=constant split.report=[25,26]",
     "isbi_best_optimizer-schedule-constant_split.report--25-26-"),
])
def test_a_recipe_with_overrides_is_one_word_hydra_takes_as_it_is(recipe, name, tmp_path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert replicates.recipe_name(recipe) == name
    assert replicates.sweep_dir(tmp_path, recipe) == tmp_path / f"sweep_{name}"
    (run_name,) = OverridesParser.create().parse_overrides([f"run_name={name}"])
    assert run_name.value() == name and not run_name.is_sweep_override()


def fold_record(fold: int, checkpoint: str, select: tuple[float, float], report: tuple[float, float]) -> dict:
    """Returns a partitioning record of one fold with one stage of two grid points (a=0, a=1): each point's
    selection and report V_rand (two slices alike), V_info 0.1 above it."""
    points = [{"params": {"a": a}, "select": {"v_rand": [s] * 2, "v_info": [s + 0.1] * 2},
               "report": {"v_rand": [r] * 2, "v_info": [r + 0.1] * 2}} for a, s, r in zip((0, 1), select, report)]
    return {"recipe": "r", "fold": fold, "checkpoint": checkpoint, "stages": {"watershed": points}}


def test_last_epochs_are_paired_with_the_chosen_checkpoints_by_fold_and_never_win():
    chosen = [fold_record(f, "chosen", select=(0.95, 0.96), report=(0.90, 0.91 + f / 100)) for f in range(3)]
    # the last epochs' selection scores are higher (they would win a pooled rule) and prefer the other grid point
    last = [fold_record(f, "last", select=(0.99, 0.98), report=(0.93 + f / 100, 0.80)) for f in range(2)]
    del chosen[0]["checkpoint"]  # records scored before last epochs were scored hold the chosen checkpoint
    (choices, per_fold, against_last), (winner, against_record) = partitioning.tables(chosen + last)

    assert choices["rows"] == [["r", "watershed", "a=1", "0,1,2", "0.9600", "0.9200 ± 0.0248", "1.0200 ± 0.0248"]]
    assert "0.9600 on the selection blocks of folds 0,1,2" in winner  # the last epochs' 0.99 is not a candidate
    assert against_record.endswith("V_rand 0.9200 ± 0.0248 (-0.0679), V_info 1.0200 ± 0.0248 (+0.0282).")
    chosen[1]["pixel"], chosen[2]["pixel"] = {"dice": 0.8, "accuracy": 0.9}, {"dice": 0.82, "accuracy": 0.9}
    against_record = partitioning.tables(chosen + last)[1][1]
    assert against_record.endswith("over 2 report blocks: membrane Dice 0.8100 ± 0.1271, pixel accuracy 0.9000 ± 0.0000.")
    assert per_fold["rows"] == [["r", "watershed", "0.9100", "0.9200", "0.9300"]]
    # folds 0 and 1 have both; each checkpoint at its own pooled choice (chosen a=1, last a=0); last - chosen = +0.02
    ((recipe, stage, folds, at_chosen, at_last, difference, better, v_info),) = against_last["rows"]
    assert (recipe, stage, folds, at_chosen, at_last, better) == ("r", "watershed", "0,1", "0.9150", "0.9350", "2 of 2")
    assert difference.startswith("+0.0200 ± 0.0000") and v_info.startswith("+0.0200")
    assert partitioning.checkpoint_table(chosen) is None
