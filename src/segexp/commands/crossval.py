"""`segexp evaluate` of a cross-validation on its own data: every fold's model scores its own report block, which
no choice of that fold saw, and a segmentation stage is chosen once, pooled over every fold's selection block (each
predicted by that fold's own model), then applied to every report block.

Why pooled: one fold's five selection slices choose a stage's parameters noisily (a grid chosen on one 5-slice
block merged cells on the next one, issue 24); all folds' blocks together choose once for all, and every fold's
score stays clean, since no fold's report block chose anything. The per-fold scores go into the fold's own run
(`eval_*<suffix>`, paired by fold in `segexp compare`), their mean / std / 95% CI / n into the sweep's parent run,
and everything into metrics.json beside the chosen stage (postprocess.json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from segexp.config.instantiate import instantiate
from segexp.data.images import to_channels
from segexp.data.sets import SegmentationSet
from segexp.errors import ConfigError
from segexp.evaluation.metrics import segmentation_scores
from segexp.evaluation.scoring import as_maps, scores_of
from segexp.checks import check_checkpoint_classes, check_outputs, check_stage
from segexp.evaluation.slices import role_set
from segexp.evaluation.visualize import prediction_panel, write_png
from segexp.experiments.replicates import summarize
from segexp.inference.predictor import LoadedPredictor, load_predictor
from segexp.postprocessing import stage as stages
from segexp.reports import markdown_table
from segexp.rundir import ModelSource, RunDir
from segexp.tracking.tags import CHECKPOINT


@dataclass(frozen=True)
class Fold:
    index: int  # data.fold
    checkpoint: Path
    run: RunDir
    predictor: LoadedPredictor

    def predict(self, data: SegmentationSet) -> list[np.ndarray]:
        return [self.predictor.predict(to_channels(image, self.predictor.channels)) for image in data.images]


def fold_indices(source: ModelSource, ckpt: str) -> list[int] | None:
    """Returns the members' data.fold when `source` is the folds of one cross-validation (a sweep whose jobs
    each trained another fold of the same data.folds), else None; ConfigError when a fold ran more than once
    (several recipes or seeds per fold), whose blocks would be scored twice."""
    if not source.is_ensemble or any(run is None for _, run in source.members):
        return None
    saved = [run.saved_config() for _, run in source.members]
    counts = {OmegaConf.select(s, "data.folds") if s is not None else None for s in saved}
    if len(counts) != 1 or None in counts:
        return None
    indices = [int(OmegaConf.select(s, "data.fold")) for s in saved]
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:
        raise ConfigError(f"ckpt={ckpt}: the sweep trained fold(s) {repeated} more than once (several recipes or "
                          "seeds per fold); evaluate a sweep of one recipe's folds, or each run on its own")
    return indices


def choose_pooled(node: DictConfig | None, folds: list[Fold]) -> stages.Stage:
    """Returns the stage: none, postprocess.params as given (tune=false), else chosen on every fold's selection
    block pooled, each predicted by its own fold's model (what each fold chose for itself is not reused)."""
    saved = folds[0].run.saved_config()
    node = stages.of_run(node, saved)

    def pooled_selection():
        names, probs, truths = [], [], []
        for fold in folds:
            block = role_set(fold.run, "select")
            names += list(block.names)
            probs += fold.predict(block)
            truths += list(block.masks)
        return names, probs, truths
    check_stage(node, folds[0].predictor.target)
    return stages.resolve(node, None, pooled_selection, stages.objective_of_run(saved), "evaluate",
                          segmentation_scores, folds[0].predictor.target)


def fold_table(rows: list[dict[str, Any]], keys: list[str]) -> str:
    return markdown_table(["fold", "report slices", *keys],
                          [[r["fold"], ",".join(r["slices"]), *(f"{r['metrics'][k]:.4f}" for k in keys)] for r in rows])


def evaluate_folds(cfg: DictConfig, source: ModelSource, indices: list[int], output_dir: Path) -> dict[str, float]:
    """Scores every fold's model on its own report block with one stage chosen pooled over all selection blocks;
    logs each fold's scores into its run and their summaries into the sweep's parent; returns the means."""
    if cfg.slices is not None or cfg.allow_seen:
        raise ConfigError("slices: a cross-validation scores every fold's own report block; leave slices=null and "
                          "allow_seen=false, or name data=... to score the fold ensemble on other data")
    check_stage(cfg.postprocess)
    tracker = instantiate(cfg.tracking)
    folds = sorted((Fold(index, checkpoint, run, load_predictor(checkpoint, run, cfg.inference))
                    for index, (checkpoint, run) in zip(indices, source.members)), key=lambda f: f.index)
    reports = [role_set(fold.run, "report") for fold in folds]
    for fold, report in zip(folds, reports):
        check_checkpoint_classes(report, fold.run, cfg.ckpt)
        check_outputs(fold.predictor.outputs, report.classes, cfg.ckpt, fold.predictor.target)
    print(f"[segexp] cross-validation of {len(folds)} folds: each fold's model scores its own report block",
          flush=True)
    stage = choose_pooled(cfg.postprocess, folds)
    suffix = (("_tta" if cfg.inference.tta else "") + (f"_{stage.method}" if stage.active else "")
              + ("_pooled" if stage.chosen_on else ""))
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for fold, report in zip(folds, reports):
        predictions = fold.predict(report)
        probs = as_maps(predictions, fold.predictor.target)
        scored, _ = scores_of(probs, list(report.masks), report, cfg.inference.threshold)
        metrics, labels = stages.scores(stage, predictions, list(report.masks), scored, segmentation_scores)
        rows.append({"fold": fold.index, "checkpoint": str(fold.checkpoint), "slices": list(report.names),
                     "metrics": metrics})
        tags = {CHECKPOINT: str(fold.checkpoint), "evaluated_slices": ",".join(report.names),
                "evaluated_slices_status": "report",
                **({"evaluated_postprocess": f"{stage.method}, chosen pooled over {len(folds)} folds' selection "
                                             "blocks (see the sweep's parent run)" if stage.chosen_on
                    else stage.describe()} if stage.active else {})}
        with tracker.run("evaluate", tags, run_id=tracker.run_for_checkpoint(fold.checkpoint)):
            tracker.log_metrics({f"eval_{k}{suffix}": v for k, v in metrics.items()})
            shown = list(zip(report.names, report.images, report.masks, probs))[: cfg.log_images]
            for i, (name, image, truth, prob) in enumerate(shown):
                panel = prediction_panel(image, truth, prob, report.classes, labels[i] if labels else None)
                tracker.log_image(panel, f"eval{suffix}/{name}", 0)
                write_png(output_dir / "panels" / f"fold{fold.index}_{name}.png", panel)

    keys = list(rows[0]["metrics"])
    summaries = {k: summarize([r["metrics"][k] for r in rows]) for k in keys}
    means = {k: s.mean for k, s in summaries.items()}
    (output_dir / "postprocess.json").write_text(json.dumps(stage.record(), indent=2))
    (output_dir / "metrics.json").write_text(json.dumps(
        {"cross_validation": True, "postprocess": stage.record(), "folds": rows,
         "mean": means, "summary": {k: vars(s) for k, s in summaries.items()}}, indent=2))
    parent_tags = {"evaluated_cross_validation": f"{len(folds)} folds, each on its own report block",
                   **({"evaluated_postprocess": stage.describe()} if stage.active else {})}
    if source.parent_run_id:
        with tracker.run("evaluate", parent_tags, run_id=source.parent_run_id):
            tracker.log_metrics({f"eval_{k}{suffix}_{stat}": float(getattr(s, stat))
                                 for k, s in summaries.items() for stat in ("mean", "std", "ci95", "n")
                                 if np.isfinite(getattr(s, stat))})
            if stage.active:
                tracker.log_text(json.dumps(stage.record(), indent=2), f"eval{suffix}/postprocess.json")
    shown_keys = [k for k in ("v_rand", "v_info", "dice", "accuracy") if k in keys] or keys[:4]
    print(fold_table(rows, shown_keys))
    print(f"[segexp] {len(folds)} folds scored; per fold and their means in {output_dir / 'metrics.json'}"
          + (f"; means logged to the sweep's run {source.parent_run_id}" if source.parent_run_id else ""), flush=True)
    return means
