"""Scoring a run's chosen checkpoint at the end of training, reloaded from disk as a user would: on the
selection slices (what chose it) and on the report slices (what no choice saw)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from segexp.evaluation.predictor import inference_size, make_predictor
from segexp.evaluation.scoring import predict_slices, slice_scores
from segexp.models.loading import load_model
from segexp.rundir import RunDir


def score_checkpoint(cfg: DictConfig, run: RunDir, parts: dict) -> tuple[dict[str, float], Any, list]:
    """Returns (metrics, model, the report slices' probability maps) of the chosen checkpoint, reloaded from disk as a user would: `select_*`
    on the selection slices (what chose it, scored as during training) and `report_*` on the report
    slices (what no choice saw), predicted exactly as `segexp evaluate` predicts them (the inference
    group, at the training resolution, probabilities back at the labels'), with the ISBI scores always."""
    model = load_model(run.checkpoint)
    metrics, probs = {}, []
    select, report = parts["select"], parts["report"]
    if select.images:
        scores = slice_scores(model.loss, predict_slices(model, select.images), select.masks, select.foreground,
                              cfg.trainer.topology_metrics)
        metrics.update({f"select_{k}": float(v) for k, v in scores.items()})
    if report.images:
        predictor = make_predictor(model, cfg.inference, inference_size(cfg.inference, run))
        probs = [predictor(image) for image in report.images]
        scores = slice_scores(model.loss, probs, report.masks, report.foreground, True)
        metrics.update({f"report_{k}": float(v) for k, v in scores.items()})
    return metrics, model, probs
