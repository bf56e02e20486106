"""Pictures of predictions (numpy, PIL for text, matplotlib without pyplot for the confusion matrix): the mask
panel logged every epoch and written by predict, and their K-class counterparts."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from segexp.data.sets import IGNORE, Classes
from segexp.evaluation.metrics import predicted_classes

FALSE_WHITE = np.array([255, 60, 60], np.uint8)  # predicted white (cell), truly black (membrane): red
FALSE_BLACK = np.array([60, 140, 255], np.uint8)  # predicted black, truly white: blue
IGNORED_GRAY = np.array([128, 128, 128], np.uint8)  # unlabelled pixels: no class, so no class colour
DIMMED = 0.4  # brightness of correctly classified pixels in the error tile, so the errors stand out


def write_png(path, array: np.ndarray) -> None:
    """Writes a uint8 (or uint16) image as PNG, creating its folder."""
    from pathlib import Path

    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Returns uint8 (H, W, 3) from a float image in [0, 1] of shape (H, W) or (H, W, C)."""
    if image.ndim == 3 and image.shape[-1] != 3:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


def prediction_overlay(image: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Returns the image with the pixels predicted black (membrane for ISBI) drawn in red."""
    overlay = to_rgb8(image)
    overlay[prob < threshold] = FALSE_WHITE
    return overlay


def segment_colors(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Returns uint8 RGB of a label image: each segment a random colour (so neighbours rarely match and a
    merge or a split shows), boundaries (label 0) black."""
    colors = np.random.default_rng(seed).integers(60, 256, size=(int(labels.max()) + 1, 3), dtype=np.uint8)
    colors[0] = 0
    return colors[labels]


def error_overlay(image: np.ndarray, mask: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Returns the image with wrongly classified pixels colored (red: false white, blue: false black)."""
    overlay = to_rgb8(image)
    predicted = prob >= threshold
    overlay[predicted & (mask == 0)] = FALSE_WHITE
    overlay[~predicted & (mask == 1)] = FALSE_BLACK
    return overlay


def mask_panel(image: np.ndarray, mask: np.ndarray, prob: np.ndarray, segments: np.ndarray | None = None,
               gap: int = 4) -> np.ndarray:
    """Returns image | ground truth | prediction | error overlay (| segments of a postprocess stage, random
    colours) side by side, uint8 RGB."""
    tiles = [to_rgb8(image), to_rgb8(mask.astype(np.float32)), to_rgb8(prob), error_overlay(image, mask, prob),
             *([segment_colors(segments)] if segments is not None else [])]
    return side_by_side(tiles, gap)


def side_by_side(tiles: Sequence[np.ndarray], gap: int) -> np.ndarray:
    """Returns uint8 RGB tiles of one height in a row, `gap` white columns apart."""
    spacer = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
    row = []
    for tile in tiles:
        row += [tile, spacer]
    return np.concatenate(row[:-1], axis=1)


def color_labels(labels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Returns uint8 (H, W, 3) of class indices (H, W) drawn in `colors` (K, 3); IGNORE (and any index without
    a colour) mid-gray."""
    table = np.tile(IGNORED_GRAY, (IGNORE + 1, 1))
    table[: len(colors)] = colors
    return table[np.asarray(labels)]


def class_error_overlay(image: np.ndarray, truth: np.ndarray, predicted: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Returns uint8 RGB: wrongly classified pixels in the colour of the class predicted there, correct ones the
    dimmed image, unlabelled (IGNORE) ones mid-gray."""
    overlay = (to_rgb8(image) * DIMMED).round().astype(np.uint8)
    wrong = (truth != predicted) & (truth != IGNORE)
    overlay[wrong] = colors[predicted[wrong]]
    overlay[truth == IGNORE] = IGNORED_GRAY
    return overlay


def class_overlay(image: np.ndarray, labels: np.ndarray, colors: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Returns uint8 RGB: the image blended with the class colour of each pixel (`alpha` of colour)."""
    blended = (1 - alpha) * to_rgb8(image) + alpha * color_labels(labels, colors)
    return blended.round().astype(np.uint8)


def legend_strip(names: Sequence[str], colors: np.ndarray, width: int, gap: int = 4) -> np.ndarray:
    """Returns uint8 RGB (h, width, 3), white: a swatch in each class's colour followed by its name, left to right,
    wrapping onto further lines when `width` is full."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = font.getbbox("Ag")[3] + gap
    swatch = line - gap
    places, x, y = [], gap, gap
    for name in names:
        item = swatch + gap + int(np.ceil(measure.textlength(name, font=font)))
        if x > gap and x + item > width:
            x, y = gap, y + line
        places.append((x, y))
        x += item + 3 * gap
    strip = Image.new("RGB", (width, y + line), "white")
    draw = ImageDraw.Draw(strip)
    for (x, y), name, color in zip(places, names, colors):
        draw.rectangle([x, y, x + swatch - 1, y + swatch - 1], fill=tuple(int(c) for c in color))
        draw.text((x + swatch + gap, y), name, fill="black", font=font)
    return np.asarray(strip)


def class_panel(image: np.ndarray, truth: np.ndarray, probs: np.ndarray, classes: Classes, gap: int = 4) -> np.ndarray:
    """Returns uint8 RGB: image | truth | prediction (the most probable class) in class colours | errors (see
    class_error_overlay) side by side, above a legend naming each class in its colour."""
    colors = classes.colors()
    predicted = predicted_classes(probs)
    row = side_by_side([to_rgb8(image), color_labels(truth, colors), color_labels(predicted, colors),
                        class_error_overlay(image, truth, predicted, colors)], gap)
    return np.concatenate([row, legend_strip(classes.names, colors, row.shape[1], gap)], axis=0)


def prediction_panel(image: np.ndarray, truth: np.ndarray, prob: np.ndarray, classes: Classes,
                     segments: np.ndarray | None = None) -> np.ndarray:
    """Returns the panel a prediction is shown in: mask_panel (probability, errors, segments) for a binary
    boundary map, class_panel (class colours, legend) for K classes or partly unlabelled masks."""
    return mask_panel(image, truth, prob, segments) if classes.topology else class_panel(image, truth, prob, classes)


def row_fractions(matrix: np.ndarray) -> np.ndarray:
    """Returns each row of a confusion matrix divided by its sum (0 for a class absent from the truth)."""
    matrix = np.asarray(matrix, np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def confusion_figure(matrix: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Returns uint8 RGB (H, W, 3) of a confusion matrix (rows: truth, columns: prediction): each cell coloured
    by its fraction of the row, annotated with its pixel count."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix)
    fractions = row_fractions(matrix)
    side = 1.2 + 0.6 * len(names)
    figure = Figure(figsize=(side + 1.0, side), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    ax = figure.subplots()
    shown = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(shown, ax=ax, label="fraction of the true class")
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, labels=names, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    for (row, column), count in np.ndenumerate(matrix):
        ax.text(column, row, f"{int(count)}", ha="center", va="center", fontsize=8,
                color="white" if fractions[row, column] > 0.5 else "black")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def confusion_table(matrix: np.ndarray, names: Sequence[str]) -> str:
    """Returns a confusion matrix as CSV: a header of predicted classes, then one row per true class, its name
    first and then its pixel counts."""
    import csv
    import io

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["truth \\ predicted", *names])
    for name, counts in zip(names, np.asarray(matrix)):
        writer.writerow([name, *(int(c) for c in counts)])
    return text.getvalue()


def pair_grid(pairs, columns: int = 4, gap: int = 4) -> np.ndarray:
    """Returns (image | mask) pairs tiled `columns` pairs per row, uint8 RGB; a mask's first channel is drawn
    (a border weight map, if the target carries one, is left out)."""
    tiles = []
    for image, mask in pairs:
        mask = mask[..., 0] if mask.ndim == 3 else mask
        tiles.append(np.concatenate([to_rgb8(image), np.full((image.shape[0], gap // 2, 3), 255, np.uint8),
                                     to_rgb8(mask)], axis=1))
    height, width = tiles[0].shape[:2]
    blank = np.full((height, width, 3), 255, np.uint8)
    tiles += [blank] * (-len(tiles) % columns)
    spacer_v = np.full((height, gap * 2, 3), 255, np.uint8)
    rows = []
    for start in range(0, len(tiles), columns):
        row = []
        for tile in tiles[start:start + columns]:
            row += [tile, spacer_v]
        rows += [np.concatenate(row[:-1], axis=1), np.full((gap * 2, row[0].shape[1] * 0 + sum(
            t.shape[1] for t in row[:-1]), 3), 255, np.uint8)]
    return np.concatenate(rows[:-1], axis=0)
