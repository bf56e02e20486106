"""A literal, slow Python transcription of the Fiji code that computes the ISBI 2012 scores.

Test oracle only: it never imports segexp.evaluation.metrics, so agreeing with it checks the fast code
against the Java it claims to follow. Each function names the Java method it transcribes
(github.com/fiji/Trainable_Segmentation, package trainableSegmentation; connected components
from github.com/fiji/VIB-lib, util.FindConnectedRegions). Loops, loop order, the Java double
arithmetic (division by zero gives inf/NaN, log(0) = -inf) and Java's float pixels are kept
on purpose, so the code reads side by side with the Java; it is far too slow for real images.

The official challenge script calls, on a stack of ground-truth slices and a stack of
probability maps (1 = cell):

    RandError(gt, proposal).getMaximalVRandAfterThinning(0.0, 1.0, 0.1, true)
    VariationOfInformation(gt, proposal).getMaximalVInfoAfterThinning(0.0, 1.0, 0.1)

which are maximal_v_rand_after_thinning and maximal_v_info_after_thinning below.
"""

from __future__ import annotations

from collections import deque

import numpy as np

# WatershedTransform2D's label states
MASK, WSHED, INIT, INQUEUE = -2, 0, -1, -3


def jdiv(a: float, b: float) -> float:
    """Returns a / b with Java double semantics (x/0 is +-inf, 0/0 is NaN) instead of raising."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


def jlog(x: float) -> float:
    """Returns Math.log(x): -inf at 0, NaN below 0 or for NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.log(np.float64(x)))


def java_thresholds(min_threshold: float, max_threshold: float, step: float) -> list[float]:
    """Returns the thresholds of `for (double th = min; th <= max; th += step)`."""
    thresholds, th = [], min_threshold
    while th <= max_threshold:
        thresholds.append(th)
        th += step
    return thresholds


def binarize_label(label: np.ndarray, threshold: float) -> list[list[int]]:
    """Returns binaryLabel[x][y]: 255 where label.getPixelValue(x, y) > threshold, else 0.

    The ground truth is an 8-bit image (0 membrane, 255 cell; a 0/1 mask binarizes the
    same way for every threshold below 1) converted to float.
    """
    height, width = label.shape
    return [[255 if float(label[y, x]) > threshold else 0 for y in range(height)] for x in range(width)]


def binarize_proposal_for_watershed(proposal: np.ndarray, threshold: float) -> list[list[int]]:
    """Returns binaryProposal[x][y]: 0 where the proposal > threshold (cell), 255 elsewhere.

    The proposal is a 32-bit float image: getPixelValue returns a float, which Java widens
    to double to compare it with the double threshold.
    """
    height, width = proposal.shape
    return [[0 if float(np.float32(proposal[y, x])) > threshold else 255 for y in range(height)]
            for x in range(width)]


def find_connected_regions(binary: list[list[int]], diagonal: bool = False) -> list[list[int]]:
    """Returns allRegions[x][y] of FindConnectedRegions.run (as Utils.connectedComponents calls it).

    Regions are the connected pixels with a value over 0 (valuesOverDouble = 0), numbered
    1, 2, ... in the order of their first pixel in a row-by-row scan; others stay 0. The
    search is a stack (depth-first); with diagonal false only the 4 edge neighbours count.
    """
    width, height = len(binary), len(binary[0])
    data = [column[:] for column in binary]
    state = [[0] * height for _ in range(width)]  # 0 unseen, 1 in queue, 3 in a previous region
    regions = [[0] * height for _ in range(width)]
    region_number = 0
    for start_y in range(height):
        for start_x in range(width):
            if state[start_x][start_y] == 3 or data[start_x][start_y] <= 0:
                continue
            region_number += 1
            stack = [(start_x, start_y)]
            state[start_x][start_y] = 1
            while stack:
                px, py = stack.pop()
                state[px][py] = 3
                regions[px][py] = region_number
                data[px][py] = 0
                for y in range(max(0, py - 1), min(py + 1, height - 1) + 1):
                    for x in range(max(0, px - 1), min(px + 1, width - 1) + 1):
                        off_centre = (x != px) + (y != py)
                        if off_centre == 0 or (not diagonal and off_centre > 1):
                            continue
                        if data[x][y] <= 0:
                            continue
                        if state[x][y] == 0:
                            state[x][y] = 1
                            stack.append((x, y))
    return regions


def c4_neighbors(x: int, y: int) -> list[tuple[int, int]]:
    """Returns Neighborhood2DC4.getNeighbors(): left, up, right, down."""
    return [(x - 1, y), (x, y - 1), (x + 1, y), (x, y + 1)]


def watershed_transform_2d(image: list[list[int]], h_min: float = 0, h_max: float = 255) -> list[list[int]]:
    """Returns the labels of WatershedTransform2D(image, 4).apply(): basins 1.., dams WSHED = 0.

    apply() floods from image.getMin() to image.getMax(), which for a fresh ByteProcessor
    are its display range 0 and 255. Pixels are sorted by value, ties in creation order
    (x outer, y inner), as PixelRecord.compareTo does.
    """
    size1, size2 = len(image), len(image[0])
    tab = [[INIT] * size2 for _ in range(size1)]
    current_label = 0
    flag = False
    records = [(image[x][y], x, y) for x in range(size1) for y in range(size2) if h_min <= image[x][y] <= h_max]
    records.sort(key=lambda record: record[0])  # stable: equal values keep creation order
    fifo: deque[tuple[int, int]] = deque()

    def inside(u: int, v: int) -> bool:
        return 0 <= u < size1 and 0 <= v < size2

    h = h_min
    current_index = 0
    while h < h_min:
        h = records[current_index][0]
        current_index += 1
    height_index1 = height_index2 = current_index

    while current_index < len(records) and h <= h_max:
        h = records[current_index][0]

        for pixel_index in range(height_index1, len(records)):
            value, i, j = records[pixel_index]
            if value != h:
                height_index1 = pixel_index
                break
            tab[i][j] = MASK
            for u, v in c4_neighbors(i, j):
                if inside(u, v) and tab[u][v] >= WSHED:
                    fifo.append((i, j))
                    tab[i][j] = INQUEUE
                    break

        while fifo:
            i, j = fifo.popleft()
            for u, v in c4_neighbors(i, j):
                if not inside(u, v):
                    continue
                if tab[u][v] > 0:
                    if tab[i][j] == INQUEUE or (tab[i][j] == WSHED and flag):
                        tab[i][j] = tab[u][v]
                    elif tab[i][j] > 0 and tab[i][j] != tab[u][v]:
                        tab[i][j] = WSHED
                        flag = False
                elif tab[u][v] == WSHED:
                    if tab[i][j] == INQUEUE:
                        tab[i][j] = WSHED
                        flag = True
                elif tab[u][v] == MASK:
                    tab[u][v] = INQUEUE
                    fifo.append((u, v))

        pixel_index = height_index2
        while pixel_index < len(records):
            value, i, j = records[pixel_index]
            if value != h:
                height_index2 = pixel_index
                break
            if tab[i][j] == MASK:
                current_label += 1
                fifo.append((i, j))
                tab[i][j] = current_label
                while fifo:
                    p2 = fifo.popleft()
                    for u, v in c4_neighbors(*p2):
                        if inside(u, v) and tab[u][v] == MASK:
                            fifo.append((u, v))
                            tab[u][v] = current_label
            pixel_index += 1
            current_index += 1

    return [[0 if tab[i][j] == INIT else tab[i][j] for j in range(size2)] for i in range(size1)]


def overlap_matrix(cluster1: list[list[int]], cluster2: list[list[int]]) -> tuple[list[list[float]], float]:
    """Returns (pij, n): the overlap counts divided by n, the number of ground-truth pixels != 0.

    The first lines shared by RandError.getForegroundRestrictedRandIndexStatsN2 and
    VariationOfInformation.foregroundRestrictedFscore (both take ShortProcessors).
    """
    pixels1 = [v for column in cluster1 for v in column]
    pixels2 = [v for column in cluster2 for v in column]
    n = float(sum(1 for v in pixels1 if v != 0))
    n_labels_a, n_labels_b = max(pixels1), max(pixels2)
    pij = [[0.0] * (n_labels_b + 1) for _ in range(n_labels_a + 1)]
    for a, b in zip(pixels1, pixels2):
        pij[a][b] += 1
    for i in range(n_labels_a + 1):
        for j in range(n_labels_b + 1):
            pij[i][j] = jdiv(pij[i][j], n)
    return pij, n


def marginals(pij: list[list[float]]) -> tuple[list[float], list[float], float]:
    """Returns (ai, bj, aux): row sums (rows >= 1), column sums (rows, columns >= 1), sum of p_i0."""
    ai = [0.0] * len(pij)
    for i in range(1, len(pij)):
        for j in range(len(pij[0])):
            ai[i] += pij[i][j]
    bj = [0.0] * len(pij[0])
    for j in range(1, len(pij[0])):
        for i in range(1, len(pij)):
            bj[j] += pij[i][j]
    aux = 0.0
    for i in range(1, len(pij)):
        aux += pij[i][0]
    return ai, bj, aux


def classification_statistics_fscore(tp: float, fp: float, fn: float) -> float:
    """Returns ClassificationStatistics(...).fScore: precision (1 if fp == 0), recall (1 if
    fn == 0), and their harmonic mean, or 0 unless precision + recall > 0."""
    precision = 1.0 if fp == 0 else jdiv(tp, tp + fp)
    recall = 1.0 if fn == 0 else jdiv(tp, tp + fn)
    if precision + recall > 0:  # False for NaN
        return jdiv(2.0 * precision * recall, precision + recall)
    return 0.0


def foreground_restricted_rand_fscore(cluster1: list[list[int]], cluster2: list[list[int]]) -> float:
    """Returns the fScore of RandError.getForegroundRestrictedRandIndexStatsN2(cluster1, cluster2)."""
    pij, n = overlap_matrix(cluster1, cluster2)
    ai, bj, aux = marginals(pij)
    sum_a2 = 0.0
    for i in range(len(ai)):
        sum_a2 += ai[i] * ai[i]
    sum_b2 = 0.0
    for j in range(len(bj)):
        sum_b2 += bj[j] * bj[j]
    sum_b2 += jdiv(aux, n)
    sum_ab2 = 0.0
    for i in range(1, len(pij)):
        for j in range(1, len(pij[0])):
            sum_ab2 += pij[i][j] * pij[i][j]
    sum_ab2 += jdiv(aux, n)
    n2 = n * n
    tp = n2 * sum_ab2
    fp = n2 * sum_b2 - tp
    fn = n2 * sum_a2 - tp
    return classification_statistics_fscore(tp, fp, fn)


def foreground_restricted_info_fscore(cluster1: list[list[int]], cluster2: list[list[int]]) -> float:
    """Returns VariationOfInformation.foregroundRestrictedFscore(cluster1, cluster2)."""
    pij, n = overlap_matrix(cluster1, cluster2)
    ai, bj, aux = marginals(pij)
    sum_a = 0.0
    for i in range(len(ai)):
        if ai[i] != 0:
            sum_a += ai[i] * jlog(ai[i])
    sum_b = 0.0
    for j in range(len(bj)):
        if bj[j] != 0:
            sum_b += bj[j] * jlog(bj[j])
    sum_b -= aux * jlog(n)
    sum_ab = 0.0
    for i in range(1, len(pij)):
        for j in range(1, len(pij[0])):
            if pij[i][j] != 0:
                sum_ab += pij[i][j] * jlog(pij[i][j])
    sum_ab -= aux * jlog(n)
    ha, hb = -sum_a, -sum_b
    hab, hba = sum_b - sum_ab, sum_a - sum_ab
    prec = jdiv(ha - hab, ha)
    rec = jdiv(hb - hba, hb)
    if ha == 0:
        prec, rec = 0.0, 1.0
    if hb == 0:
        prec, rec = 1.0, 0.0
    return jdiv(2.0 * prec * rec, prec + rec)


def slice_fscores(label: np.ndarray, proposal: np.ndarray, threshold: float) -> tuple[float, float]:
    """Returns (Rand F-score, information F-score) of one slice at one threshold.

    RandError.getForegroundRestrictedRandAfterThinningStatsN2 and
    VariationOfInformation.foregroundRestrictedScoreAfterThinningN2: the ground truth is
    binarized and labelled (4-connected) as it is, unthinned; the proposal is binarized
    inverted (cells 0, membrane 255) and its membrane thinned by the watershed.
    """
    components1 = find_connected_regions(binarize_label(label, threshold), diagonal=False)
    components2 = watershed_transform_2d(binarize_proposal_for_watershed(proposal, threshold))
    return (foreground_restricted_rand_fscore(components1, components2),
            foreground_restricted_info_fscore(components1, components2))


def scores_after_thinning(labels: list[np.ndarray], proposals: list[np.ndarray],
                          min_threshold: float = 0.0, max_threshold: float = 1.0,
                          step: float = 0.1) -> list[tuple[float, float, float]]:
    """Returns [(threshold, V_rand, V_info)]: per threshold, each score summed over slices and
    divided by the number of slices (getForegroundRestrictedRandAfterThinningStats with
    perSliceAverage = true; VariationOfInformation.getForegroundRestrictedScoreAfterThinning)."""
    rows = []
    for th in java_thresholds(min_threshold, max_threshold, step):
        rand_sum = info_sum = 0.0
        for label, proposal in zip(labels, proposals):
            rand, info = slice_fscores(label, proposal, th)
            rand_sum += rand
            info_sum += info
        rows.append((th, rand_sum / len(labels), info_sum / len(labels)))
    return rows


def maximal_score(scores: list[float]) -> float:
    """Returns getMaximalVRandAfterThinning / getMaximalVInfoAfterThinning's loop: the largest
    score above 0 (NaN never is), else 0."""
    best = 0.0
    for score in scores:
        if score > best:
            best = score
    return best


def maximal_scores_after_thinning(labels: list[np.ndarray], proposals: list[np.ndarray]) -> dict:
    """Returns {"v_rand", "v_info", "per_threshold"} as the official challenge script computes them."""
    rows = scores_after_thinning(labels, proposals)
    return {
        "v_rand": maximal_score([rand for _, rand, _ in rows]),
        "v_info": maximal_score([info for _, _, info in rows]),
        "per_threshold": rows,
    }
