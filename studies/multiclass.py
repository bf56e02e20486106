"""A multi-class example, measured: data=shapes (4 classes, generated), three seeds, per-class scores on the
report slices, the confusion matrix, colour panels and per-class learning curves, as MLflow holds them.

    python -m studies.multiclass                  # 3 seeds x 3 training minutes into outputs/study_multiclass
    python -m studies.multiclass --quick          # seconds; the numbers are noise

The runs are a `segexp train -m` sweep (one MLflow parent, a child per seed): `mlflow ui --backend-store-uri
sqlite:///<store>/mlflow.db` shows them. This writes bench/results/multiclass.{json,md} and the pictures that
docs/multi-class.md shows (`python -m bench.render` puts the table there).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench import common, render
from studies.replicates import segexp

NAME = "multiclass"
TITLE = "Multi-class: 4 classes of generated shapes, per-class scores over 3 seeds"
RECIPE = ["data=shapes", "data.count=32", "loss=ce_dice_balanced", "trainer.crop_size=64", "trainer.batch_size=8",
          "trainer.epochs=1000", "trainer.steps_per_epoch=25", "inference.tile=96"]
METHOD = ("`segexp train -m data=shapes data.count=32 loss=ce_dice_balanced trainer.seed=1,2,3` (model unet_small, "
          "crops 64 px, a training budget per seed): 32 generated 96x96 slices of discs, squares and rings on a "
          "textured background; split holdout: selection slices 22-26 (the checkpoint is the best mean Dice there), "
          "report slices 27-31 (no choice saw them). Dice and IoU per class and their mean over the 4 classes, "
          "each pixel's class the most probable one.")
CLASSES = ("background", "disc", "square", "ring")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--store", type=Path, default=common.REPO / "outputs" / "study_multiclass")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--budget-minutes", type=float, default=3.0)
    return parser.parse_known_args(argv)


def train(store: Path, seeds: Sequence[int], minutes: float, quick: bool) -> Path:
    """Trains the sweep into the store; returns its folder."""
    sweep = store / "sweep"
    shutil.rmtree(sweep, ignore_errors=True)
    budget = ["debug=smoke", "trainer.epochs=2", "data.count=16", "trainer.steps_per_epoch=4"] if quick else \
        [f"trainer.max_minutes={minutes:g}"]
    segexp("train", "-m", *RECIPE, *budget, f"trainer.seed={','.join(map(str, seeds))}", "trainer.verbose=0",
           f"tracking.uri=sqlite:///{store / 'mlflow.db'}", "tracking.experiment_name=multiclass",
           "run_name=shapes", f"hydra.sweep.dir={sweep}")
    return sweep


def curves_picture(uri: str, children, path: Path) -> Path:
    """Draws each class's selection Dice per epoch, one line per seed, as MLflow's chart of one metric across
    runs would."""
    from segexp.reports import Curve, curves_figure
    from segexp.tracking.store import metric_history

    panels = {}
    for name in CLASSES:
        panels[f"select_dice_{name}"] = [
            Curve(f"seed {r.params['trainer.seed']}", *zip(*metric_history(uri, r.run_id, f"select_dice_{name}")))
            for r in children]
    curves_figure(panels, "{metric} per epoch").savefig(path, dpi=80)
    return path


def slice_panel(local: Path, path: Path) -> Path:
    """Writes image | truth | prediction of one report slice (as the run logged them) side by side."""
    from PIL import Image

    from segexp.evaluation.visualize import side_by_side, write_png

    stem = sorted(p.name.split(".")[0] for p in local.glob("*.truth.png"))[0]
    tiles = [np.asarray(Image.open(local / f"{stem}.{kind}.png").convert("RGB")).repeat(3, 0).repeat(3, 1)
             for kind in ("image", "truth", "prediction")]  # 3x, nearest: a 96-pixel slice is small on a page
    write_png(path, side_by_side(tiles, 4))
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    import os

    from segexp.rundir import read_sweep_record
    from segexp.tracking.store import artifact_paths, download_artifacts
    from segexp.tracking.sweeps import sweep_record

    known, rest = parse_args(argv)
    args = common.parse_args(NAME, TITLE, rest, package="studies")
    result = common.new_result(NAME, TITLE, METHOD, args, argv, {"seeds": known.seeds,
                                                                 "budget_minutes": known.budget_minutes},
                               package="studies")
    store = known.store.resolve()
    store.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    started = time.monotonic()
    sweep = train(store, known.seeds, known.budget_minutes, args.quick)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    recorded = sweep_record(uri, read_sweep_record(sweep).parent_run_id)
    parent, children = recorded.parent, sorted(recorded.children, key=lambda r: int(r.params["trainer.seed"]))
    keys = ["report_dice", "report_accuracy", *(f"report_dice_{c}" for c in CLASSES)]  # what a sweep parent aggregates
    rows = [[int(r.params["trainer.seed"]), int(r.metrics["epochs_run"]), *(r.metrics.get(k) for k in keys)]
            for r in children]
    summary = [[k.removeprefix("report_"), *(parent.metrics.get(f"{k}_{s}") for s in ("mean", "std", "ci95"))]
               for k in keys]
    result["tables"] = [
        common.table("Each seed, report slices", ["seed", "epochs", *(k.removeprefix("report_") for k in keys)], rows),
        common.table("Over the seeds (the sweep's parent run)", ["metric", "mean", "std", "95% CI half-width"],
                     summary)]
    first = children[0]
    local = store / "artifacts"
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    for folder in ("confusion", "report_slices"):
        download_artifacts(uri, first.run_id, folder, local)
    args.out.mkdir(parents=True, exist_ok=True)
    pictures = {"confusion": args.out / f"{NAME}_confusion.png", "panel": args.out / f"{NAME}_panel.png",
                "curves": args.out / f"{NAME}_curves.png"}
    shutil.copy(local / "confusion" / "report.png", pictures["confusion"])
    slice_panel(local / "report_slices", pictures["panel"])
    curves_picture(uri, children, pictures["curves"])
    result.update(store=str(store), minutes=(time.monotonic() - started) / 60,
                  metric_keys=sorted(k for k in first.metrics if k.startswith(("report_", "select_"))),
                  artifacts=artifact_paths(uri, first.run_id))
    result["notes"] = [f"The pictures are of seed {first.params['trainer.seed']}'s run: its confusion matrix of "
                       "the report slices as logged (`confusion/report.png`), one report slice as logged "
                       "(`report_slices/`), and every seed's per-class selection Dice per epoch."]
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
