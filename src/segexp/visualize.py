"""Pictures of predictions (pure numpy): the mask panel logged every epoch and written by predict."""

from __future__ import annotations

import numpy as np

FALSE_WHITE = np.array([255, 60, 60], np.uint8)  # predicted white (cell), truly black (membrane): red
FALSE_BLACK = np.array([60, 140, 255], np.uint8)  # predicted black, truly white: blue


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


def error_overlay(image: np.ndarray, mask: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Returns the image with wrongly classified pixels colored (red: false white, blue: false black)."""
    overlay = to_rgb8(image)
    predicted = prob >= threshold
    overlay[predicted & (mask == 0)] = FALSE_WHITE
    overlay[~predicted & (mask == 1)] = FALSE_BLACK
    return overlay


def mask_panel(image: np.ndarray, mask: np.ndarray, prob: np.ndarray, gap: int = 4) -> np.ndarray:
    """Returns image | ground truth | prediction | error overlay side by side, uint8 RGB."""
    tiles = [to_rgb8(image), to_rgb8(mask.astype(np.float32)), to_rgb8(prob), error_overlay(image, mask, prob)]
    spacer = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
    row = []
    for tile in tiles:
        row += [tile, spacer]
    return np.concatenate(row[:-1], axis=1)
