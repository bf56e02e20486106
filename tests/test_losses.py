"""Losses and streaming metrics equal hand-computed numpy values."""

from __future__ import annotations

import numpy as np
import pytest

from segexp.models.metrics import DiceScore, IoUScore, PixelAccuracy
from segexp.models.losses import SegmentationLoss

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


def membrane_grid(size: int = 48, width: int = 3) -> np.ndarray:
    """A cell mask (1 = cell, 0 = membrane) of 4 x 4 cells split by membranes `width` pixels thick."""
    mask = np.ones((1, size, size, 1), np.float32)
    for start in range(0, size, size // 4):
        mask[:, start:start + width] = 0.0
        mask[:, :, start:start + width] = 0.0
    return mask


def test_soft_skeleton_thins_a_thick_bar_to_its_centreline():
    from segexp.models.losses import soft_skeleton

    bar = np.zeros((1, 32, 32, 1), np.float32)
    bar[:, 12:19, 4:28] = 1.0  # 7 pixels thick
    skeleton = np.asarray(soft_skeleton(bar, iterations=5))[0, ..., 0]
    rows = np.flatnonzero(skeleton.sum(axis=1) > 0.5 * skeleton.sum(axis=1).max())
    assert set(rows) <= {14, 15, 16}  # the centre rows carry the skeleton
    assert skeleton.sum() < 0.3 * bar.sum()  # and it is thin


def test_cldice_punishes_a_broken_membrane_more_than_dice_does():
    """Cutting a membrane (a merge of two cells, which V_rand counts) and thickening one by as many pixels
    cost Dice the same; clDice charges the cut three times more."""
    truth = membrane_grid()
    cut, thick = truth.copy(), truth.copy()
    cut[:, 12:15, 16:22] = 1.0  # 18 membrane pixels become cell: a 6-pixel gap in a horizontal membrane
    thick[:, 28:34, 39:42] = 0.0  # 18 cell pixels beside a vertical membrane become membrane
    assert (cut != truth).sum() == (thick != truth).sum() == 18
    dice, cldice = SegmentationLoss(bce=0.0, dice=1.0), SegmentationLoss(bce=0.0, cldice=1.0, skeleton_iterations=3)
    assert loss_value(dice, truth, cut) == pytest.approx(loss_value(dice, truth, thick), rel=0.25)
    assert loss_value(cldice, truth, cut) > 2 * loss_value(cldice, truth, thick)  # 3.0x here
    assert loss_value(cldice, truth, truth) < 1e-4


def test_the_loss_config_round_trips_with_its_cldice_terms():
    loss = SegmentationLoss(bce=1.0, dice=0.5, cldice=0.5, skeleton_iterations=7)
    rebuilt = SegmentationLoss.from_config(loss.get_config())
    assert (rebuilt.cldice, rebuilt.skeleton_iterations) == (0.5, 7)
    truth = membrane_grid()
    prob = np.clip(truth + RNG.normal(0, 0.2, truth.shape), 0.05, 0.95).astype(np.float32)
    assert loss_value(rebuilt, truth, prob) == pytest.approx(loss_value(loss, truth, prob), rel=1e-6)


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
