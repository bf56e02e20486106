"""Paired augmentation: albumentations recipes applied to (image, mask) together.

Recipes are YAML lists of albumentations transforms (conf/aug/). The sampler draws a
random crop from a random training slice and augments it; every random choice derives
from (seed, sample index), so a sample is reproducible whichever thread computes it.
"""

from __future__ import annotations

import queue
from typing import Any, Sequence

import numpy as np


def build_transform(transforms: Sequence[Any]):
    """Returns an albumentations.Compose of the configured transforms (a no-op if empty)."""
    import albumentations as A
    from hydra.utils import instantiate

    return A.Compose([instantiate(t, _convert_="all") for t in transforms])


class CropSampler:
    """Callable: sample index -> (image crop, target crop) as float32 arrays.

    The target is the binary mask, with the border weight map as a second channel when
    weights are given; both move with the image through every geometric transform.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        transforms: Sequence[Any],
        crop_size: int,
        seed: int,
        weights: Sequence[np.ndarray] | None = None,
    ):
        self.images = list(images)
        self.targets = [
            np.stack([m, w], -1).astype(np.float32) if weights is not None else m[..., None].astype(np.float32)
            for m, w in zip(masks, weights if weights is not None else masks)
        ]
        self.transforms = list(transforms)
        self.crop_size = crop_size
        self.seed = seed
        # Built pipelines, each used by one call at a time (their RNGs must not be shared).
        # A pool, not thread-local storage: tf.numpy_function calls come from ever new threads,
        # so a per-thread cache rebuilt the pipeline for every sample (4-6x slower).
        self._idle: queue.SimpleQueue = queue.SimpleQueue()

    def __call__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, int(index)])
        k = int(rng.integers(len(self.images)))
        image, target = self.images[k], self.targets[k]
        top = int(rng.integers(image.shape[0] - self.crop_size + 1))
        left = int(rng.integers(image.shape[1] - self.crop_size + 1))
        window = (slice(top, top + self.crop_size), slice(left, left + self.crop_size))
        try:
            compose = self._idle.get_nowait()
        except queue.Empty:
            compose = build_transform(self.transforms)
        try:
            compose.set_random_seed(int(rng.integers(2**31)))
            out = compose(image=np.ascontiguousarray(image[window]), mask=np.ascontiguousarray(target[window]))
        finally:
            self._idle.put(compose)
        return out["image"].astype(np.float32), out["mask"].astype(np.float32)
