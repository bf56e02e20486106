"""Tests of segexp.evaluation.metrics: hand-computed cases that pin each convention of the Fiji reference,
scikit-image's independent implementations where the conventions coincide, and agreement with
a literal transcription of the Java (tests/fiji_reference.py) on crops of real ISBI labels.

Hand-built cases use 8 x 12 masks with vertical membranes, so every segment size is 8 rows x
(number of columns) and the expected scores can be written down directly. Per slice,
V_rand = 2 sum n_ij^2 / (sum s_i^2 + sum t_j^2) over ground-truth cells s_i and proposed
segments t_j, every proposed dam pixel inside a ground-truth cell being a segment of its own.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.metrics import adapted_rand_error, contingency_table, variation_of_information

import fiji_reference as fiji
from conftest import REPO
from segexp.evaluation.metrics import DEFAULT_THRESHOLDS, binarize_proposal, evaluate_slices, fiji_thresholds, isbi_scores, label_cells, pixel_scores, slice_scores, watershed_segments

SHAPE = (8, 12)


def membrane_columns(*columns: int, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """Returns a truth mask (1 = cell, 0 = membrane) with 1-px membranes at `columns`."""
    mask = np.ones(shape, np.uint8)
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


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Returns whether two label images have the same dams (0) and the same segments up to renumbering."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[a > 0]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def oracle_watershed(cells: np.ndarray) -> np.ndarray:
    """Returns fiji_reference's literal watershed of a cell mask, as a [row, column] label image."""
    inverted = [[0 if cells[y, x] else 255 for y in range(cells.shape[0])] for x in range(cells.shape[1])]
    return np.array(fiji.watershed_transform_2d(inverted)).T


# Split: gt has one membrane (col 5); the prediction adds one at col 8.
# gt cells: cols 0-4 = 40 px, cols 6-11 = 48 px; N = 88.
# predicted, inside gt cells: A = cols 0-4 (40), B = cols 6-7 (16), C = cols 9-11 (24),
# and 8 singletons (col 8 is a dam between B and C, inside gt cell 2).
SPLIT_JOINT_SQ = 40**2 + 16**2 + 24**2 + 8 * 1**2  # 2440
SPLIT_GT_SQ = 40**2 + 48**2  # 3904
SPLIT_PRED_SQ = SPLIT_JOINT_SQ  # every predicted segment lies inside one gt cell
SPLIT_V_RAND = 2 * SPLIT_JOINT_SQ / (SPLIT_GT_SQ + SPLIT_PRED_SQ)  # 4880 / 6344 = 10/13
SPLIT_H_GT = h(40, 48)
SPLIT_H_PRED = h(40, 16, 24, *[1] * 8)
# H(gt | pred) = 0, so I = H(gt).
SPLIT_V_INFO = 2 * SPLIT_H_GT / (SPLIT_H_GT + SPLIT_H_PRED)

# Merge: gt has membranes at cols 3 and 7; the prediction misses col 7.
# gt cells: 24, 24, 32 px; N = 80. Predicted, inside gt cells: A = 24, B = 24 + 32 = 56.
MERGE_JOINT_SQ = 24**2 + 24**2 + 32**2  # 2176
MERGE_GT_SQ = MERGE_JOINT_SQ  # every gt cell lies inside one predicted segment
MERGE_PRED_SQ = 24**2 + 56**2  # 3712
MERGE_V_RAND = 2 * MERGE_JOINT_SQ / (MERGE_GT_SQ + MERGE_PRED_SQ)  # 4352 / 5888 = 17/23
MERGE_H_GT = h(24, 24, 32)
MERGE_H_PRED = h(24, 56)
# H(pred | gt) = 0, so I = H(pred).
MERGE_V_INFO = 2 * MERGE_H_PRED / (MERGE_H_GT + MERGE_H_PRED)

# The whole split gt (cells of 40 and 48 px) predicted as one segment: precision
# 3904 / 88^2, recall 1 (no pair of a gt cell is split).
ONE_SEGMENT_V_RAND = 2 * SPLIT_GT_SQ / (SPLIT_GT_SQ + 88**2)  # 7808 / 11648


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

    direct = slice_scores(label_cells(truth), watershed_segments(predicted.astype(bool)))
    swept = isbi_scores([as_prob(predicted)], [truth])

    for scores in (direct, swept):
        assert scores["v_rand"] == pytest.approx(SPLIT_V_RAND, rel=1e-12)
        assert scores["v_info"] == pytest.approx(SPLIT_V_INFO, rel=1e-12)


def test_merge_case_matches_hand_computed_scores():
    truth, predicted = membrane_columns(3, 7), membrane_columns(3)
    assert MERGE_V_RAND == pytest.approx(17 / 23)

    direct = slice_scores(label_cells(truth), watershed_segments(predicted.astype(bool)))
    swept = isbi_scores([as_prob(predicted)], [truth])

    for scores in (direct, swept):
        assert scores["v_rand"] == pytest.approx(MERGE_V_RAND, rel=1e-12)
        assert scores["v_info"] == pytest.approx(MERGE_V_INFO, rel=1e-12)


# --- thresholds and binarization (RandError / VariationOfInformation threshold loops) ---------


def test_default_thresholds_are_javas_accumulated_sweep():
    # for (double th = 0.0; th <= 1.0; th += 0.1): 11 values, drifting, the last just below 1.
    assert DEFAULT_THRESHOLDS == fiji_thresholds(0.0, 1.0, 0.1) == tuple(fiji.java_thresholds(0.0, 1.0, 0.1))
    assert len(DEFAULT_THRESHOLDS) == 11
    assert DEFAULT_THRESHOLDS[3] == 0.1 + 0.1 + 0.1 == 0.30000000000000004
    assert DEFAULT_THRESHOLDS[-1] == 0.9999999999999999


def test_probability_exactly_at_a_threshold_is_membrane():
    # True membrane (col 5) at exactly 0.5: cell for t < 0.5, membrane from t = 0.5 on (strict >).
    # With >= it would still be cell at 0.5 and the best threshold would be 0.6.
    truth = membrane_columns(5)
    prob = np.ones(SHAPE)
    prob[:, 5] = 0.5

    scores = isbi_scores([prob], [truth])

    expected = [ONE_SEGMENT_V_RAND] * 5 + [1.0] * 6
    assert [s["v_rand"] for s in scores["per_threshold"]] == pytest.approx(expected, rel=1e-12)
    assert scores["v_rand_threshold"] == scores["v_info_threshold"] == 0.5


def test_extreme_thresholds_keep_only_exact_zeros_and_exact_ones():
    prob = np.array([[0.0, 1e-7, 0.99999994, 1.0]], np.float32)

    assert binarize_proposal(prob, DEFAULT_THRESHOLDS[0]).tolist() == [[False, True, True, True]]
    assert binarize_proposal(prob, DEFAULT_THRESHOLDS[-1]).tolist() == [[False, False, False, True]]


def test_probabilities_are_compared_as_float32():
    # The reference reads a 32-bit float image: float32(0.3) = 0.30000001 lies above the
    # threshold 0.30000000000000004, whatever precision the caller's array has.
    for dtype in (np.float32, np.float64):
        assert binarize_proposal(np.array([[0.3]], dtype), DEFAULT_THRESHOLDS[3]).item()
    assert not binarize_proposal(np.array([[0.3]]), 0.30000002).item()


def test_threshold_sweep_returns_the_argmax_threshold():
    # True membrane at col 5 with probability 0.45, false membrane at col 8 with 0.55:
    # t <= 0.4 sees neither (merge), t = 0.5 sees exactly the true one, t >= 0.6 both (split).
    truth = membrane_columns(5)
    prob = np.ones(SHAPE)
    prob[:, 5], prob[:, 8] = 0.45, 0.55

    scores = isbi_scores([prob], [truth])

    assert scores["v_rand_threshold"] == scores["v_info_threshold"] == 0.5
    assert scores["v_rand"] == scores["v_info"] == pytest.approx(1.0)
    assert [s["threshold"] for s in scores["per_threshold"]] == list(DEFAULT_THRESHOLDS)
    expected = [ONE_SEGMENT_V_RAND] * 5 + [1.0] + [SPLIT_V_RAND] * 5
    assert [s["v_rand"] for s in scores["per_threshold"]] == pytest.approx(expected, rel=1e-12)
    # One predicted segment has zero entropy, which the reference scores V_info = 0.
    assert [s["v_info"] for s in scores["per_threshold"]][:5] == [0.0] * 5


# --- the ground truth is labelled unthinned ---------------------------------------------------


def test_ground_truth_is_scored_unthinned():
    # gt membrane 3 px wide (cols 4-6); the prediction's 1-px membrane at its edge (col 4).
    # Unthinned, the gt cells are cols 0-3 (32 px) and 7-11 (40 px), each inside one predicted
    # segment: a perfect score. Thinning the gt to col 5 would move col 4 into gt cell 1, where
    # the prediction has 8 dam pixels: 2 (32^2 + 8 + 48^2) / (40^2 + 48^2 + 32^2 + 8 + 48^2).
    truth = membrane_columns(4, 5, 6)
    prob = as_prob(membrane_columns(4))
    thinned_gt_v_rand = 2 * 3336 / (3904 + 3336)

    scores = isbi_scores([prob], [truth])

    assert scores["v_rand"] == scores["v_info"] == 1.0
    assert thinned_gt_v_rand == pytest.approx(0.92155, abs=1e-5)


# --- the proposal is thinned by Fiji's watershed ----------------------------------------------


def test_thick_predicted_membrane_is_thinned_to_its_middle():
    # A 3-px predicted membrane over a 1-px true one: pixel accuracy suffers, topology does not.
    truth = membrane_columns(5)
    prob = as_prob(membrane_columns(4, 5, 6))

    assert np.array_equal(watershed_segments(prob > 0.5) == 0, truth == 0)
    assert isbi_scores([prob], [truth])["v_rand"] == pytest.approx(1.0)
    assert pixel_scores(prob, truth)["accuracy"] == pytest.approx(1 - 16 / 96)


def test_even_width_membrane_dams_on_the_pixel_the_fifo_pops_later():
    # Layer 1 is popped by column, then row: of a 2-px membrane, the right column (or the
    # lower row) is reached second, sees the other basin and becomes the dam.
    vertical = watershed_segments(membrane_columns(5, 6).astype(bool))
    horizontal = np.ones((8, 6), bool)
    horizontal[3:5, :] = False

    assert (vertical == 0).sum(axis=0).tolist() == [0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0]
    assert (watershed_segments(horizontal) == 0).sum(axis=1).tolist() == [0, 0, 0, 0, 6, 0, 0, 0]


def test_spur_and_isolated_speck_are_absorbed_by_the_watershed():
    # A free-standing spur (rows 0-2 of col 8, from the top border) and a speck at (6, 2)
    # separate nothing: the flooding gives them to the cell around them. Kept as 1-px
    # membrane (as a skeletonization keeps them) they would be 4 singletons in gt cells:
    # 2 (39^2 + 45^2 + 4) / (40^2 + 48^2 + 39^2 + 45^2 + 4) = 0.9525.
    truth = membrane_columns(5)
    prob = as_prob(membrane_columns(5))
    prob[0:3, 8] = 0.0
    prob[6, 2] = 0.0

    assert same_partition(watershed_segments(prob > 0.5), label_cells(truth))
    assert isbi_scores([prob], [truth])["v_rand"] == isbi_scores([prob], [truth])["v_info"] == 1.0


def test_spur_on_a_membrane_kinks_the_dam_where_the_fifo_meets():
    # A spur (row 3, cols 6-8) off the true membrane (col 5): (3, 5) is popped after the dam
    # pixel above it and names only cell A, so it joins A; (3, 6) then sees A and cell B and
    # becomes the dam; the rest of the spur joins B. In gt cell 2 (48 px): B 47 + 1 singleton.
    truth = membrane_columns(5)
    prob = as_prob(membrane_columns(5))
    prob[3, 6:9] = 0.0

    segments = watershed_segments(prob > 0.5)

    assert np.flatnonzero(segments[3] == 0).tolist() == [6]
    assert isbi_scores([prob], [truth])["v_rand"] == pytest.approx(2 * 3810 / (3904 + 3810), rel=1e-12)


def test_thinned_membrane_still_reaches_the_image_border():
    # Nothing is padded: a band from the top to the bottom border is flooded from both sides
    # and dams along its whole length (on col 7, the column the FIFO pops second).
    band = np.ones((10, 16), bool)
    band[:, 5:9] = False

    segments = watershed_segments(band)

    assert np.flatnonzero((segments == 0).any(axis=0)).tolist() == [7]
    assert (np.count_nonzero(segments == 0, axis=1) == 1).all()
    assert same_partition(segments, label_cells(segments > 0))
    assert segments.max() == 2


def test_membrane_along_the_border_is_absorbed():
    # Membrane with one cell region next to it is no dam, even along the image border.
    cells = np.ones((6, 6), bool)
    cells[:2, :] = False
    cells[:, :1] = False

    assert (watershed_segments(cells) == 1).all()


def test_diagonal_one_pixel_membrane_separates_cells():
    # Cells on either side of a diagonal touch at corners: only 4-connectivity keeps them apart.
    cells = ~np.eye(6, dtype=bool)

    assert label_cells(cells).max() == 2
    assert same_partition(watershed_segments(cells), np.where(cells, label_cells(cells), 0))


def test_no_cell_pixel_is_one_segment_and_no_membrane_keeps_the_cells():
    assert (watershed_segments(np.zeros((3, 4), bool)) == 1).all()
    assert (watershed_segments(np.ones((3, 4), bool)) == 1).all()


def test_watershed_matches_the_literal_transcription_on_random_masks():
    rng = np.random.default_rng(7)
    for trial in range(120):
        height, width = rng.integers(1, 24, size=2)
        if trial % 2:
            smooth = ndimage.gaussian_filter(rng.random((height, width)), rng.uniform(0.5, 2.5))
            cells = smooth > np.quantile(smooth, rng.uniform(0.1, 0.9))
        else:
            cells = rng.random((height, width)) < rng.uniform(0.02, 0.9)

        assert same_partition(watershed_segments(cells), oracle_watershed(cells)), cells.astype(int)


# --- per-slice scores: singletons, zero entropies, empty ground truth -------------------------


def test_dam_pixels_inside_gt_cells_are_singletons():
    gt = np.array([[1, 1, 0], [2, 2, 0]])
    proposal = np.array([[1, 0, 2], [1, 1, 2]])

    scores = slice_scores(gt, proposal)

    # Counted over the 4 gt cell pixels: joint {1: 1, dam: 1, (2, 1): 2}, gt sizes 2, 2,
    # proposal sizes: segment 1 -> 3 px, one singleton; gt col 2 is membrane and ignored.
    joint_sq, gt_sq, proposal_sq = 1 + 1 + 4, 4 + 4, 9 + 1
    assert scores["v_rand"] == pytest.approx(2 * joint_sq / (gt_sq + proposal_sq), rel=1e-12)
    h_gt, h_proposal, h_joint = h(2, 2), h(3, 1), h(1, 1, 2)
    assert scores["v_info"] == pytest.approx(2 * (h_gt + h_proposal - h_joint) / (h_gt + h_proposal), rel=1e-12)


def test_single_gt_cell_or_single_segment_scores_zero_v_info():
    # H(gt) = 0 gives precision 0, recall 1; H(proposal) = 0 precision 1, recall 0: F = 0,
    # even for a perfect proposal. Rand has no such rule.
    one_cell = np.ones(SHAPE)

    perfect = isbi_scores([one_cell], [one_cell])
    merged = isbi_scores([np.zeros(SHAPE)], [membrane_columns(5)])

    assert (perfect["v_rand"], perfect["v_info"]) == (1.0, 0.0)
    assert merged["v_rand"] == pytest.approx(ONE_SEGMENT_V_RAND, rel=1e-12)
    assert merged["v_info"] == 0.0
    # Nothing exceeds 0, so the reported threshold is the first one, as Java's bestTh.
    assert perfect["v_info_threshold"] == merged["v_info_threshold"] == 0.0


def test_independent_segmentations_have_undefined_v_info():
    # I = 0 with both entropies positive: precision = recall = 0 and F = 0/0, as in the Java.
    gt = np.array([[1, 1], [2, 2]])
    proposal = np.array([[1, 2], [1, 2]])

    scores = slice_scores(gt, proposal)

    assert scores["v_rand"] == 0.5  # precision = recall = 4 / 8
    assert math.isnan(scores["v_info"])
    assert math.isnan(fiji.foreground_restricted_info_fscore(gt.T.tolist(), proposal.T.tolist()))


def test_slice_without_gt_cells_scores_zero_and_counts_in_the_average():
    # The reference divides by n = 0 and its NaNs end in a zero F-score for that slice.
    truths = [membrane_columns(5), np.zeros(SHAPE)]
    probs = [as_prob(membrane_columns(5)), np.ones(SHAPE)]

    scores = isbi_scores(probs, truths)

    assert scores["v_rand"] == scores["v_info"] == 0.5
    assert fiji.foreground_restricted_rand_fscore(*[[[0] * 2] * 2] * 2) == 0.0


# --- slices are averaged, not pooled ----------------------------------------------------------


def test_slices_are_averaged_not_pooled():
    split = (as_prob(membrane_columns(5, 8)), membrane_columns(5))
    perfect = (as_prob(membrane_columns(3, 7)), membrane_columns(3, 7))

    scores = isbi_scores([split[0], perfect[0]], [split[1], perfect[1]])

    assert scores["v_rand"] == pytest.approx((SPLIT_V_RAND + 1.0) / 2, rel=1e-12)  # 23/26
    assert scores["v_info"] == pytest.approx((SPLIT_V_INFO + 1.0) / 2, rel=1e-12)
    # One contingency table over both slices (perfect slice: 24^2 + 24^2 + 32^2 = 2176 in
    # each sum) would give 2 (2440 + 2176) / (3904 + 2176 + 2440 + 2176) = 0.8631 instead.
    pooled = 2 * (SPLIT_JOINT_SQ + 2176) / (SPLIT_GT_SQ + 2176 + SPLIT_PRED_SQ + 2176)
    assert scores["v_rand"] != pytest.approx(pooled, rel=1e-3)


# --- scikit-image, where the conventions coincide ---------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_scores_agree_with_skimage_on_voronoi_labels(seed):
    rng = np.random.default_rng(seed)
    gt = voronoi_labels(rng, (64, 64), 12)
    pred = voronoi_labels(rng, (64, 64), 9)
    ours = slice_scores(gt, pred)

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


@pytest.mark.parametrize("seed", [4, 5])
def test_isbi_scores_agree_with_skimage_when_dams_lie_on_gt_membrane(seed):
    # gt: Voronoi cells with 3-px membranes. Prediction: the same 1-px boundaries, some
    # deleted (merges). Already thin, every dam between two cells and inside gt membrane:
    # no singletons and no thinning effect, so skimage's conventions coincide (up to (b)).
    rng = np.random.default_rng(seed)
    regions = voronoi_labels(rng, (64, 64), 14)
    truth = ~ndimage.binary_dilation(regions == 0)
    kept = rng.permutation(np.arange(1, 15))[:10]
    boundary = (regions == 0) & ndimage.binary_dilation(np.isin(regions, kept))
    prob = np.where(boundary, 0.0, 1.0)

    scores = isbi_scores([prob], [truth.astype(np.uint8)])

    gt, pred = label_cells(truth), watershed_segments(prob > 0.5)
    assert not (pred[gt > 0] == 0).any()
    table = contingency_table(gt, pred, ignore_labels=(0,), sparse_type="array") * 1e9
    assert scores["v_rand"] == pytest.approx(1 - adapted_rand_error(table=table)[0], rel=1e-8)
    vi = variation_of_information(gt, pred, ignore_labels=(0,)).sum()
    h_gt, h_pred = entropy_of_labels(gt[gt > 0]), entropy_of_labels(pred[gt > 0])
    assert scores["v_info"] == pytest.approx(1 - vi / (h_gt + h_pred), rel=1e-9)
    assert scores["v_rand"] < 1


# --- agreement with the literal transcription of the Java on real labels ----------------------


def realistic_predictions(kind: str, cells: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Returns float32 probability maps made from true cell masks, imperfect in a realistic way."""
    if kind == "blurred_noisy":
        maps = [ndimage.gaussian_filter(c.astype(np.float32), 1.5) + rng.normal(0, 0.15, c.shape) for c in cells]
    elif kind == "eroded_dilated":  # membranes 1 px thinner on some slices, 2 px thicker on others
        maps = [ndimage.gaussian_filter((ndimage.binary_dilation(c) if i % 2 else
                                         ndimage.binary_erosion(c, iterations=2)).astype(np.float32), 1.0)
                for i, c in enumerate(cells)]
    else:  # membrane segments deleted in random 5 x 5 windows, then blurred
        maps = []
        for c in cells:
            gapped = c.copy()
            for y, x in rng.integers(0, c.shape[0] - 5, size=(6, 2)):
                gapped[y:y + 5, x:x + 5] = True
            maps.append(ndimage.gaussian_filter(gapped.astype(np.float32), 1.0))
    return [np.clip(m, 0, 1).astype(np.float32) for m in maps]


@pytest.mark.parametrize("kind", ["blurred_noisy", "eroded_dilated", "gapped"])
def test_isbi_scores_agree_with_the_fiji_transcription_on_isbi_labels(kind):
    # The literal transcription is slow, so each slice is a 48 x 64 crop of labels 25-29.
    rng = np.random.default_rng(["blurred_noisy", "eroded_dilated", "gapped"].index(kind))
    truths = []
    for name in range(25, 30):
        label = np.array(Image.open(REPO / "data" / "isbi2012" / "train" / "label" / f"{name}.png"))
        y, x = rng.integers(0, 512 - 64, size=2)
        truths.append(label[y:y + 48, x:x + 64])
    probs = realistic_predictions(kind, [t > 127 for t in truths], rng)

    ours = isbi_scores(probs, truths)
    reference = fiji.maximal_scores_after_thinning(truths, probs)

    # Only the order of floating-point sums differs.
    for row, (threshold, v_rand, v_info) in zip(ours["per_threshold"], reference["per_threshold"]):
        assert row["threshold"] == threshold
        assert row["v_rand"] == pytest.approx(v_rand, abs=1e-9)
        assert row["v_info"] == pytest.approx(v_info, abs=1e-9, nan_ok=True)
    assert ours["v_rand"] == pytest.approx(reference["v_rand"], abs=1e-9)
    assert ours["v_info"] == pytest.approx(reference["v_info"], abs=1e-9)
    assert 0.5 < ours["v_rand"] < 1


# --- pixel scores -----------------------------------------------------------------------------

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


# --- input validation -------------------------------------------------------------------------


@pytest.mark.parametrize("score", [pixel_scores, isbi_scores, evaluate_slices])
def test_shape_mismatch_names_both_shapes(score):
    with pytest.raises(ValueError, match=re.escape("(4, 4)") + ".*" + re.escape("(4, 5)")):
        score([np.ones((4, 4))], [np.ones((4, 5))])


def test_slice_scores_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=re.escape("(2, 3)") + ".*" + re.escape("(3, 2)")):
        slice_scores(np.ones((2, 3), int), np.ones((3, 2), int))


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, 1.5, -0.1])
def test_invalid_probabilities_are_rejected(bad_value):
    prob = np.full((4, 4), 0.5)
    prob[1, 2] = bad_value

    with pytest.raises(ValueError, match="prediction"):
        pixel_scores(prob, np.ones((4, 4)))


def test_empty_threshold_list_is_rejected():
    with pytest.raises(ValueError, match="thresholds"):
        isbi_scores([np.ones((4, 4))], [np.ones((4, 4))], thresholds=())
