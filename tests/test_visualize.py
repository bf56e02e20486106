"""Pictures of predictions: overlays color exactly the pixels they claim to."""

from __future__ import annotations

import numpy as np

from segexp.evaluation.visualize import FALSE_BLACK, FALSE_WHITE, error_overlay, mask_panel, prediction_overlay

IMAGE = np.full((4, 5, 1), 0.5, np.float32)
MASK = np.array([[1, 1, 0, 0, 1]] * 4, np.uint8)          # 1 = white (cell), 0 = black (membrane)
PROB = np.array([[0.9, 0.2, 0.1, 0.7, 0.6]] * 4, np.float32)
GRAY = np.array([128, 128, 128], np.uint8)


def test_prediction_overlay_marks_predicted_black_in_red():
    overlay = prediction_overlay(IMAGE, PROB, threshold=0.5)
    assert overlay.dtype == np.uint8 and overlay.shape == (4, 5, 3)
    red = (overlay == FALSE_WHITE).all(axis=-1)
    assert (red == (PROB < 0.5)).all()
    assert (overlay[~red] == GRAY).all()


def test_error_overlay_colors_false_white_and_false_black():
    overlay = error_overlay(IMAGE, MASK, PROB)
    false_white, false_black = (PROB >= 0.5) & (MASK == 0), (PROB < 0.5) & (MASK == 1)
    assert ((overlay == FALSE_WHITE).all(axis=-1) == false_white).all()
    assert ((overlay == FALSE_BLACK).all(axis=-1) == false_black).all()
    assert (overlay[~(false_white | false_black)] == GRAY).all()


def test_mask_panel_sets_four_tiles_side_by_side():
    panel = mask_panel(IMAGE, MASK, PROB, gap=2)
    assert panel.shape == (4, 4 * 5 + 3 * 2, 3)
    assert (panel[:, 5:7] == 255).all()  # the white spacer between the first two tiles
