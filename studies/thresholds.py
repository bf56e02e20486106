"""The pixel threshold as a lever: each finished run's checkpoint re-predicted on its selection and report
slices, the threshold with the best accuracy on the selection slices applied to the report slices, against
0.5 (studies.levers, studies.replicates, studies.study)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from bench import common

THRESHOLDS = [round(0.05 * i, 2) for i in range(1, 20)]


def threshold_lever(runs: Sequence, label: Callable[[Any], str]) -> list[dict[str, Any]]:
    """For each finished run: report accuracy and Dice at 0.5 and at the threshold with the best accuracy on
    the selection slices (re-predicted from its checkpoint as `segexp evaluate` predicts); `label` names a run."""
    from segexp.evaluation.metrics import pixel_scores
    from segexp.inference.predictor import inference_size, make_predictor
    from segexp.models.loading import load_model
    from segexp.rundir import RunDir
    from segexp.training.build import prepare_data

    rows = []
    for run in runs:
        if not run.finished:
            continue
        rundir = RunDir(Path(run.output_dir))
        cfg = rundir.saved_config()
        parts, _ = prepare_data(cfg)
        predict = make_predictor(load_model(rundir.checkpoint), cfg.inference, inference_size(cfg.inference, rundir))
        probs = {role: [predict(image) for image in parts[role].images] for role in ("select", "report")}
        scores = {role: {t: pixel_scores(probs[role], parts[role].masks, t, parts[role].foreground)
                         for t in THRESHOLDS} for role in probs}
        chosen = max(THRESHOLDS, key=lambda t: (scores["select"][t]["accuracy"], -abs(t - 0.5)))
        rows.append({"run": label(run), "run_id": run.run_id, "seed": run.params["trainer.seed"],
                     "threshold": chosen,
                     **{f"{k}@0.5": scores["report"][0.5][k] for k in ("accuracy", "dice")},
                     **{f"{k}@chosen": scores["report"][chosen][k] for k in ("accuracy", "dice")}})
    return rows


def threshold_verdicts(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Returns segexp compare's verdicts of the chosen threshold against 0.5 on accuracy and Dice, paired by run."""
    from segexp.experiments.replicates import difference, verdict

    return [verdict(difference(metric, {("run", r["run_id"]): r[f"{metric}@0.5"] for r in rows},
                               {("run", r["run_id"]): r[f"{metric}@chosen"] for r in rows}),
                    "threshold 0.5", "selected threshold", metric) for metric in ("accuracy", "dice")]


def threshold_table(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Returns the result table of threshold_lever's rows."""
    return common.table("Pixel threshold chosen on the selection slices (best accuracy) vs 0.5, report slices",
                        ["recipe", "seed", "threshold", "accuracy @0.5", "accuracy @chosen", "dice @0.5", "dice @chosen"],
                        [[r["run"], r["seed"], r["threshold"], r["accuracy@0.5"], r["accuracy@chosen"], r["dice@0.5"],
                          r["dice@chosen"]] for r in rows])
