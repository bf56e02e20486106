"""Pictures of predictions (pure numpy): the mask panel logged every epoch and written by predict."""

from __future__ import annotations

import numpy as np

FALSE_WHITE = np.array([255, 60, 60], np.uint8)  # predicted white (cell), truly black (membrane): red
FALSE_BLACK = np.array([60, 140, 255], np.uint8)  # predicted black, truly white: blue


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
    spacer = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
    row = []
    for tile in tiles:
        row += [tile, spacer]
    return np.concatenate(row[:-1], axis=1)


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
