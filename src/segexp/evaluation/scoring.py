"""Scoring a model on whole slices: one forward pass per slice, then the loss, the pixel and per-class scores
and, for binary boundary maps, the ISBI topology scores. Used every epoch on the selection slices and once on
the report slices."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import keras
import numpy as np

from segexp.data.sets import BINARY, Classes
from segexp.evaluation.metrics import class_scores, confusion_matrix, isbi_scores


def predict_slices(model: keras.Model, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Returns probability maps of whole images, one forward pass each (sizes may differ): (H, W) of class 1
    for a binary model, (H, W, K) class probabilities for a K-class one."""
    outputs = [np.asarray(model.predict_on_batch(image[None]), np.float32)[0] for image in images]
    return [out[..., 0] if out.shape[-1] == 1 else out for out in outputs]


def slice_scores(loss: Callable, probs: Sequence[np.ndarray], masks: Sequence[np.ndarray], foreground: int,
                 topology: bool, classes: Classes = BINARY) -> dict[str, float]:
    """Returns loss (mean per slice), pooled accuracy, Dice and IoU at 0.5 (of class `foreground` for binary
    data, the mean over classes for more), dice_<class> and iou_<class> per class and, with `topology` (binary
    boundary maps), the ISBI scores v_rand and v_info (the challenge's: averaged per slice, best over
    thresholds)."""
    per_class = [f"{score}_{name}" for name in classes.names for score in ("dice", "iou")]
    names = ["loss", "accuracy", "dice", "iou", *per_class, *(["v_rand", "v_info"] if topology else [])]
    if not all(np.isfinite(p).all() for p in probs):  # a diverged model predicts NaN: no score, no checkpoint
        return dict.fromkeys(names, math.nan)
    targets = [np.asarray(m, np.float32)[None, ..., None] for m in masks]
    batched = [p[None, ..., None] if p.ndim == 2 else p[None] for p in probs]
    losses = [float(keras.ops.convert_to_numpy(loss(t, p))) for t, p in zip(targets, batched)]
    scores = {"loss": float(np.mean(losses))}
    scores.update(class_scores(confusion_matrix(probs, masks, classes.count), classes.names,
                               foreground if classes.binary else None))
    if topology:
        isbi = isbi_scores(list(probs), list(masks))
        scores.update(v_rand=isbi["v_rand"], v_info=isbi["v_info"])
    return scores
