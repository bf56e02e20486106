"""Streaming Keras metrics pooled over every pixel seen: pixel accuracy, Dice and IoU.

Pooling (summing counts over the whole validation set before dividing) gives the same
number as the numpy scores in metrics.py, unlike averaging per-batch values.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="segexp")
class ConfusionMetric(keras.metrics.Metric):
    """Accumulates true/false positives/negatives of the `foreground` class at `threshold`."""

    def __init__(self, name: str, foreground: int = 0, threshold: float = 0.5, **kwargs):
        super().__init__(name=name, **kwargs)
        self.foreground, self.threshold = foreground, threshold
        self.counts = self.add_variable(shape=(4,), initializer="zeros", name="tp_fp_fn_tn")

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth = ops.cast(y_true[..., :1], "float32") > 0.5  # channel 0 is the mask, 1 may be weights
        pred = ops.cast(y_pred, "float32") >= self.threshold
        if self.foreground == 0:
            truth, pred = ops.logical_not(truth), ops.logical_not(pred)
        count = lambda t: ops.sum(ops.cast(t, "float32"))  # noqa: E731
        tp = count(truth & pred)
        fp = count(ops.logical_not(truth) & pred)
        fn = count(truth & ops.logical_not(pred))
        tn = count(ops.logical_not(truth) & ops.logical_not(pred))
        self.counts.assign_add(ops.stack([tp, fp, fn, tn]))

    def reset_state(self):
        self.counts.assign(ops.zeros((4,)))

    def get_config(self):
        return {**super().get_config(), "foreground": self.foreground, "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="segexp")
class PixelAccuracy(ConfusionMetric):
    def __init__(self, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)

    def result(self):
        tp, fp, fn, tn = ops.unstack(self.counts)
        return (tp + tn) / ops.maximum(tp + fp + fn + tn, 1.0)


@keras.saving.register_keras_serializable(package="segexp")
class DiceScore(ConfusionMetric):
    def __init__(self, name: str = "dice", **kwargs):
        super().__init__(name=name, **kwargs)

    def result(self):
        tp, fp, fn, _ = ops.unstack(self.counts)
        return ops.where(tp + fp + fn > 0, 2 * tp / ops.maximum(2 * tp + fp + fn, 1.0), 1.0)


@keras.saving.register_keras_serializable(package="segexp")
class IoUScore(ConfusionMetric):
    def __init__(self, name: str = "iou", **kwargs):
        super().__init__(name=name, **kwargs)

    def result(self):
        tp, fp, fn, _ = ops.unstack(self.counts)
        return ops.where(tp + fp + fn > 0, tp / ops.maximum(tp + fp + fn, 1.0), 1.0)


def segmentation_metrics(foreground: int) -> list[keras.metrics.Metric]:
    """Returns fresh accuracy, Dice and IoU metrics for compile()."""
    return [PixelAccuracy(foreground=foreground), DiceScore(foreground=foreground), IoUScore(foreground=foreground)]
