"""The studies' own logic that needs no training: studies.label_tolerance in quick mode (the annotation scored as
its own prediction, altered), and how studies.replicates names a recipe with overrides."""

from __future__ import annotations

import pytest

from studies import label_tolerance, replicates


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
