"""Losses and streaming metrics equal hand-computed numpy values."""

from __future__ import annotations

import numpy as np
import pytest

from segexp.keras_metrics import DiceScore, IoUScore, PixelAccuracy
from segexp.losses import SegmentationLoss

RNG = np.random.default_rng(0)
MASK = (RNG.random((2, 8, 8, 1)) > 0.3).astype(np.float32)
PROB = RNG.uniform(0.05, 0.95, (2, 8, 8, 1)).astype(np.float32)
WEIGHT = RNG.uniform(0.5, 3.0, (2, 8, 8, 1)).astype(np.float32)


def numpy_bce(mask, prob):
    return -(mask * np.log(prob) + (1 - mask) * np.log(1 - prob))


def numpy_dice_loss(mask, prob, foreground):
    if foreground == 0:
        mask, prob = 1 - mask, 1 - prob
    inter = (mask * prob).sum(axis=(1, 2, 3))
    return 1 - (2 * inter + 1) / (mask.sum(axis=(1, 2, 3)) + prob.sum(axis=(1, 2, 3)) + 1)


def loss_value(loss, y_true, y_pred=PROB):
    return float(loss(y_true, y_pred))


def test_bce_matches_numpy():
    assert loss_value(SegmentationLoss(bce=1.0), MASK) == pytest.approx(numpy_bce(MASK, PROB).mean(), rel=1e-5)


@pytest.mark.parametrize("foreground", [0, 1])
def test_dice_matches_numpy(foreground):
    expected = numpy_dice_loss(MASK, PROB, foreground).mean()
    assert loss_value(SegmentationLoss(bce=0.0, dice=1.0, foreground=foreground), MASK) == pytest.approx(expected, rel=1e-5)


def test_bce_dice_is_the_sum():
    expected = numpy_bce(MASK, PROB).mean() + 2.0 * numpy_dice_loss(MASK, PROB, 0).mean()
    assert loss_value(SegmentationLoss(bce=1.0, dice=2.0), MASK) == pytest.approx(expected, rel=1e-5)


def test_focal_matches_numpy():
    p_t = np.where(MASK == 1, PROB, 1 - PROB)
    expected = (numpy_bce(MASK, PROB) * (1 - p_t) ** 2).mean()
    assert loss_value(SegmentationLoss(bce=1.0, focal_gamma=2.0), MASK) == pytest.approx(expected, rel=1e-5)
    assert expected < numpy_bce(MASK, PROB).mean()  # focal down-weights: a check that can fail


def test_weight_channel_weights_the_bce():
    target = np.concatenate([MASK, WEIGHT], axis=-1)
    expected = (WEIGHT * numpy_bce(MASK, PROB)).mean()
    assert loss_value(SegmentationLoss(bce=1.0), target) == pytest.approx(expected, rel=1e-5)


def test_perfect_prediction_has_near_zero_loss():
    assert loss_value(SegmentationLoss(bce=1.0, dice=1.0), MASK, MASK) < 1e-4


@pytest.mark.parametrize("foreground", [0, 1])
def test_streaming_metrics_pool_over_batches(foreground):
    predicted = PROB >= 0.5
    truth = MASK == 1
    if foreground == 0:
        predicted, truth = ~predicted, ~truth
    tp, fp, fn = (predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()
    metrics = [PixelAccuracy(foreground=foreground), DiceScore(foreground=foreground), IoUScore(foreground=foreground)]
    for metric in metrics:
        for i in range(2):  # two updates: the result must pool the counts, not average the batches
            metric.update_state(MASK[i:i + 1], PROB[i:i + 1])
    accuracy, dice, iou = (float(m.result()) for m in metrics)
    assert accuracy == pytest.approx(((PROB >= 0.5) == (MASK == 1)).mean())
    assert dice == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert iou == pytest.approx(tp / (tp + fp + fn))


def test_metrics_ignore_the_weight_channel():
    dice = DiceScore(foreground=0)
    dice.update_state(np.concatenate([MASK, WEIGHT], -1), MASK)
    assert float(dice.result()) == pytest.approx(1.0)
