"""Scoring a run's chosen checkpoint at the end of training, reloaded from disk as a user would: on the
selection slices (what chose it, and what chooses the segmentation stage) and on the report slices (what
no choice saw)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from omegaconf import DictConfig

from segexp.data.affinities import target_of
from segexp.evaluation.metrics import confusion_matrix, segmentation_scores
from segexp.evaluation.scoring import as_maps, slice_scores
from segexp.inference.predictor import inference_size, make_predictor
from segexp.inference.tiling import predict_slices
from segexp.models.loading import load_model
from segexp.postprocessing import stage as stages
from segexp.rundir import RunDir, write_json_atomically


@dataclass
class ScoredCheckpoint:
    metrics: dict[str, float]
    model: Any
    report_probs: list[np.ndarray] = field(default_factory=list)  # probability maps (an affinity model's derived)
    report_labels: list[np.ndarray] = field(default_factory=list)  # the stage's segments ([] without one)
    stage: stages.Stage = field(default_factory=stages.Stage)
    confusion: dict[str, np.ndarray] = field(default_factory=dict)  # role -> (truth, predicted) pixel counts


def score_checkpoint(cfg: DictConfig, run: RunDir, parts: dict) -> ScoredCheckpoint:
    """Scores the chosen checkpoint, reloaded from disk as a user would: `select_*` on the selection slices
    (what chose it, scored as during training) and `report_*` on the report slices (what no choice saw),
    predicted exactly as `segexp evaluate` predicts them (the inference group, at the training resolution,
    probabilities back at the labels'), with the ISBI scores always for boundary maps, and the confusion
    matrix of each. A postprocess stage is chosen on the
    selection slices, predicted as the report ones are (`postprocess_select_*`, selected there), written to
    the run's postprocess.json, and applied once to the report slices."""
    model = load_model(run.checkpoint)
    metrics, confusion = {}, {}
    select, report = parts["select"], parts["report"]
    classes = select.classes if select.images else report.classes
    target = target_of(cfg.get("target"))
    if select.images:
        predictions = predict_slices(model, select.images)
        scores = slice_scores(model.loss, predictions, select.masks, select.foreground,
                              cfg.trainer.topology_metrics and classes.topology, classes, target, select.objects)
        metrics.update({f"select_{k}": float(v) for k, v in scores.items()})
        confusion["select"] = confusion_matrix(as_maps(predictions, target), select.masks, classes.count)
    predictor = make_predictor(model, cfg.inference, inference_size(cfg.inference, run), target)

    def selection():
        return list(select.names), [predictor(image) for image in select.images], list(select.masks)

    stage = stages.resolve(cfg.postprocess, None, selection if select.images else None,
                           stages.objective_of(cfg.trainer.monitor), "training",
                           segmentation_scores, target)
    if stage.chosen_on:
        metrics[f"postprocess_select_{stage.objective}"] = float(stage.score)
    if stage.active:
        write_json_atomically(run.postprocess_file, stage.record())
    maps, labels = [], []
    if report.images:
        predictions = [predictor(image) for image in report.images]
        scores, labels = stages.scores(stage, predictions, report.masks, slice_scores(
            model.loss, predictions, report.masks, report.foreground, classes.topology, classes, target,
            report.objects), segmentation_scores)
        metrics.update({f"report_{k}": float(v) for k, v in scores.items()})
        maps = as_maps(predictions, target)
        confusion["report"] = confusion_matrix(maps, report.masks, classes.count)
    return ScoredCheckpoint(metrics, model, maps, labels, stage, confusion)
