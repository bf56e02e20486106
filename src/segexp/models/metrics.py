"""Streaming Keras metrics pooled over every pixel seen: pixel accuracy, Dice and IoU (of one class for
two classes, the mean over classes for more). Unlabelled pixels (IGNORE) are not counted.

Pooling (summing counts over the whole validation set before dividing) gives the same
number as the numpy scores in evaluation/metrics.py, unlike averaging per-batch values.
"""

from __future__ import annotations

import keras
from keras import ops

IGNORE = 255.0  # segexp.data.classes.IGNORE


@keras.saving.register_keras_serializable(package="segexp")
class ConfusionMetric(keras.metrics.Metric):
    """Accumulates true/false positives/negatives of the `foreground` class at `threshold`."""

    def __init__(self, name: str, foreground: int = 0, threshold: float = 0.5, affinities: int = 0, **kwargs):
        super().__init__(name=name, **kwargs)
        self.foreground, self.threshold, self.affinities = foreground, threshold, affinities
        self.counts = self.add_variable(shape=(4,), initializer="zeros", name="tp_fp_fn_tn")

    def update_state(self, y_true, y_pred, sample_weight=None):
        if self.affinities:  # C affinity targets, then C masks of the pairs that count; scored: the cuts (class 0)
            truth = ops.cast(y_true[..., : self.affinities], "float32") > 0.5
            valid = ops.cast(y_true[..., self.affinities: 2 * self.affinities], "float32") > 0.5
        else:
            mask = ops.cast(y_true[..., :1], "float32")  # channel 0 is the mask, 1 may be weights
            valid = ops.not_equal(mask, IGNORE)
            truth = mask > 0.5
        pred = ops.cast(y_pred, "float32") >= self.threshold
        if self.foreground == 0:
            truth, pred = ops.logical_not(truth), ops.logical_not(pred)
        count = lambda t: ops.sum(ops.cast(t & valid, "float32"))  # noqa: E731
        tp = count(truth & pred)
        fp = count(ops.logical_not(truth) & pred)
        fn = count(truth & ops.logical_not(pred))
        tn = count(ops.logical_not(truth) & ops.logical_not(pred))
        self.counts.assign_add(ops.stack([tp, fp, fn, tn]))

    def reset_state(self):
        self.counts.assign(ops.zeros((4,)))

    def get_config(self):
        return {**super().get_config(), "foreground": self.foreground, "threshold": self.threshold,
                "affinities": self.affinities}


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


@keras.saving.register_keras_serializable(package="segexp")
class ClassConfusion(keras.metrics.Metric):
    """Accumulates the (truth, predicted) confusion matrix of K classes, the prediction being the argmax;
    `score` is accuracy, or the mean Dice or IoU over the classes present in truth or prediction."""

    def __init__(self, name: str, classes: int, score: str, **kwargs):
        super().__init__(name=name, **kwargs)
        self.classes, self.score = classes, score
        self.matrix = self.add_variable(shape=(classes, classes), initializer="zeros", name="confusion")

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth = ops.reshape(ops.cast(y_true[..., 0], "int32"), (-1,))
        pred = ops.reshape(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), (-1,))
        valid = ops.cast(ops.not_equal(truth, int(IGNORE)), "float32")
        pairs = ops.where(ops.not_equal(truth, int(IGNORE)), truth, 0) * self.classes + pred
        counts = ops.segment_sum(valid, pairs, num_segments=self.classes * self.classes)
        self.matrix.assign_add(ops.reshape(counts, (self.classes, self.classes)))

    def result(self):
        diagonal = ops.diagonal(self.matrix)
        if self.score == "accuracy":
            return ops.sum(diagonal) / ops.maximum(ops.sum(self.matrix), 1.0)
        truth, predicted = ops.sum(self.matrix, axis=1), ops.sum(self.matrix, axis=0)
        present = ops.cast(truth + predicted > 0, "float32")
        union = truth + predicted - diagonal if self.score == "iou" else (truth + predicted) / 2.0
        per_class = diagonal / ops.maximum(union, 1.0)
        return ops.sum(per_class * present) / ops.maximum(ops.sum(present), 1.0)

    def reset_state(self):
        self.matrix.assign(ops.zeros((self.classes, self.classes)))

    def get_config(self):
        return {**super().get_config(), "classes": self.classes, "score": self.score}


def segmentation_metrics(foreground: int, classes: int = 2, affinities: int = 0) -> list[keras.metrics.Metric]:
    """Returns fresh accuracy, Dice and IoU metrics for compile(): of class `foreground` for two classes, the
    means over classes for more; for `affinities` channels, of the cuts ("not the same object") over every
    channel's pairs that count."""
    if affinities:
        return [cls(foreground=0, affinities=affinities) for cls in (PixelAccuracy, DiceScore, IoUScore)]
    if classes > 2:
        return [ClassConfusion(name, classes, name) for name in ("accuracy", "dice", "iou")]
    return [PixelAccuracy(foreground=foreground), DiceScore(foreground=foreground), IoUScore(foreground=foreground)]
