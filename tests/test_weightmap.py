"""U-Net border weights from labels, checked against distances computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from segexp.data.weightmap import border_weight_map, class_balance_weights


def two_cells(gap: int) -> np.ndarray:
    """Two cells (1) side by side, separated by a vertical membrane (0) `gap` pixels wide."""
    mask = np.ones((30, 40), np.uint8)
    mask[:, 20:20 + gap] = 0
    return mask


def test_class_balance_gives_each_class_half_the_weight():
    mask = two_cells(4)
    weights = class_balance_weights(mask)
    assert weights.mean() == pytest.approx(1.0)
    assert weights[mask == 0].sum() == pytest.approx(weights[mask == 1].sum())


def test_border_weight_on_thin_membrane_matches_formula():
    w0, sigma = 10.0, 5.0
    mask = two_cells(1)  # membrane column 20: distance 1 to the left cell, 1 to the right one
    weights = border_weight_map(mask, w0=w0, sigma=sigma, class_balance=False)
    assert weights[15, 20] == pytest.approx(1 + w0 * np.exp(-(1 + 1) ** 2 / (2 * sigma**2)), rel=1e-5)
    assert np.all(weights[mask == 1] == 1.0)  # the border term is for membrane pixels only


def test_wider_gap_weighs_less_in_its_middle():
    w0, sigma = 10.0, 5.0
    weights = border_weight_map(two_cells(7), w0=w0, sigma=sigma, class_balance=False)
    # column 23 is 4 pixels from either cell edge (columns 19 and 27)
    assert weights[15, 23] == pytest.approx(1 + w0 * np.exp(-(4 + 4) ** 2 / (2 * sigma**2)), rel=1e-5)
    assert weights[15, 23] < border_weight_map(two_cells(1), w0=w0, sigma=sigma, class_balance=False)[15, 20]


def test_single_cell_membrane_gets_no_border_bonus_far_away():
    mask = np.zeros((60, 60), np.uint8)
    mask[:10, :10] = 1  # one cell: no second-nearest cell, so d2 saturates
    weights = border_weight_map(mask, w0=10, sigma=2, class_balance=False)
    assert weights[59, 59] == pytest.approx(1.0, abs=1e-6)
