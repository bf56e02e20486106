"""Segmentation metrics for membrane (boundary) prediction, in pure numpy/scipy/scikit-image.

Conventions (ISBI 2012 EM challenge): in a ground-truth mask, 1 (or 255) marks cell
interior (white) and 0 marks membrane (black). A prediction is a map of probabilities,
in [0, 1], that a pixel is cell.

Two families of scores:

* pixel scores (accuracy, pixel error, Dice, IoU) of the thresholded prediction;
* the ISBI 2012 challenge scores V_rand and V_info, the foreground-restricted Rand and
  information-theoretic scores computed after thinning the membranes to 1 px, taking
  the best value over a sweep of binarization thresholds.

Sources:

* I. Arganda-Carreras, S. C. Turaga, D. R. Berger et al. (2015), "Crowdsourcing the
  creation of image segmentation algorithms for connectomics", Front. Neuroanat. 9:142,
  doi:10.3389/fnana.2015.00142 -- definitions of V_rand and V_info.
* Fiji "Segmentation evaluation after border thinning" script and its Java back end,
  trainableSegmentation.metrics.RandError.getForegroundRestrictedRandIndexStatsN2 and
  VariationOfInformation.foregroundRestrictedVI (github.com/fiji/Trainable_Segmentation)
  -- the reference implementation, whose conventions are followed here.
* skimage.metrics.adapted_rand_error / variation_of_information -- independent
  implementations used to cross-check this module in the tests.
* T. Y. Zhang and C. Y. Suen (1984), "A fast parallel algorithm for thinning digital
  patterns", Commun. ACM 27(3) -- the thinning used (skimage.morphology.skeletonize).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage, sparse
from skimage.morphology import skeletonize

Images = np.ndarray | Sequence[np.ndarray]

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.round(np.arange(0.1, 0.91, 0.1), 2))

# 4-connectivity for cells: a 1-px, 8-connected membrane line then separates two cells.
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)

# Mirror margin added before thinning. Without it, skeletonize sees the outside of the
# image as background, thins membranes that touch the border away from it and so merges
# the cells on either side; the margin must exceed the half-width of the thickest membrane.
_THINNING_MARGIN = 32


def pixel_scores(prob: Images, truth: Images, threshold: float = 0.5, foreground: int = 0) -> dict[str, float]:
    """Return accuracy, pixel_error, dice and iou of the prediction thresholded at `threshold`.

    A pixel is predicted cell (class 1) when prob >= threshold, membrane (class 0)
    otherwise. Dice and IoU are computed for the class `foreground` (0 = membrane by
    default). Lists of images are pooled over all their pixels, not averaged per image.
    When neither truth nor prediction contains the foreground class, dice = iou = 1.
    """
    if foreground not in (0, 1):
        raise ValueError(f"foreground must be 0 (membrane) or 1 (cell), got {foreground!r}")
    probs, truths = _validated_pairs(prob, truth)
    predicted_cell = np.concatenate([(p >= threshold).ravel() for p in probs])
    actual_cell = np.concatenate([cell_mask_from_truth(t).ravel() for t in truths])
    accuracy = float(np.mean(predicted_cell == actual_cell))
    dice, iou = _overlap_scores(predicted_cell == bool(foreground), actual_cell == bool(foreground))
    return {"accuracy": accuracy, "pixel_error": 1.0 - accuracy, "dice": dice, "iou": iou}


def cell_mask_from_truth(truth: np.ndarray) -> np.ndarray:
    """Return the boolean cell mask of a ground-truth image whose white value is 1 or 255."""
    truth = np.asarray(truth)
    white = 255 if truth.max() > 1 else 1
    return truth >= white / 2


def thin_membranes(cell_mask: np.ndarray) -> np.ndarray:
    """Return the cell mask with its membranes (False pixels) thinned to 1-px skeletons.

    The image is mirrored outward before thinning so that membranes reaching the
    image border still reach it afterwards (see _THINNING_MARGIN).
    """
    membrane = ~np.asarray(cell_mask, dtype=bool)
    m = _THINNING_MARGIN
    thinned = skeletonize(np.pad(membrane, m, mode="reflect"))[m:-m, m:-m]
    return ~thinned


def label_cells(cell_mask: np.ndarray) -> np.ndarray:
    """Return the 4-connected components of the cell pixels, labelled 1..n; membrane is 0."""
    labels, _ = ndimage.label(np.asarray(cell_mask, dtype=bool), structure=_FOUR_CONNECTED)
    return labels


def contingency(gt_labels: np.ndarray, pred_labels: np.ndarray) -> sparse.csr_array:
    """Return the sparse table of pixel counts n_ij over (gt segment i, predicted segment j).

    Only ground-truth foreground pixels (gt label != 0) are counted, so row 0 is empty.
    Column 0 holds the pixels predicted as membrane; rand_and_info treats each of them
    as a segment of its own (see there).
    """
    gt_labels, pred_labels = np.asarray(gt_labels), np.asarray(pred_labels)
    _check_same_shape(gt_labels, pred_labels, "ground-truth labels", "predicted labels")
    foreground = gt_labels != 0
    rows, cols = gt_labels[foreground], pred_labels[foreground]
    shape = (int(gt_labels.max()) + 1, int(pred_labels.max()) + 1)
    # Converting to CSR sums the duplicate (i, j) entries; the table is never made dense.
    return sparse.coo_array((np.ones(rows.size, dtype=np.int64), (rows, cols)), shape=shape).tocsr()


def pool_contingency(tables: Iterable[sparse.sparray]) -> sparse.csr_array:
    """Return one table holding the counts of all `tables`, with their segments kept distinct.

    Segment labels restart at 1 in every slice, so each table's labels are shifted past
    the previous ones; label 0 (membrane) keeps its meaning and stays 0.
    """
    rows, cols, counts = [], [], []
    n_rows = n_cols = 1
    for table in tables:
        coo = sparse.coo_array(table)
        rows.append(np.where(coo.row > 0, coo.row + n_rows - 1, 0))
        cols.append(np.where(coo.col > 0, coo.col + n_cols - 1, 0))
        counts.append(coo.data)
        n_rows += coo.shape[0] - 1
        n_cols += coo.shape[1] - 1
    if not counts:
        raise ValueError("no contingency tables to pool")
    data = (np.concatenate(counts), (np.concatenate(rows), np.concatenate(cols)))
    return sparse.coo_array(data, shape=(n_rows, n_cols)).tocsr()


def rand_and_info(table: sparse.sparray | np.ndarray) -> dict[str, float]:
    """Return {"v_rand", "v_info"} of a contingency table built by contingency().

    With p_ij the joint distribution and s_i, t_j its marginals over gt and predicted
    segments: V_rand = sum p_ij^2 / (0.5 sum s_i^2 + 0.5 sum t_j^2) and
    V_info = 2 I(S;T) / (H(S) + H(T)), with V_info = 1 when both entropies are 0.

    Row 0 (ground-truth membrane) is ignored. Pixels in column 0 (predicted membrane
    inside a ground-truth cell) count as singletons, one segment of size 1 each, as in
    the Fiji/ISBI reference code (the sum(p_i0)/n terms of
    getForegroundRestrictedRandIndexStatsN2 and foregroundRestrictedVI). We follow Fiji
    rather than skimage.metrics.adapted_rand_error, which lumps all of them into a single
    segment, because this is the official challenge score, and because a singleton joins
    no pair: wrongly predicted membrane costs what it removes from its own cell instead of
    merging every such pixel of the image into one spurious giant segment.
    """
    joint_sizes, gt_sizes, pred_sizes = _segment_sizes(table)
    n_pixels = gt_sizes.sum()
    if n_pixels == 0:
        raise ValueError("empty contingency table: the ground truth has no cell pixels")
    # Sizes are counts, not probabilities: the common factor 1/n^2 cancels in V_rand.
    v_rand = np.sum(joint_sizes**2) / (0.5 * np.sum(gt_sizes**2) + 0.5 * np.sum(pred_sizes**2))
    h_gt, h_pred = _entropy(gt_sizes, n_pixels), _entropy(pred_sizes, n_pixels)
    mutual_information = h_gt + h_pred - _entropy(joint_sizes, n_pixels)
    v_info = 1.0 if h_gt + h_pred == 0 else 2 * mutual_information / (h_gt + h_pred)
    return {"v_rand": float(v_rand), "v_info": float(v_info)}


def isbi_scores(probs: Images, truths: Images, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict:
    """Return the ISBI 2012 scores, best over `thresholds`, pooled over all slices.

    For each threshold t: cell = prob >= t, membranes of prediction and truth thinned to
    1 px, cells labelled, and the contingency tables of all slices pooled (summed, with
    each slice's segments kept distinct) before scoring. Returns v_rand and v_info (the
    maxima; ties go to the lowest threshold), v_rand_threshold and v_info_threshold (their
    argmax thresholds) and per_threshold, a list of {"threshold", "v_rand", "v_info"}.
    """
    probs, truths = _validated_pairs(probs, truths)
    if len(thresholds) == 0:
        raise ValueError("thresholds is empty")
    gt_cells = [cell_mask_from_truth(t) for t in truths]
    # Thinning would shrink an all-membrane slice to a point and score it as one big cell.
    cell_less = [i for i, cells in enumerate(gt_cells) if not cells.any()]
    if cell_less:
        raise ValueError(f"ground-truth slices {cell_less} have no cell pixels")
    gt_labels = [label_cells(thin_membranes(cells)) for cells in gt_cells]
    per_threshold = []
    for threshold in thresholds:
        tables = (contingency(gt, label_cells(thin_membranes(p >= threshold))) for gt, p in zip(gt_labels, probs))
        per_threshold.append({"threshold": float(threshold), **rand_and_info(pool_contingency(tables))})
    # max() keeps the first maximum, i.e. the lowest threshold among ties.
    best_rand = max(per_threshold, key=lambda s: s["v_rand"])
    best_info = max(per_threshold, key=lambda s: s["v_info"])
    return {
        "v_rand": best_rand["v_rand"],
        "v_rand_threshold": best_rand["threshold"],
        "v_info": best_info["v_info"],
        "v_info_threshold": best_info["threshold"],
        "per_threshold": per_threshold,
    }


def evaluate_slices(probs: Images, truths: Images, threshold: float = 0.5, foreground: int = 0) -> dict[str, float]:
    """Return a flat dict of floats ready to log: the ISBI scores and pixel scores at `threshold`.

    Keys: v_rand, v_info, v_rand_threshold, v_info_threshold, accuracy, pixel_error, dice, iou.
    """
    isbi = isbi_scores(probs, truths)
    return {
        "v_rand": isbi["v_rand"],
        "v_info": isbi["v_info"],
        "v_rand_threshold": isbi["v_rand_threshold"],
        "v_info_threshold": isbi["v_info_threshold"],
        **pixel_scores(probs, truths, threshold=threshold, foreground=foreground),
    }


def _segment_sizes(table: sparse.sparray | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the pixel counts of joint, gt and predicted segments, membrane singletons included."""
    coo = sparse.coo_array(table)
    coo.sum_duplicates()
    scored = coo.row > 0
    rows, cols, counts = coo.row[scored], coo.col[scored], coo.data[scored].astype(np.float64)
    on_membrane = cols == 0
    singletons = np.ones(int(counts[on_membrane].sum()))
    joint = np.concatenate([counts[~on_membrane], singletons])
    gt = np.bincount(rows, weights=counts)
    pred = np.concatenate([np.bincount(cols[~on_membrane], weights=counts[~on_membrane]), singletons])
    return joint, gt, pred


def _entropy(sizes: np.ndarray, total: float) -> float:
    """Return the Shannon entropy (nats) of segments with the given pixel counts."""
    p = sizes[sizes > 0] / total
    return float(-np.sum(p * np.log(p)))


def _overlap_scores(predicted: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """Return (dice, iou) of two boolean masks; both are 1 when both masks are empty."""
    intersection = np.count_nonzero(predicted & actual)
    total = np.count_nonzero(predicted) + np.count_nonzero(actual)
    if total == 0:
        return 1.0, 1.0
    return float(2 * intersection / total), float(intersection / (total - intersection))


def _validated_pairs(probs: Images, truths: Images) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Return predictions and truths as equal-length lists of matching 2-D arrays."""
    prob_list, truth_list = _as_image_list(probs), _as_image_list(truths)
    if len(prob_list) != len(truth_list):
        raise ValueError(f"{len(prob_list)} predictions but {len(truth_list)} truths")
    for prob, truth in zip(prob_list, truth_list):
        _check_same_shape(prob, truth, "prediction", "truth")
        if prob.ndim != 2:
            raise ValueError(f"expected 2-D images, got shape {prob.shape}")
        if not np.all(np.isfinite(prob)):
            raise ValueError("prediction contains NaN or infinite values")
        if prob.min() < 0 or prob.max() > 1:
            raise ValueError(f"prediction values must lie in [0, 1], got [{prob.min()}, {prob.max()}]")
    return prob_list, truth_list


def _as_image_list(images: Images) -> list[np.ndarray]:
    """Return a single 2-D image, or a sequence / N x H x W stack of them, as a list of arrays."""
    if isinstance(images, np.ndarray) and images.ndim == 2:
        return [images]
    image_list = [np.asarray(image) for image in images]
    if not image_list:
        raise ValueError("no images given")
    return image_list


def _check_same_shape(a: np.ndarray, b: np.ndarray, a_name: str, b_name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{a_name} shape {a.shape} does not match {b_name} shape {b.shape}")
