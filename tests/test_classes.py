"""Classes: binary ISBI stays exactly as it was; K-class folders train, score, predict, evaluate and export."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY, compose_config

# Recorded at f180d1d (2026-12-06), before multi-class support: the binary path (sigmoid head, BCE + border
# weights + Dice on the membranes, one-class pixel scores, ISBI topology scores) must give these again.
# Training runs on other CPUs round differently (oneDNN/Eigen kernels), so trained values carry a tolerance
# a changed head, loss or score would exceed many times over; the numpy-level values are exact.
ISBI_PINNED = {
    "select_loss": 1.4902222156524658, "select_accuracy": 0.29724884033203125, "select_dice": 0.34025469860187946,
    "select_iou": 0.20500416438308872, "select_v_rand": 0.20984064387708581, "select_v_info": 0.6869790249426033,
    "report_loss": 1.5388050079345703, "report_accuracy": 0.2822723388671875, "report_dice": 0.2934310735906025,
    "report_iou": 0.1719421167523414, "report_v_rand": 0.19564048163229242, "report_v_info": 0.6773497006468426,
}
SCORES_PINNED = {  # slice_scores of fixed maps, per loss
    "bce_dice": 0.6522039473056793, "focal": 0.04487897269427776, "cldice": 0.6254668235778809,
    "accuracy": 0.9526041666666667, "dice": 0.9134157944814463, "iou": 0.840630472854641,
    "v_rand": 0.9826112718761348, "v_info": 0.6255608151424539,
}


def test_a_deterministic_isbi_run_gives_the_scores_recorded_before_multi_class(tmp_path, monkeypatch):
    from segexp.training.train import train

    monkeypatch.chdir(tmp_path)
    cfg = compose_config("train", *TINY, "trainer.epochs=2", "trainer.steps_per_epoch=8", "trainer.deterministic=true",
                         "tracking=none", "loss=weighted_bce_dice")
    metrics = train(cfg, tmp_path / "run")
    for key, value in ISBI_PINNED.items():
        tolerance = 1e-3 * value if key.endswith("_loss") else 0.01
        assert metrics[key] == pytest.approx(value, abs=tolerance), key


def test_binary_scores_and_losses_of_fixed_maps_are_unchanged():
    from segexp.evaluation.scoring import slice_scores
    from segexp.models.losses import SegmentationLoss

    rng = np.random.default_rng(7)
    masks = [(rng.random((40, 48)) > 0.3).astype(np.uint8) for _ in range(2)]
    probs = [np.clip(m * 0.5 + rng.random(m.shape) * 0.6, 0, 1).astype(np.float32) for m in masks]
    losses = {"bce_dice": SegmentationLoss(bce=1.0, dice=1.0), "focal": SegmentationLoss(bce=1.0, focal_gamma=2.0),
              "cldice": SegmentationLoss(bce=1.0, dice=0.5, cldice=0.5)}
    for name, loss in losses.items():
        scores = slice_scores(loss, probs, masks, foreground=0, topology=True)
        assert scores["loss"] == pytest.approx(SCORES_PINNED[name], rel=1e-6), name
        for key in ("accuracy", "dice", "iou", "v_rand", "v_info"):
            assert scores[key] == pytest.approx(SCORES_PINNED[key], rel=1e-9), key
