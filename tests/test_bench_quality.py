"""studies.quality end to end in quick mode: a real (tiny) training under a budget, evaluation of the
report slices with and without TTA, the learning curve, the table; then --reuse-training scores the
same checkpoint again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studies import metric_agreement, quality

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quality_trains_evaluates_and_rescoring_reuses_the_checkpoint(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    first = quality.main(["--quick", "--recipes", "seed_replica", "--out", str(tmp_path)])
    (row,) = first["recipes"]
    assert row["recipe"] == "seed_replica" and 0 < row["train_minutes"] < 5
    # chosen on slice 28, reported on slice 29: never the same slice
    assert (row["select_slices"], row["report_slices"]) == ("28", "29")
    for scores in (row["eval"], row["eval_tta"]):
        assert scores["slices"] == ["29"] and scores["slices_status"] == "report"
        assert all(0.0 <= scores[k] <= 1.0 for k in ("v_rand", "v_info", "dice", "accuracy"))
    # predicting "cell" everywhere scores the cell fraction as accuracy and no membrane Dice
    assert row["all_cell"]["dice"] == 0.0 and 0.6 < row["all_cell"]["accuracy"] < 0.95
    # seed_replica trains on slices resized to 256x256; evaluation predicts at that size too
    assert "predicting at 256x256" in capfd.readouterr().out
    assert {p["metric"] for p in row["curve"]} == set(quality.CURVE_METRICS)
    assert (tmp_path / "quality_quick_curve_seed_replica.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "quality_quick.md").read_text()
    assert "| seed_replica | 0.2 |" in table and "| 8-way |" in table and "| all cell (no model) |" in table
    assert first["command"].endswith("-m studies.quality --quick --recipes seed_replica --out " + str(tmp_path))

    again = quality.main(["--quick", "--reuse-training", "--recipes", "seed_replica", "--out", str(tmp_path)])
    (rescored,) = again["recipes"]
    scores = ("v_rand", "v_info", "dice", "accuracy")
    # same checkpoint, same prediction
    assert [rescored["eval"][k] for k in scores] == pytest.approx([row["eval"][k] for k in scores], abs=1e-6)
    assert rescored["train_minutes"] == pytest.approx(row["train_minutes"])  # from MLflow, not re-measured
    saved = json.loads((tmp_path / "quality_quick.json").read_text())
    assert saved["recipes"][0]["eval"]["v_rand"] == pytest.approx(row["eval"]["v_rand"])

    # the same run's report slices, scored by segexp.evaluation.metrics and by the literal Fiji transcription
    agreement = metric_agreement.main(["--quick", "--run", str(tmp_path / "quality_quick" / "seed_replica"),
                                       "--out", str(tmp_path)])
    assert agreement["slices"] == ["29"] and len(agreement["tables"][0]["rows"]) == 11
    assert agreement["max_abs_difference"] < 1e-9
