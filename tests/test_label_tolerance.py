"""studies.label_tolerance in quick mode: the annotation scored as its own prediction is perfect by every measure,
and moving its membranes by a pixel costs the pixel scores far more than the segment scores."""

from __future__ import annotations

from studies import label_tolerance


def test_the_annotation_is_its_own_perfect_prediction_and_a_wider_membrane_costs_pixels_not_segments(tmp_path):
    result = label_tolerance.main(["--quick", "--out", str(tmp_path)])
    rows = {row[0]: row[1:] for row in result["tables"][0]["rows"]}
    assert rows["the annotation itself"] == [1.0, 1.0, 1.0, 1.0]
    v_rand, v_info, dice, accuracy = rows["membranes 1 px wider (dilated)"]
    assert v_rand > 0.99 and v_info > 0.99 and dice < 0.95 and accuracy < 0.99
    assert result["slices"] == ["25", "26", "27", "28", "29"]  # the default split's report block of ISBI
    assert "| membranes 1 px wider (dilated) |" in (tmp_path / "label_tolerance.md").read_text()
