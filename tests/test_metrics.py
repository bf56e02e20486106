"""Tests of segexp.metrics against hand-computed values and scikit-image's independent implementations.

Hand-built cases use 8 x 12 masks with 1-px vertical membranes, so every segment size is
8 rows x (number of columns) and the expected scores can be written down directly.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, contingency_table, variation_of_information

from segexp.metrics import (
    contingency,
    evaluate_slices,
    isbi_scores,
    label_cells,
    pixel_scores,
    pool_contingency,
    rand_and_info,
    thin_membranes,
)

SHAPE = (8, 12)


def membrane_columns(*columns: int) -> np.ndarray:
    """Returns an 8 x 12 truth mask (1 = cell, 0 = membrane) with 1-px membranes at `columns`."""
    mask = np.ones(SHAPE, np.uint8)
    mask[:, list(columns)] = 0
    return mask


def as_prob(mask: np.ndarray) -> np.ndarray:
    """Returns a certain prediction (1.0 = cell, 0.0 = membrane) of a mask."""
    return mask.astype(np.float64)


def voronoi_labels(rng: np.random.Generator, shape: tuple[int, int], n_seeds: int) -> np.ndarray:
    """Returns nearest-seed labels 1..n with the pixels where two regions meet set to 0.

    A pixel becomes boundary when its right or lower neighbour has another label, so no two
    differently labelled pixels stay 4-adjacent.
    """
    seeds = rng.integers(0, shape, size=(n_seeds, 2))
    rows, cols = np.indices(shape)
    squared_distance = (rows[..., None] - seeds[:, 0]) ** 2 + (cols[..., None] - seeds[:, 1]) ** 2
    labels = squared_distance.argmin(axis=-1) + 1
    boundary = np.zeros(shape, bool)
    boundary[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    boundary[:-1, :] |= labels[:-1, :] != labels[1:, :]
    labels[boundary] = 0
    return labels


def entropy_of_labels(labels: np.ndarray) -> float:
    """Returns the entropy (bits) of the label distribution, computed directly with numpy."""
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log2(p)))


def h(*sizes: float) -> float:
    """Returns the entropy (nats) of segments of the given sizes."""
    total = sum(sizes)
    return -sum(s / total * math.log(s / total) for s in sizes)


# Split: gt has one membrane (col 5); the prediction adds one at col 8.
# gt cells: cols 0-4 = 40 px, cols 6-11 = 48 px; N = 88.
# predicted, inside gt cells: A = cols 0-4 (40), B = cols 6-7 (16), C = cols 9-11 (24),
# and 8 singletons (col 8 predicted membrane).
SPLIT_JOINT_SQ = 40**2 + 16**2 + 24**2 + 8 * 1**2  # 2440
SPLIT_GT_SQ = 40**2 + 48**2  # 3904
SPLIT_PRED_SQ = SPLIT_JOINT_SQ  # every predicted segment lies inside one gt cell
SPLIT_V_RAND = SPLIT_JOINT_SQ / (0.5 * SPLIT_GT_SQ + 0.5 * SPLIT_PRED_SQ)  # 2440 / 3172 = 10/13
SPLIT_H_GT = h(40, 48)
SPLIT_H_PRED = h(40, 16, 24, *[1] * 8)
# H(gt | pred) = 0, so I = H(gt).
SPLIT_V_INFO = 2 * SPLIT_H_GT / (SPLIT_H_GT + SPLIT_H_PRED)

# Merge: gt has membranes at cols 3 and 7; the prediction misses col 7.
# gt cells: 24, 24, 32 px; N = 80. Predicted, inside gt cells: A = 24, B = 24 + 32 = 56.
MERGE_JOINT_SQ = 24**2 + 24**2 + 32**2  # 2176
MERGE_GT_SQ = MERGE_JOINT_SQ  # every gt cell lies inside one predicted segment
MERGE_PRED_SQ = 24**2 + 56**2  # 3712
MERGE_V_RAND = MERGE_JOINT_SQ / (0.5 * MERGE_GT_SQ + 0.5 * MERGE_PRED_SQ)  # 2176 / 2944 = 17/23
MERGE_H_GT = h(24, 24, 32)
MERGE_H_PRED = h(24, 56)
# H(pred | gt) = 0, so I = H(pred).
MERGE_V_INFO = 2 * MERGE_H_PRED / (MERGE_H_GT + MERGE_H_PRED)


def test_identical_segmentations_score_one():
    rng = np.random.default_rng(0)
    truths = [np.where(voronoi_labels(rng, (64, 64), 15) > 0, 255, 0).astype(np.uint8) for _ in range(2)]
    probs = [t / 255.0 for t in truths]

    scores = evaluate_slices(probs, truths)

    assert scores["v_rand"] == pytest.approx(1.0, abs=1e-12)
    assert scores["v_info"] == pytest.approx(1.0, abs=1e-12)
    assert (scores["dice"], scores["iou"], scores["accuracy"], scores["pixel_error"]) == (1.0, 1.0, 1.0, 0.0)
    assert all(isinstance(v, float) for v in scores.values())


def test_split_case_matches_hand_computed_scores():
    truth, predicted = membrane_columns(5), membrane_columns(5, 8)
    assert SPLIT_V_RAND == pytest.approx(10 / 13)

    direct = rand_and_info(contingency(label_cells(truth), label_cells(predicted)))
    swept = isbi_scores([as_prob(predicted)], [truth])

    for scores in (direct, swept):
        assert scores["v_rand"] == pytest.approx(SPLIT_V_RAND, rel=1e-12)
        assert scores["v_info"] == pytest.approx(SPLIT_V_INFO, rel=1e-12)


def test_merge_case_matches_hand_computed_scores():
    truth, predicted = membrane_columns(3, 7), membrane_columns(3)
    assert MERGE_V_RAND == pytest.approx(17 / 23)

    direct = rand_and_info(contingency(label_cells(truth), label_cells(predicted)))
    swept = isbi_scores([as_prob(predicted)], [truth])

    for scores in (direct, swept):
        assert scores["v_rand"] == pytest.approx(MERGE_V_RAND, rel=1e-12)
        assert scores["v_info"] == pytest.approx(MERGE_V_INFO, rel=1e-12)


def test_thinning_makes_scores_insensitive_to_membrane_width():
    # A 3-px predicted membrane over a 1-px true one: pixel accuracy suffers, topology does not.
    truth = membrane_columns(5)
    prob = as_prob(membrane_columns(4, 5, 6))

    assert isbi_scores([prob], [truth])["v_rand"] == pytest.approx(1.0)
    assert pixel_scores(prob, truth)["accuracy"] == pytest.approx(1 - 16 / 96)


def test_thinned_membrane_still_reaches_the_image_border():
    # Thinning with the outside of the image as background would shorten this band at
    # the top and bottom rows and merge the two cells.
    band = np.ones((10, 16), bool)
    band[:, 5:9] = False

    thinned = thin_membranes(band)

    assert (np.count_nonzero(~thinned, axis=1) == 1).all()
    assert label_cells(thinned).max() == 2


def test_diagonal_one_pixel_membrane_separates_cells():
    # Cells on either side of a diagonal touch at corners: only 4-connectivity keeps them apart.
    cells = ~np.eye(6, dtype=bool)

    assert label_cells(cells).max() == 2
    assert label_cells(thin_membranes(cells)).max() == 2


def test_contingency_counts_gt_foreground_pixels_only():
    gt = np.array([[1, 1, 0], [2, 2, 0]])
    pred = np.array([[1, 0, 2], [1, 1, 2]])

    table = contingency(gt, pred).toarray()

    # gt column 2 is membrane and not counted; pixel (0, 1) is predicted membrane in gt cell 1.
    np.testing.assert_array_equal(table, [[0, 0, 0], [1, 1, 0], [0, 2, 0]])


def test_pool_contingency_keeps_labels_of_slices_distinct():
    first = contingency(np.array([[1, 1, 2]]), np.array([[1, 0, 1]]))
    second = contingency(np.array([[1, 2, 2]]), np.array([[0, 1, 1]]))

    pooled = pool_contingency([first, second]).toarray()

    # rows: membrane, gt 1-2 of slice 1, gt 1-2 of slice 2 -> 3, 4;
    # cols: membrane (shared), pred 1 of slice 1, pred 1 of slice 2 -> 2.
    np.testing.assert_array_equal(pooled, [[0, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 2]])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_scores_agree_with_skimage_on_voronoi_labels(seed):
    rng = np.random.default_rng(seed)
    gt = voronoi_labels(rng, (64, 64), 12)
    pred = voronoi_labels(rng, (64, 64), 9)
    ours = rand_and_info(contingency(gt, pred))

    # skimage, like us, ignores gt label 0, but it (a) treats predicted label 0 as one
    # segment, where the ISBI/Fiji convention makes each such pixel its own segment, and
    # (b) counts pairs of distinct pixels, n(n-1), where V_rand uses n^2.
    # (a): give every predicted-membrane pixel a label of its own.
    singletons = pred.copy()
    on_membrane = singletons == 0
    singletons[on_membrane] = pred.max() + 1 + np.arange(np.count_nonzero(on_membrane))
    # (b): copying every pixel k times turns n(n-1) into kn(kn-1) = k^2 (n^2 - n/k), so the
    # score converges to the n^2 one with relative error below 1/k.
    k = 1e9
    table = contingency_table(gt, singletons, ignore_labels=(0,), sparse_type="array") * k
    skimage_v_rand = 1 - adapted_rand_error(table=table)[0]

    assert ours["v_rand"] == pytest.approx(skimage_v_rand, rel=1e-8)
    # Without (a) the conventions differ measurably on these images.
    assert ours["v_rand"] != pytest.approx(1 - adapted_rand_error(gt, pred)[0], rel=1e-3)

    # V_info = 2 I / (H_S + H_T) = 1 - VI / (H_S + H_T), with VI = H(S|T) + H(T|S).
    foreground = gt > 0
    h_gt, h_pred = entropy_of_labels(gt[foreground]), entropy_of_labels(singletons[foreground])
    vi = variation_of_information(gt, singletons, ignore_labels=(0,)).sum()
    assert ours["v_info"] == pytest.approx(1 - vi / (h_gt + h_pred), rel=1e-9)


def test_pooling_sums_tables_instead_of_averaging_scores():
    split = (as_prob(membrane_columns(5, 8)), membrane_columns(5))
    perfect = (as_prob(membrane_columns(3, 7)), membrane_columns(3, 7))

    pooled = isbi_scores([split[0], perfect[0]], [split[1], perfect[1]])

    # The perfect slice has joint = gt = pred sum of squares = 24^2 + 24^2 + 32^2 = 2176.
    expected = (SPLIT_JOINT_SQ + 2176) / (0.5 * (SPLIT_GT_SQ + 2176) + 0.5 * (SPLIT_PRED_SQ + 2176))  # 4616/5348
    mean_of_slices = (SPLIT_V_RAND + 1.0) / 2
    assert pooled["v_rand"] == pytest.approx(expected, rel=1e-12)
    assert pooled["v_rand"] != pytest.approx(mean_of_slices, rel=1e-3)


def test_pooling_identical_copies_keeps_slices_distinct():
    prob, truth = as_prob(membrane_columns(5, 8)), membrane_columns(5)

    pooled = isbi_scores([prob, prob], [truth, truth])

    # Distinct labels double every sum of squares, leaving V_rand unchanged. Sharing the
    # labels would quadruple them except for the singletons: 9744 / 12680 = 0.7685 != 10/13.
    assert pooled["v_rand"] == pytest.approx(SPLIT_V_RAND, rel=1e-12)
    # Halving every probability adds ln 2 (which slice) to H_S, H_T and to I.
    expected_v_info = (2 * SPLIT_H_GT + 2 * math.log(2)) / (SPLIT_H_GT + SPLIT_H_PRED + 2 * math.log(2))
    assert pooled["v_info"] == pytest.approx(expected_v_info, rel=1e-12)


def test_threshold_sweep_returns_the_argmax_threshold():
    # True membrane at col 5 with probability 0.45, false membrane at col 8 with 0.55:
    # t <= 0.4 sees neither (merge), t = 0.5 sees exactly the true one, t >= 0.6 both (split).
    truth = membrane_columns(5)
    prob = np.ones(SHAPE)
    prob[:, 5], prob[:, 8] = 0.45, 0.55
    merge_v_rand = SPLIT_GT_SQ / (0.5 * SPLIT_GT_SQ + 0.5 * 88**2)  # 3904 / 5824

    scores = isbi_scores([prob], [truth])

    assert scores["v_rand_threshold"] == scores["v_info_threshold"] == 0.5
    assert scores["v_rand"] == scores["v_info"] == pytest.approx(1.0)
    assert [s["threshold"] for s in scores["per_threshold"]] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    expected = [merge_v_rand] * 4 + [1.0] + [SPLIT_V_RAND] * 4
    assert [s["v_rand"] for s in scores["per_threshold"]] == pytest.approx(expected, rel=1e-12)


# predicted cell = prob >= 0.5; wrong at (1,2), (2,1), (3,1), (3,3) -> 12/16 right.
# membrane: truth {(0,2),(1,1),(1,2),(3,0),(3,1)}, predicted {(0,2),(1,1),(2,1),(3,0),(3,3)}, 3 in common.
# cell: 11 truth and 11 predicted pixels, 9 in common.
TINY_TRUTH = np.array([[1, 1, 0, 1],
                       [1, 0, 0, 1],
                       [1, 1, 1, 1],
                       [0, 0, 1, 1]])
TINY_PROB = np.array([[0.9, 0.8, 0.2, 0.6],
                      [0.7, 0.4, 0.6, 0.9],
                      [0.55, 0.3, 0.9, 0.8],
                      [0.1, 0.5, 0.7, 0.45]])


def test_pixel_scores_on_a_tiny_example():
    # membrane: dice 2*3/(5+5), iou 3/(5+5-3); cell: dice 2*9/(11+11), iou 9/(11+11-9).
    assert pixel_scores(TINY_PROB, TINY_TRUTH) == pytest.approx(
        {"accuracy": 12 / 16, "pixel_error": 4 / 16, "dice": 6 / 10, "iou": 3 / 7})
    assert pixel_scores(TINY_PROB, TINY_TRUTH * 255, foreground=1) == pytest.approx(
        {"accuracy": 12 / 16, "pixel_error": 4 / 16, "dice": 18 / 22, "iou": 9 / 13})


def test_pixel_scores_pool_all_pixels_of_a_list():
    truth_b = np.array([[0, 1], [1, 1]])
    prob_b = np.array([[0.1, 0.9], [0.9, 0.9]])  # all 4 right, membrane 1 px in both

    pooled = pixel_scores([TINY_PROB, prob_b], [TINY_TRUTH, truth_b])

    # (12 + 4) / (16 + 4) right, not the per-image mean (0.75 + 1) / 2;
    # membrane: 3 + 1 in common, dice 2*4/(5+5+1+1), iou 4/(12-4).
    assert pooled == pytest.approx({"accuracy": 16 / 20, "pixel_error": 4 / 20, "dice": 8 / 12, "iou": 4 / 8})


def test_pixel_scores_with_no_foreground_anywhere_are_perfect():
    scores = pixel_scores(np.full((3, 3), 0.9), np.ones((3, 3)))

    assert (scores["dice"], scores["iou"]) == (1.0, 1.0)


@pytest.mark.parametrize("score", [pixel_scores, isbi_scores, evaluate_slices])
def test_shape_mismatch_names_both_shapes(score):
    with pytest.raises(ValueError, match=re.escape("(4, 4)") + ".*" + re.escape("(4, 5)")):
        score([np.ones((4, 4))], [np.ones((4, 5))])


def test_contingency_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=re.escape("(2, 3)") + ".*" + re.escape("(3, 2)")):
        contingency(np.ones((2, 3), int), np.ones((3, 2), int))


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, 1.5, -0.1])
def test_invalid_probabilities_are_rejected(bad_value):
    prob = np.full((4, 4), 0.5)
    prob[1, 2] = bad_value

    with pytest.raises(ValueError, match="prediction"):
        pixel_scores(prob, np.ones((4, 4)))


def test_ground_truth_without_cells_is_rejected():
    with pytest.raises(ValueError, match="no cell pixels"):
        isbi_scores([np.ones((4, 4)), np.ones((4, 4))], [np.ones((4, 4)), np.zeros((4, 4))])
    with pytest.raises(ValueError, match="no cell pixels"):
        rand_and_info(contingency(np.zeros((4, 4), int), np.ones((4, 4), int)))
