"""A labelled data set in memory: images, their masks of class indices, names, digests, its Classes and, for
instance labels, their objects (numpy only). Loaders (datasets.py) build one; splits cut it into train, select
and report; classes.py reads the classes from the config and the masks from files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

IGNORE = 255  # in-memory label of unlabelled pixels: left out of the loss and of every score
MAX_CLASSES = IGNORE  # indices 0..254

# Distinct colours for up to 10 classes (Tableau 10, its gray swapped for light orange: gray marks unlabelled
# pixels in panels), then seeded random ones; palette data keeps its own.
TABLEAU = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (255, 187, 120), (188, 189, 34), (23, 190, 207)]

Value = int | tuple[int, int, int]


@dataclass(frozen=True)
class Classes:
    names: tuple[str, ...]
    values: tuple[Value, ...] | None = None  # what marks each class in a mask file; None: index i (or binary)
    ignore: Value | None = None  # what marks an unlabelled pixel in a mask file

    @property
    def count(self) -> int:
        return len(self.names)

    @property
    def binary(self) -> bool:
        """Two classes: one sigmoid output (the probability of class 1), as every ISBI checkpoint has."""
        return self.count == 2

    @property
    def topology(self) -> bool:
        """True when the ISBI topology scores apply: two classes and every pixel labelled (a boundary map)."""
        return self.binary and self.ignore is None

    @property
    def palette(self) -> bool:
        return self.values is not None and isinstance(self.values[0], tuple)

    @property
    def outputs(self) -> int:
        """The model's output channels: 1 (sigmoid) for two classes, else one per class (softmax)."""
        return 1 if self.binary else self.count

    def colors(self) -> np.ndarray:
        """Returns uint8 (count, 3) display colours: a palette's own, else distinct ones."""
        if self.palette:
            return np.array(self.values, np.uint8)
        extra = np.random.default_rng(0).integers(40, 256, size=(max(self.count - len(TABLEAU), 0), 3))
        return np.concatenate([np.array(TABLEAU, np.uint8), extra.astype(np.uint8)])[: self.count]


BINARY = Classes(("background", "foreground"))


@dataclass(frozen=True)
class SegmentationSet:
    images: list[np.ndarray]  # float32 (H, W, C) in [0, 1]
    masks: list[np.ndarray]  # uint8 (H, W) class indices (binary: 1 = white), classes.IGNORE where unlabelled
    names: list[str]
    foreground: int = 0  # binary data: the class whose Dice/IoU is scored
    name: str = "data"
    digests: list[str] | None = None  # pixel_digest of each image as read, before normalizing or resizing
    classes: Classes = BINARY
    # data.labels=instances: int32 (H, W) object ids per slice (data.affinities.instance_objects), the objects an
    # affinity target is drawn from; None: the objects are the cells of each boundary mask
    objects: list[np.ndarray] | None = None

    @property
    def channels(self) -> int:
        return self.images[0].shape[-1]

    def subset(self, indices: Sequence[int]) -> "SegmentationSet":
        pick = lambda items: [items[i] for i in indices]  # noqa: E731
        digests = pick(self.digests) if self.digests is not None else None
        objects = pick(self.objects) if self.objects is not None else None
        return SegmentationSet(pick(self.images), pick(self.masks), pick(self.names), self.foreground, self.name,
                               digests, self.classes, objects)
