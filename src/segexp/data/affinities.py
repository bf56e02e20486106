"""What the network predicts (conf/target/): today's boundary map, or affinities - for each pixel and each offset
[dy, dx] of `target.offsets`, the probability that the pixel and its neighbour at that offset belong to the same
object (Wolf et al., "The Mutex Watershed and its Objective", TPAMI 2020). Numpy only.

Conventions of the affinity target (computed per crop after augmentation, so geometric transforms move the
objects, not the affinities):
* objects are the data's instance ids (data.labels=instances, renumbered per slice); for a binary boundary mask
  (ISBI) the 4-connected regions of non-membrane pixels, numbered per slice before augmentation;
* a membrane pixel (id 0) belongs to no object: every pair that touches one is 0 ("not the same object"), so
  membranes come out as cuts in every channel;
* a pair whose neighbour falls outside the crop, or that touches an unlabelled pixel (data.ignore), is masked
  out: it adds nothing to the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


UNLABELLED = -1  # object id of an unlabelled pixel
Offset = tuple[int, int]


@dataclass(frozen=True)
class Target:
    """What the model's output channels mean: one boundary map (or K class probabilities), or one affinity
    channel per offset."""

    kind: str = "boundary"
    offsets: tuple[Offset, ...] = ()

    @property
    def affinities(self) -> bool:
        return self.kind == "affinities"

    @property
    def short_range(self) -> list[int]:
        """The channels of the direct neighbours (|dy| + |dx| == 1), from which the boundary map is derived."""
        return [i for i, (dy, dx) in enumerate(self.offsets) if abs(dy) + abs(dx) == 1]


BOUNDARY = Target()


def target_of(node: Any) -> Target:
    """Returns the Target of a `target` config node (a DictConfig or dict; None: the boundary map, as every run
    from before the group existed)."""
    if node is None:
        return BOUNDARY
    kind = str(node.get("kind", "boundary"))
    if kind != "affinities":
        return BOUNDARY
    return Target(kind, tuple((int(dy), int(dx)) for dy, dx in node.get("offsets")))


def object_ids(mask: np.ndarray, foreground: int, ignore: int) -> np.ndarray:
    """Returns int32 object ids of a binary boundary mask: the 4-connected regions of non-`foreground` (cell)
    pixels numbered 1..n, 0 on the membranes (`foreground`, the boundary class), UNLABELLED where the mask is
    `ignore` (data.sets.IGNORE)."""
    from scipy import ndimage

    cells = (mask != foreground) & (mask != ignore)
    ids, _ = ndimage.label(cells)
    ids = ids.astype(np.int32)
    ids[mask == ignore] = UNLABELLED
    return ids


def instance_objects(ids: np.ndarray, ignore: int | None = None) -> np.ndarray:
    """Returns int32 object ids of one slice of instance ids (data.labels=instances): the ids renumbered 1..n in
    their order (so they fit int32 and survive float32 augmentation exactly, whatever their size up to 2^64), 0
    kept as 0 (no object), UNLABELLED where the id is `ignore` (data.ignore)."""
    unique, inverse = np.unique(ids, return_inverse=True)
    numbered = inverse.reshape(ids.shape).astype(np.int32) + (0 if unique[0] == 0 else 1)
    if ignore is not None:
        numbered[ids == ignore] = UNLABELLED
    return numbered


def slice_objects(masks: Sequence[np.ndarray], objects: Sequence[np.ndarray] | None, foreground: int,
                  ignore: int) -> list[np.ndarray]:
    """Returns the object ids of each slice the affinity target is drawn from: the data's own instance ids
    (SegmentationSet.objects) where it has them, else the cells of each boundary mask (object_ids)."""
    if objects is not None:
        return list(objects)
    return [object_ids(mask, foreground, ignore) for mask in masks]


def pair_views(shape: Sequence[int], offset: Offset) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Returns (the pixels p whose neighbour p + offset is inside `shape`, those neighbours) as slices."""
    (height, width), (dy, dx) = shape[:2], offset
    rows = (slice(max(0, -dy), height - max(0, dy)), slice(max(0, dy), height - max(0, -dy)))
    cols = (slice(max(0, -dx), width - max(0, dx)), slice(max(0, dx), width - max(0, -dx)))
    return (rows[0], cols[0]), (rows[1], cols[1])


def affinity_target(ids: np.ndarray, offsets: Sequence[Offset]) -> np.ndarray:
    """Returns float32 (H, W, 2C): channel c is 1 where pixel p and p + offsets[c] are the same object (same id > 0),
    else 0; channel C + c is 1 where that pair counts in the loss (both inside, neither UNLABELLED), else 0."""
    ids = np.asarray(ids).astype(np.int64)
    height, width = ids.shape[:2]
    same = np.zeros((height, width, len(offsets)), np.float32)
    valid = np.zeros_like(same)
    for c, offset in enumerate(offsets):
        here, there = pair_views(ids.shape, offset)
        a, b = ids[here], ids[there]
        same[here + (c,)] = (a == b) & (a > 0)
        valid[here + (c,)] = (a != UNLABELLED) & (b != UNLABELLED)
    return np.concatenate([same, valid], axis=-1)


def cell_map(affinities: np.ndarray, target: Target) -> np.ndarray:
    """Returns the (H, W) cell probability an affinity map implies: the mean affinity of each pixel to its direct
    neighbours (both directions of every short-range channel, the neighbours inside the image). Membranes, whose
    pixels have no object to share, come out near 0, as the boundary map has them."""
    affinities = np.asarray(affinities, np.float32)
    total = np.zeros(affinities.shape[:2], np.float64)
    count = np.zeros_like(total)
    for c in target.short_range:
        here, there = pair_views(affinities.shape, target.offsets[c])
        for view in (here, there):  # the pair (p, p + o) tells about p and about p + o
            total[view] += affinities[here + (c,)]
            count[view] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)


def check_offsets(offsets: Any, key: str = "target.offsets") -> list[str]:
    """Returns the problems of a `target.offsets` value (empty when fine): a non-empty list of distinct [dy, dx]
    integer pairs, not [0, 0], with both direct neighbours [-1, 0] and [0, -1]."""
    try:
        pairs = [(int(dy), int(dx)) for dy, dx in offsets]
    except (TypeError, ValueError):
        return [f"{key}: must be a list of [dy, dx] integer pairs, got {offsets}"]
    if not pairs:
        return [f"{key}: is empty; give at least [[-1, 0], [0, -1]]"]
    problems = []
    if (0, 0) in pairs:
        problems.append(f"{key}: [0, 0] pairs a pixel with itself; remove it")
    if len(set(pairs)) != len(pairs):
        problems.append(f"{key}: {pairs} repeats an offset")
    for direct in ((-1, 0), (0, -1)):
        if direct not in pairs:
            problems.append(f"{key}: needs the direct neighbour {list(direct)} (the boundary map and the "
                            "segmentation stages read it)")
    return problems
