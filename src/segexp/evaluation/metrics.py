"""Segmentation metrics for membrane (boundary) prediction, in pure numpy/scipy.

Conventions (ISBI 2012 EM challenge): in a ground-truth mask, 1 (or 255) marks cell
interior (white) and 0 marks membrane (black). A prediction is a map of probabilities,
in [0, 1], that a pixel is cell.

Two families of scores:

* pixel scores (accuracy, pixel error, Dice, IoU) of the thresholded prediction;
* the ISBI 2012 challenge scores V_rand and V_info, computed exactly as the official
  challenge script does: RandError.getMaximalVRandAfterThinning(0.0, 1.0, 0.1, true) and
  VariationOfInformation.getMaximalVInfoAfterThinning(0.0, 1.0, 0.1) of Fiji's Trainable
  Segmentation (github.com/fiji/Trainable_Segmentation, package trainableSegmentation).

The conventions of that code, each followed here (Java class.method in brackets):

1. Thresholds: th = 0.0, 0.1, ... accumulated in double precision while th <= 1.0, so 11
   values, the last 0.9999999999999999 [RandError.getForegroundRestrictedRandAfterThinningStats,
   VariationOfInformation.getForegroundRestrictedScoresAfterThinning]. See fiji_thresholds.
2. Binarization: a pixel is cell when prob > th, strictly, with prob read as a 32-bit float
   [getPixelValue(x, y) > binaryThreshold in RandError.getForegroundRestrictedRandAfterThinningStatsN2
   and VariationOfInformation.foregroundRestrictedScoreAfterThinningN2]. So at th = 0 every
   nonzero pixel is cell, and at the last threshold only pixels of exactly 1.0 are.
3. Ground truth: binarized the same way and labelled as it is, NOT thinned: cells are the
   4-connected components of the white pixels [Utils.connectedComponents(..., 4), i.e.
   util.FindConnectedRegions without diagonals]. For a 0/1 or 0/255 mask this is the same at
   every threshold of the sweep, so it is labelled once.
4. Proposal thinning: not a skeletonization but the classic flooding watershed of Vincent and
   Soille on the inverted binary proposal [WatershedTransform2D(binaryProposal, 4).apply()]:
   every 4-connected cell region is a basin, and membrane pixels are flooded breadth-first
   from the basins, in the order the Java FIFO visits them; a membrane pixel that two basins
   reach becomes a dam (label 0). So a spur or an isolated speck of membrane that separates
   nothing is absorbed into the cell around it, a membrane between two cells becomes a dam
   about one pixel wide, and the image border is simply the end of the image: nothing is
   padded or mirrored. See watershed_segments.
5. Background: ground-truth membrane pixels (label 0) are left out; n is the number of
   ground-truth cell pixels. Proposal dams inside ground-truth cells (the p_i0 column) count
   as singletons, one segment of one pixel each: the "+ sum(p_i0)/n" terms of the Rand sums
   [RandError.getForegroundRestrictedRandIndexStatsN2] and "- sum(p_i0) log n" of the entropies
   [VariationOfInformation.foregroundRestrictedFscore].
6. Per slice, V_rand is the F-score of Rand precision sum p_ij^2 / sum t_j^2 and recall
   sum p_ij^2 / sum s_i^2 (a precision or recall whose false count is 0 is 1; F = 0 when both
   are 0) [ClassificationStatistics]. V_info is the F-score of I/H(gt) and I/H(proposal),
   except that H(gt) = 0 gives precision 0, recall 1 and H(proposal) = 0 precision 1, recall 0,
   i.e. V_info = 0 for a slice with a single ground-truth cell or a single proposed segment
   [VariationOfInformation.foregroundRestrictedFscore]. A slice without ground-truth cells
   scores 0 in both (the reference's NaNs end there). A 0/0 F-score stays NaN.
7. Slices: each score is computed per slice and averaged over slices, per threshold
   [perSliceAverage = true: "fScore / labelSlices.getSize()"; getForegroundRestrictedScoreAfterThinning].
   Slices are not pooled into one contingency table.
8. Maximum: over the thresholds of the averaged score, starting from 0 and replacing it only
   when strictly larger, so ties keep the lowest threshold and NaN is never chosen
   [getMaximalVRandAfterThinning, getMaximalVInfoAfterThinning].

Sources:

* I. Arganda-Carreras, S. C. Turaga, D. R. Berger et al. (2015), "Crowdsourcing the
  creation of image segmentation algorithms for connectomics", Front. Neuroanat. 9:142,
  doi:10.3389/fnana.2015.00142 -- definitions of V_rand and V_info.
* Fiji Trainable Segmentation: trainableSegmentation.metrics.RandError, VariationOfInformation,
  ClassificationStatistics and trainableSegmentation.utils.WatershedTransform2D -- the
  reference implementation above. tests/fiji_reference.py transcribes it literally and the
  tests check this module against it.
* L. Vincent and P. Soille (1991), "Watersheds in digital spaces: an efficient algorithm based
  on immersion simulations", IEEE TPAMI 13(6) -- the watershed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

IGNORE = 255  # segexp.data.classes.IGNORE: unlabelled pixels, in no score (a leaf module: no import for it)

Images = np.ndarray | Sequence[np.ndarray]


def fiji_thresholds(start: float = 0.0, stop: float = 1.0, step: float = 0.1) -> tuple[float, ...]:
    """Return the thresholds of Java's `for (double th = start; th <= stop; th += step)`.

    The accumulated sum drifts (0.30000000000000004, ..., 0.9999999999999999), and the
    drift decides both how many thresholds there are and which pixels lie above them.
    """
    thresholds, threshold = [], start
    while threshold <= stop:
        thresholds.append(threshold)
        threshold += step
    return tuple(thresholds)


DEFAULT_THRESHOLDS: tuple[float, ...] = fiji_thresholds()

# 4-connectivity for cells: a 1-px, 8-connected membrane line then separates two cells.
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)

# Watershed states, as in WatershedTransform2D: dams are 0, unflooded membrane MASK, and
# pixels off the image are never looked at (OUTSIDE plays the bounds check).
_DAM, _MASK, _OUTSIDE = 0, -2, -1
# Code of the first pixel the FIFO pops in a layer; the k-th popped after it has _QUEUED - k.
_QUEUED = -3

# Largest contingency table counted densely (with bincount); larger ones are sorted instead.
_DENSE_TABLE_LIMIT = 1 << 22


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


def predicted_classes(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Returns uint8 (H, W) class indices: class 1 where an (H, W) probability of class 1 reaches `threshold`,
    the most probable class of (H, W, K) class probabilities."""
    return (prob >= threshold).astype(np.uint8) if prob.ndim == 2 else np.argmax(prob, axis=-1).astype(np.uint8)


def confusion_matrix(probs: Sequence[np.ndarray], truths: Sequence[np.ndarray], count: int,
                     threshold: float = 0.5) -> np.ndarray:
    """Returns the (count, count) pixel counts of (true class, predicted class) pooled over the slices;
    unlabelled pixels (IGNORE) are left out. Truths hold class indices (binary: 0/1)."""
    matrix = np.zeros((count, count), np.int64)
    for prob, truth in zip(probs, truths):
        truth = np.asarray(truth).ravel().astype(np.int64)
        predicted = predicted_classes(np.asarray(prob), threshold).ravel()
        labelled = truth != IGNORE
        pairs = truth[labelled] * count + predicted[labelled]
        matrix += np.bincount(pairs, minlength=count * count).reshape(count, count)
    return matrix


def class_scores(matrix: np.ndarray, names: Sequence[str], foreground: int | None = None) -> dict[str, float]:
    """Returns accuracy and, per class (`names` in index order), dice_<name> and iou_<name> of a confusion matrix,
    and dice and iou: of class `foreground` when given (two classes, as pixel_scores), else the mean over the
    classes present in truth or prediction (a class absent from both says nothing and scores 1)."""
    diagonal = np.diag(matrix).astype(np.float64)
    truth, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    total = matrix.sum()
    present = truth + predicted > 0
    dice = np.where(present, 2 * diagonal / np.maximum(truth + predicted, 1), 1.0)
    iou = np.where(present, diagonal / np.maximum(truth + predicted - diagonal, 1), 1.0)
    scores = {"accuracy": float(diagonal.sum() / total) if total else float("nan")}
    if foreground is not None:
        scores.update(dice=float(dice[foreground]), iou=float(iou[foreground]))
    else:
        scores.update(dice=float(dice[present].mean()) if present.any() else 1.0,
                      iou=float(iou[present].mean()) if present.any() else 1.0)
    for name, d, i in zip(names, dice, iou):
        scores.update({f"dice_{name}": float(d), f"iou_{name}": float(i)})
    return scores


def cell_mask_from_truth(truth: np.ndarray) -> np.ndarray:
    """Return the boolean cell mask of a ground-truth image whose white value is 1 or 255."""
    truth = np.asarray(truth)
    white = 255 if truth.max() > 1 else 1
    return truth >= white / 2


def binarize_proposal(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Return the cell mask prob > threshold, comparing prob as a 32-bit float in double precision.

    The reference reads the proposal as a float image and widens each pixel to double, so
    0.3 as float32 (0.30000001...) lies above the threshold 0.30000000000000004. Comparing a
    float32 array with a Python float directly would round the threshold to float32 instead.
    """
    return np.asarray(prob, np.float32).astype(np.float64) > threshold


def label_cells(cell_mask: np.ndarray) -> np.ndarray:
    """Return the 4-connected components of the cell pixels, labelled 1..n; membrane is 0."""
    labels, _ = ndimage.label(np.asarray(cell_mask, dtype=bool), structure=_FOUR_CONNECTED)
    return labels


def watershed_segments(cell_mask: np.ndarray) -> np.ndarray:
    """Return the segments of a binary proposal after Fiji's watershed thinning of its membrane.

    The result equals WatershedTransform2D(inverted mask, 4).apply() up to the numbering of
    the segments: each 4-connected cell region is a segment (>= 1), membrane pixels are
    flooded into the segment that reaches them, and dams where two segments meet are 0.
    Without any cell pixel, the whole image is one segment (a single new minimum).

    The Java FIFO visits membrane pixels by their 4-path distance to the cells, layer by
    layer; within a layer, the order is that of the FIFO, which decides which of two touching
    pixels of different basins becomes the dam. Every pixel is labelled from the neighbours
    visited before it: the one basin among them, or a dam if they name two basins, or name
    only dams. Layers are therefore resolved in FIFO order, each one vectorized.
    """
    cells = np.asarray(cell_mask, dtype=bool)
    if not cells.any():
        return np.ones(cells.shape, np.int32)
    basins = label_cells(cells).astype(np.int32)
    if cells.all():
        return basins
    height, width = cells.shape
    stride = width + 2
    # In Neighborhood2DC4's order: left, up, right, down (flat offsets in the padded image).
    offsets = np.array([-1, -stride, 1, stride])
    # One array holds what a popped pixel reads of each neighbour: a basin (> 0) or a dam (0)
    # once labelled; unflooded membrane _MASK; off the image _OUTSIDE; and, for the layer
    # being flooded, _QUEUED - (its rank in the FIFO).
    code = np.full((height + 2, width + 2), _OUTSIDE, np.int32)
    code[1:-1, 1:-1] = np.where(cells, basins, _MASK)
    # The FIFO starts with the membrane pixels next to a cell in the order the sorted pixel
    # list holds them, i.e. by column, then row.
    padded = np.pad(cells, 1)
    next_to_cell = ~cells & (padded[1:-1, :-2] | padded[:-2, 1:-1] | padded[1:-1, 2:] | padded[2:, 1:-1])
    columns, rows = np.nonzero(next_to_cell.T)
    layer = (rows + 1) * stride + columns + 1
    code = code.ravel()
    first_key = np.full(code.size, np.iinfo(np.int64).max)  # scratch for _next_layer
    while layer.size:
        code[layer] = _QUEUED - np.arange(layer.size, dtype=np.int32)
        named = code[offsets[:, None] + layer]  # one row per direction: reductions run along rows
        labels = _resolve_layer(layer, named, code, offsets)
        layer_after = _next_layer(layer, named, first_key, offsets)
        code[layer], layer = labels, layer_after
    return code.reshape(height + 2, width + 2)[1:-1, 1:-1].copy()


def _resolve_layer(layer: np.ndarray, named: np.ndarray, code: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Return the watershed labels of one layer's pixels, given in FIFO order.

    named[k, i] is code at the k-th neighbour of layer[i]: earlier layers and cells are
    labelled, this layer holds FIFO ranks.

    A pixel takes the single basin named by the neighbours popped before it (earlier
    layers, or its own layer earlier in the FIFO) and becomes a dam if they name two basins,
    or only dams. Only the same-layer neighbours make the result depend on the order; they
    are resolved by iterating the rule to its fixed point, which is unique because every
    pixel depends only on earlier ones. Each round recomputes only the pixels next to one
    that changed, so it ends after as many rounds as the longest chain of changes.
    """
    first, last = _basin_range(named)
    split = (last > 0) & (first != last)
    labels = np.where(split, _DAM, np.maximum(last, _DAM))

    rank = _QUEUED - named  # the FIFO rank (= index in `layer`) of same-layer neighbours
    earlier = (rank >= 0) & (rank < np.arange(layer.size))  # same layer, popped before
    waiting = np.flatnonzero(earlier.any(axis=0) & ~split)
    if waiting.size == 0:
        return labels
    # Index layer.size of `values` holds -1: "nothing" for directions without an earlier pixel.
    sources = np.where(earlier[:, waiting], rank[:, waiting], layer.size)
    own = labels[waiting]  # the basin named by earlier layers, or a dam
    row_of = np.full(layer.size, -1)
    row_of[waiting] = np.arange(waiting.size)
    values = np.append(labels, np.int32(-1))
    rows = np.arange(waiting.size)
    while rows.size:
        first, last = _basin_range(np.vstack([own[rows], values[sources[:, rows]]]))
        updated = np.where((last > 0) & (first == last), last, _DAM)
        changed = waiting[rows[updated != values[waiting[rows]]]]
        values[waiting[rows]] = updated
        # Recompute the same-layer neighbours of what changed (those popped later read it).
        touched = _QUEUED - code[(offsets[:, None] + layer[changed]).ravel()]
        touched = row_of[touched[(touched >= 0) & (touched < layer.size)]]
        rows = np.unique(touched[touched >= 0])
    return values[:-1]


def _basin_range(named: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the smallest and largest value of each column of `named`, the smallest among basins (> 0).

    The largest is > 0 exactly when the column names a basin; then the two are equal exactly
    when it names only one.
    """
    # Read as unsigned, value - 1 keeps the order of basins and puts everything <= 0 above them.
    first = (named - 1).view(np.uint32).min(axis=0).view(np.int32) + 1
    return first, named.max(axis=0)


def _next_layer(layer: np.ndarray, named: np.ndarray, first_key: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Return the next layer's pixels, the unflooded neighbours of this one, in the order the FIFO pops them.

    Each is appended by the first pixel of this layer that has it as a neighbour, at that
    neighbour's position in the left, up, right, down scan: its key is the smallest
    rank x 4 + direction over those. first_key is scratch, all int64 max, left so.
    """
    direction, rank = np.divmod(np.flatnonzero(named == _MASK), layer.size)
    pixels = layer[rank] + offsets[direction]
    key = rank * 4 + direction
    np.minimum.at(first_key, pixels, key)
    first = first_key[pixels] == key
    pixels, key = pixels[first], key[first]
    first_key[pixels] = np.iinfo(np.int64).max
    # The keys are distinct and below 4 x the layer size: rank them without sorting.
    taken = np.zeros(4 * layer.size, bool)
    taken[key] = True
    ordered = np.empty_like(pixels)
    ordered[np.cumsum(taken)[key] - 1] = pixels
    return ordered


def slice_scores(gt_labels: np.ndarray, proposal_labels: np.ndarray) -> dict[str, float]:
    """Return {"v_rand", "v_info"}: one slice's foreground-restricted Rand and information F-scores.

    gt_labels: ground-truth cells 1..n, membrane 0 (left out). proposal_labels: segments
    1..m, dams 0 (each a singleton). See conventions 5 and 6 of the module docstring.
    """
    gt_labels, proposal_labels = np.asarray(gt_labels), np.asarray(proposal_labels)
    _check_same_shape(gt_labels, proposal_labels, "ground-truth labels", "proposal labels")
    return _scores_against(_cell_pixels(gt_labels), proposal_labels)


def _cell_pixels(gt_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (where, cell, sizes): flat indices of the ground-truth cell pixels, their cell
    labels and the size of every cell, the part of a slice's scoring that no threshold changes."""
    where = np.flatnonzero(gt_labels)
    cell = gt_labels.ravel()[where].astype(np.int64)
    sizes = np.bincount(cell)[1:]
    return where, cell, sizes[sizes > 0]


def _scores_against(gt: tuple[np.ndarray, np.ndarray, np.ndarray], proposal_labels: np.ndarray) -> dict[str, float]:
    """Return slice_scores of ground-truth cell pixels prepared by _cell_pixels."""
    where, rows, gt_sizes = gt
    n = rows.size
    if n == 0:
        return {"v_rand": 0.0, "v_info": 0.0}
    cols = proposal_labels.ravel()[where].astype(np.int64)
    segment = cols > 0
    singletons = n - int(np.count_nonzero(segment))
    rows, cols = rows[segment], cols[segment]
    proposal_sizes = np.bincount(cols)
    proposal_sizes = proposal_sizes[proposal_sizes > 0]
    joint = _pair_counts(rows, cols)
    return {"v_rand": _rand_fscore(joint, gt_sizes, proposal_sizes, singletons),
            "v_info": _info_fscore(joint, gt_sizes, proposal_sizes, singletons, n)}


def _pair_counts(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Return the counts of the distinct (row, col) pairs, zeros left out."""
    if rows.size == 0:
        return np.zeros(0, np.int64)
    n_cols = int(cols.max()) + 1
    keys = rows * n_cols + cols
    if (int(rows.max()) + 1) * n_cols <= _DENSE_TABLE_LIMIT:
        counts = np.bincount(keys)
        return counts[counts > 0]
    return np.unique(keys, return_counts=True)[1]


def _rand_fscore(joint: np.ndarray, gt_sizes: np.ndarray, proposal_sizes: np.ndarray, singletons: int) -> float:
    """Return the F-score of Rand precision and recall (ClassificationStatistics' conventions).

    Sums of squared counts stand for the n^2-normalized sums of squared probabilities; each
    singleton adds 1 to the proposal and joint sums, as "sum(p_i0)/n" does there.
    """
    sum_gt = float(np.sum(gt_sizes.astype(np.float64) ** 2))
    sum_proposal = float(np.sum(proposal_sizes.astype(np.float64) ** 2)) + singletons
    sum_joint = float(np.sum(joint.astype(np.float64) ** 2)) + singletons
    precision = 1.0 if sum_proposal == sum_joint else sum_joint / sum_proposal
    recall = 1.0 if sum_gt == sum_joint else sum_joint / sum_gt
    return 2 * precision * recall / (precision + recall)


def _info_fscore(joint: np.ndarray, gt_sizes: np.ndarray, proposal_sizes: np.ndarray, singletons: int,
                 n: int) -> float:
    """Return the F-score of I/H(gt) and I/H(proposal), with the reference's zero-entropy rules.

    Entropies in nats; each singleton has probability 1/n.
    """
    singleton_term = singletons / n * np.log(n)
    h_gt = _entropy(gt_sizes, n)
    h_proposal = _entropy(proposal_sizes, n) + singleton_term
    h_joint = _entropy(joint, n) + singleton_term
    mutual_information = h_gt + h_proposal - h_joint
    if h_proposal == 0:
        precision, recall = 1.0, 0.0
    elif h_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision, recall = mutual_information / h_gt, mutual_information / h_proposal
    if precision + recall == 0:
        return float("nan")
    return float(2 * precision * recall / (precision + recall))


def _entropy(sizes: np.ndarray, n: int) -> float:
    """Return -sum p log p (nats) over segments of the given pixel counts, p = size / n."""
    p = sizes[sizes > 0] / n
    return float(-np.sum(p * np.log(p)))


def isbi_scores(probs: Images, truths: Images, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict:
    """Return the ISBI 2012 scores as the official challenge script computes them.

    For each threshold, every slice is binarized (cell = prob > threshold), its membrane
    thinned by the watershed and scored against the unthinned ground-truth cells; the
    scores are averaged over slices. Returns v_rand and v_info (the largest average above 0,
    else 0; ties go to the lowest threshold), v_rand_threshold and v_info_threshold (where
    they were reached; the first threshold if nothing exceeded 0) and per_threshold, a list
    of {"threshold", "v_rand", "v_info"}.
    """
    probs, truths = _validated_pairs(probs, truths)
    if len(thresholds) == 0:
        raise ValueError("thresholds is empty")
    gt_cells = [_cell_pixels(label_cells(cell_mask_from_truth(t))) for t in truths]
    per_threshold = []
    for threshold in thresholds:
        slices = [_scores_against(gt, watershed_segments(binarize_proposal(p, threshold)))
                  for gt, p in zip(gt_cells, probs)]
        per_threshold.append({"threshold": float(threshold),
                              "v_rand": float(np.mean([s["v_rand"] for s in slices])),
                              "v_info": float(np.mean([s["v_info"] for s in slices]))})
    best_rand = _first_maximum(per_threshold, "v_rand")
    best_info = _first_maximum(per_threshold, "v_info")
    return {
        "v_rand": best_rand["v_rand"] if best_rand else 0.0,
        "v_rand_threshold": (best_rand or per_threshold[0])["threshold"],
        "v_info": best_info["v_info"] if best_info else 0.0,
        "v_info_threshold": (best_info or per_threshold[0])["threshold"],
        "per_threshold": per_threshold,
    }


def _first_maximum(rows: list[dict], key: str) -> dict | None:
    """Return the first row whose `key` exceeds 0 and every earlier row's, or None (NaN never does)."""
    best, best_value = None, 0.0
    for row in rows:
        if row[key] > best_value:
            best, best_value = row, row[key]
    return best


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


def scored_map(labels: np.ndarray) -> np.ndarray:
    """Returns a segmentation as a probability map (cells 1.0, boundaries 0.0) for the challenge metric: a
    binary map binarizes the same at each of its thresholds, so one threshold scores it exactly."""
    return (labels > 0).astype(np.float32)


def segmentation_scores(labels: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> dict[str, float]:
    """Returns the challenge's V_rand and V_info of label images (thinned and scored as the map of a
    submission would be)."""
    scores = isbi_scores([scored_map(x) for x in labels], list(truths), thresholds=(0.5,))
    return {"v_rand": scores["v_rand"], "v_info": scores["v_info"]}
