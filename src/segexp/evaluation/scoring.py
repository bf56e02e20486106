"""Scoring a model on whole slices: one forward pass per slice, then the loss, the pixel scores and
the ISBI topology scores. Used every epoch on the selection slices and once on the report slices."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import keras
import numpy as np

from segexp.evaluation.metrics import isbi_scores, pixel_scores


def predict_slices(model: keras.Model, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Returns (H, W) probability maps of whole images, one forward pass each (sizes may differ)."""
    return [np.asarray(model.predict_on_batch(image[None]), np.float32)[0, ..., 0] for image in images]


def slice_scores(loss: Callable, probs: Sequence[np.ndarray], masks: Sequence[np.ndarray], foreground: int,
                 topology: bool) -> dict[str, float]:
    """Returns loss (mean per slice), pooled accuracy, Dice and IoU at 0.5 and, with `topology`,
    the ISBI scores v_rand and v_info (the challenge's: averaged per slice, best over thresholds)."""
    names = ["loss", "accuracy", "dice", "iou", *(["v_rand", "v_info"] if topology else [])]
    if not all(np.isfinite(p).all() for p in probs):  # a diverged model predicts NaN: no score, no checkpoint
        return dict.fromkeys(names, math.nan)
    targets = [np.asarray(m, np.float32)[None, ..., None] for m in masks]
    losses = [float(keras.ops.convert_to_numpy(loss(t, p[None, ..., None]))) for t, p in zip(targets, probs)]
    scores = {"loss": float(np.mean(losses))}
    pixels = pixel_scores(probs, masks, foreground=foreground)
    scores.update({k: pixels[k] for k in ("accuracy", "dice", "iou")})
    if topology:
        isbi = isbi_scores(list(probs), list(masks))
        scores.update(v_rand=isbi["v_rand"], v_info=isbi["v_info"])
    return scores
