"""Running a model over images: overlap-tile (sliding-window) prediction for images of any size, plus dihedral
TTA, and one forward pass per whole slice (`predict_slices`, every epoch's scoring of the selection slices).

Framework-agnostic on purpose: the model enters only as a callable (or an object with predict_on_batch), so this module
never imports TensorFlow/Keras and can be tested with plain NumPy functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from segexp.data.affinities import pair_views

PredictBatch = Callable[[np.ndarray], np.ndarray]
PredictImage = Callable[[np.ndarray], np.ndarray]
Transform = Callable[[np.ndarray], np.ndarray]

# Keeps every tile's weight strictly positive at its border, so a pixel seen only
# near a tile edge (e.g. the padded image corners) still gets a well-defined average.
# It must stay far below the Gaussian's value inside the overlap: a floor of 1e-4
# already lets tile-border artefacts through at seam crossings (~10x larger seam error).
WINDOW_FLOOR = 1e-6


@dataclass(frozen=True)
class AxisPlan:
    """How one image axis is padded and cut into tiles."""

    tile: int
    starts: tuple[int, ...]
    pad_before: int
    pad_after: int


def round_up(value: int, multiple: int) -> int:
    """Return the smallest multiple of `multiple` that is >= `value`."""
    return -(-value // multiple) * multiple


def plan_axis(length: int, tile: int, overlap: int, multiple: int = 1) -> AxisPlan:
    """Return the tile size, tile start offsets (in padded coordinates) and padding for one axis.

    The image gets a reflected margin of overlap // 2 on both sides so border pixels
    see as much context as pixels at interior seams. Tiles sit on a regular grid with
    stride tile - overlap; the padded length is chosen so the last tile ends flush with it.
    """
    tile = round_up(tile, multiple)
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, {tile}) for an effective tile of {tile}, got {overlap}")
    margin = overlap // 2
    span = length + 2 * margin
    if span <= tile:
        # One tile just big enough for the model is cheaper than padding up to a full tile.
        single = round_up(span, multiple)
        return AxisPlan(tile=single, starts=(0,), pad_before=margin, pad_after=single - length - margin)
    stride = tile - overlap
    n_tiles = -(-(span - tile) // stride) + 1
    padded = (n_tiles - 1) * stride + tile
    return AxisPlan(
        tile=tile,
        starts=tuple(i * stride for i in range(n_tiles)),
        pad_before=margin,
        pad_after=padded - length - margin,
    )


def gaussian_window(height: int, width: int) -> np.ndarray:
    """Return a (height, width) float64 blending window: a Gaussian (sigma = size / 8) peaking at 1, floored above 0."""

    def axis_profile(size: int) -> np.ndarray:
        offsets = np.arange(size) - (size - 1) / 2
        return np.exp(-0.5 * (offsets / (size / 8)) ** 2)

    window = np.outer(axis_profile(height), axis_profile(width))
    return np.maximum(window / window.max(), WINDOW_FLOOR)


def as_channels_last(image: np.ndarray) -> np.ndarray:
    """Return `image` as a float32 (H, W, C) array, adding a channel axis to gray images."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        return image[..., np.newaxis]
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    return image


def to_probability_maps(output: np.ndarray, expected: tuple[int, int, int]) -> np.ndarray:
    """Return the model output as (N, tile_h, tile_w) for one probability map (a trailing singleton channel
    dropped), or as (N, tile_h, tile_w, K) for K > 1 class probabilities."""
    output = np.asarray(output)
    if output.ndim == 4 and output.shape[-1] == 1:
        output = output[..., 0]
    if output.shape[:3] != expected or output.ndim not in (3, 4):
        raise ValueError(f"predict_batch returned shape {output.shape}, expected {expected} or {expected + ('K',)}")
    return output


def batched(items: list, batch_size: int) -> Iterator[list]:
    """Yield consecutive chunks of at most `batch_size` items."""
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def predict_tiled(
    predict_batch: PredictBatch,
    image: np.ndarray,
    tile: int,
    overlap: int,
    batch_size: int,
    multiple: int,
) -> np.ndarray:
    """Return the float32 probability map of `image`, predicted tile by tile and Gaussian-blended: (H, W) for a
    model of one output, (H, W, K) for K class probabilities (weighted means, so each pixel's still sum to 1).

    `predict_batch` maps float32 (N, tile_h, tile_w, C) to (N, tile_h, tile_w[, 1]) or (N, tile_h, tile_w, K);
    tile sides are always multiples of `multiple` and N <= `batch_size`.
    """
    if tile < 1 or batch_size < 1 or multiple < 1:
        raise ValueError("tile, batch_size and multiple must all be >= 1")
    image = as_channels_last(image)
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"cannot predict an empty image of shape {image.shape}")

    rows = plan_axis(height, tile, overlap, multiple)
    cols = plan_axis(width, tile, overlap, multiple)
    # np.pad "reflect" repeats the reflection when the pad exceeds the axis length and
    # treats a length-1 axis as constant, so even a 1x1 image pads without a fallback.
    padded = np.pad(
        image,
        ((rows.pad_before, rows.pad_after), (cols.pad_before, cols.pad_after), (0, 0)),
        mode="reflect",
    )
    window = gaussian_window(rows.tile, cols.tile)
    weighted_sum = None  # shaped by the first batch: (padded H, W) or (padded H, W, K)
    weight_sum = np.zeros(padded.shape[:2], dtype=np.float64)

    origins = [(top, left) for top in rows.starts for left in cols.starts]
    for chunk in batched(origins, batch_size):
        tiles = np.stack([padded[top : top + rows.tile, left : left + cols.tile] for top, left in chunk])
        probabilities = to_probability_maps(predict_batch(tiles), (len(chunk), rows.tile, cols.tile))
        if weighted_sum is None:
            # float64 sums so that blending agreeing tiles reproduces their float32 values exactly.
            weighted_sum = np.zeros(padded.shape[:2] + probabilities.shape[3:], dtype=np.float64)
            class_axes = (np.newaxis,) * (probabilities.ndim - 3)
        for (top, left), probability in zip(chunk, probabilities):
            region = (slice(top, top + rows.tile), slice(left, left + cols.tile))
            weighted_sum[region] += window[(..., *class_axes)] * probability
            weight_sum[region] += window

    blended = weighted_sum / weight_sum[(..., *class_axes)]
    return blended[rows.pad_before : rows.pad_before + height, cols.pad_before : cols.pad_before + width].astype(
        np.float32
    )


def dihedral_pair(quarter_turns: int, flip: bool) -> tuple[Transform, Transform]:
    """Return (forward, inverse) for: optional horizontal flip, then `quarter_turns` counter-clockwise rotations."""

    def forward(array: np.ndarray) -> np.ndarray:
        flipped = np.flip(array, axis=1) if flip else array
        return np.rot90(flipped, k=quarter_turns, axes=(0, 1))

    def inverse(array: np.ndarray) -> np.ndarray:
        unrotated = np.rot90(array, k=-quarter_turns, axes=(0, 1))
        return np.flip(unrotated, axis=1) if flip else unrotated

    return forward, inverse


def dihedral_views() -> list[tuple[int, bool]]:
    """Return the 8 views of the dihedral group D4 as (quarter turns, flip), in TTA's order."""
    return [(k, flip) for flip in (False, True) for k in range(4)]


def dihedral_transforms() -> list[tuple[Transform, Transform]]:
    """Return the 8 (forward, inverse) pairs of the dihedral group D4 acting on the H, W axes of (H, W[, C]) arrays."""
    return [dihedral_pair(k, flip) for k, flip in dihedral_views()]


def predict_tta(predict_image: PredictImage, image: np.ndarray) -> np.ndarray:
    """Return the float32 mean of `predict_image` over the 8 dihedral views, each mapped back to the original frame:
    (H, W), or (H, W, K) for class probabilities (the views turn the spatial axes only)."""
    transforms = dihedral_transforms()
    total = sum(
        inverse(np.asarray(predict_image(forward(image)), dtype=np.float64)) for forward, inverse in transforms
    )
    return (total / len(transforms)).astype(np.float32)


def view_offsets(quarter_turns: int, flip: bool, offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Returns, for each affinity channel of a dihedral view's output mapped back to the original frame, the
    offset it then relates: channel c at pixel p is the affinity of p and p + returned[c]."""
    reach = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    size = 2 * reach + 3
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    forward, _ = dihedral_pair(quarter_turns, flip)
    where = forward(np.stack([rows, cols], -1))  # view pixel -> its original coordinates
    centre = reach + 1
    return [tuple(int(v) for v in where[centre + dy, centre + dx] - where[centre, centre]) for dy, dx in offsets]


def predict_tta_affinities(predict_image: PredictImage, image: np.ndarray,
                           offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """Return the float32 mean of (H, W, C) affinities over the 8 dihedral views. A view turns the offsets too:
    its channel for offset o becomes the original frame's channel for o turned back, or, when the set holds the
    opposite offset -o' instead, that channel shifted by o' (the pair (p, p - o') is the pair (p - o', p)). Each
    pixel averages the views that reach it (a shifted channel has none past the image edge)."""
    offsets = [tuple(int(v) for v in o) for o in offsets]
    height, width = image.shape[:2]
    total = np.zeros((height, width, len(offsets)), np.float64)
    count = np.zeros_like(total)
    for turns, flip in dihedral_views():
        forward, inverse = dihedral_pair(turns, flip)
        out = inverse(np.asarray(predict_image(forward(image)), dtype=np.float64))
        for c, delta in enumerate(view_offsets(turns, flip, offsets)):
            if delta in offsets:
                k = offsets.index(delta)
                total[..., k] += out[..., c]
                count[..., k] += 1
                continue
            k = offsets.index((-delta[0], -delta[1]))  # tta_offset_problem made sure one of the two is there
            here, there = pair_views(out.shape, offsets[k])
            total[here + (k,)] += out[there + (c,)]
            count[here + (k,)] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)


def tta_offset_problem(offsets: Sequence[tuple[int, int]]) -> str | None:
    """Returns why affinities at `offsets` cannot be averaged over flips and quarter turns (an offset whose
    turned version is in the set neither as it is nor opposite), or None."""
    offsets = [tuple(int(v) for v in o) for o in offsets]
    for turns, flip in dihedral_views():
        for offset, delta in zip(offsets, view_offsets(turns, flip, offsets)):
            if delta not in offsets and (-delta[0], -delta[1]) not in offsets:
                return (f"offset {list(offset)} turned or flipped is {list(delta)}, which the set lacks (as it is "
                        "and opposite)")
    return None


def predict_image(
    predict_batch: PredictBatch,
    image: np.ndarray,
    tile: int,
    overlap: int,
    batch_size: int,
    multiple: int,
    tta: bool,
    offsets: Sequence[tuple[int, int]] = (),
) -> np.ndarray:
    """Return the float32 probability map of `image`, (H, W) or (H, W, K) for K class probabilities (or C
    affinities at `offsets`): tiled prediction, averaged over D4 views if `tta`."""
    tiled = partial(
        predict_tiled, predict_batch, tile=tile, overlap=overlap, batch_size=batch_size, multiple=multiple
    )
    if not tta:
        return tiled(image)
    return predict_tta_affinities(tiled, image, offsets) if offsets else predict_tta(tiled, image)


def predict_slices(model, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Returns probability maps of whole images, one forward pass each (sizes may differ): (H, W) of class 1
    for a binary model, (H, W, K) class probabilities for a K-class one."""
    outputs = [np.asarray(model.predict_on_batch(image[None]), np.float32)[0] for image in images]
    return [out[..., 0] if out.shape[-1] == 1 else out for out in outputs]
