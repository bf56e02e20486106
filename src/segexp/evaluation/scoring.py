"""Scoring probability maps against their labels: the loss, the pixel and per-class scores and, for binary
boundary maps, the ISBI topology scores; with a segmentation stage, the scores of its segments. Used every epoch
on the selection slices, once on the report slices, and by `segexp evaluate`."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from segexp.data.affinities import BOUNDARY, Target, affinity_target, cell_map, slice_objects
from segexp.data.sets import BINARY, IGNORE, Classes, SegmentationSet
from segexp.evaluation.metrics import (
    class_scores, confusion_matrix, evaluate_slices, isbi_scores)


def slice_scores(loss: Callable, probs: Sequence[np.ndarray], masks: Sequence[np.ndarray], foreground: int,
                 topology: bool, classes: Classes = BINARY, target: Target = BOUNDARY,
                 objects: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """Returns loss (mean per slice), pooled accuracy, Dice and IoU at 0.5 (of class `foreground` for binary
    data, the mean over classes for more), dice_<class> and iou_<class> per class and, with `topology` (binary
    boundary maps), the ISBI scores v_rand and v_info (the challenge's: averaged per slice, best over
    thresholds). For an affinity `target`, `probs` are the affinities: the loss is theirs (against the slices'
    affinity targets, drawn from `objects`, the data's instance ids, when given), every other score that of the
    cell map they imply (data.affinities.cell_map)."""
    per_class = [f"{score}_{name}" for name in classes.names for score in ("dice", "iou")]
    names = ["loss", "accuracy", "dice", "iou", *per_class, *(["v_rand", "v_info"] if topology else [])]
    if not all(np.isfinite(p).all() for p in probs):  # a diverged model predicts NaN: no score, no checkpoint
        return dict.fromkeys(names, math.nan)
    if target.affinities:
        targets = [affinity_target(ids, target.offsets)[None]
                   for ids in slice_objects(masks, objects, foreground, IGNORE)]
    else:
        targets = [np.asarray(m, np.float32)[None, ..., None] for m in masks]
    import keras  # here, not at the top: `segexp evaluate` checks its inputs before TensorFlow loads (~6 s)

    batched = [p[None, ..., None] if p.ndim == 2 else p[None] for p in probs]
    losses = [float(keras.ops.convert_to_numpy(loss(t, p))) for t, p in zip(targets, batched)]
    scores = {"loss": float(np.mean(losses))}
    probs = as_maps(probs, target)
    scores.update(class_scores(confusion_matrix(probs, masks, classes.count), classes.names,
                               foreground if classes.binary else None))
    if topology:
        isbi = isbi_scores(list(probs), list(masks))
        scores.update(v_rand=isbi["v_rand"], v_info=isbi["v_info"])
    return scores


def as_maps(predictions: Sequence[np.ndarray], target: Target) -> list[np.ndarray]:
    """Returns the maps that pixel and map scores read: the predictions, or the cell maps affinities imply."""
    return [cell_map(p, target) for p in predictions] if target.affinities else list(predictions)


def scores_of(probs, truths, data: SegmentationSet, threshold: float) -> tuple[dict[str, float], np.ndarray]:
    """Returns (scores, confusion matrix): for a binary boundary map the ISBI and pixel scores (at `threshold`),
    per-class Dice and IoU for every data set, the mean over classes as dice/iou for K classes."""
    classes = data.classes
    matrix = confusion_matrix(probs, truths, classes.count, threshold)
    per_class = class_scores(matrix, classes.names, data.foreground if classes.binary else None)
    if classes.topology:
        return {**evaluate_slices(probs, truths, threshold, data.foreground),
                **{k: v for k, v in per_class.items() if k.startswith(("dice_", "iou_"))}}, matrix
    return {**per_class, "pixel_error": 1.0 - per_class["accuracy"]}, matrix

