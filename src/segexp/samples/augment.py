"""Paired augmentation: an albumentations pipeline applied to (image, mask) together.

Recipes are albumentations.Compose nodes in YAML (conf/aug/), built once by the composition
root. The sampler draws a random crop from a random training slice and augments it; every
random choice derives from (seed, sample index), so a sample is reproducible whichever thread
computes it.
"""

from __future__ import annotations

import copy
import queue
from typing import Any, Callable, Sequence

import numpy as np


class CropSampler:
    """Callable: sample index -> (image crop, target crop) as float32 arrays.

    The target is the binary mask, with the border weight map as a second channel when
    weights are given; both move with the image through every geometric transform.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        pipeline: Any,
        crop_size: int,
        seed: int,
        weights: Sequence[np.ndarray] | None = None,
        to_target: Callable[[np.ndarray], np.ndarray] | None = None,
        target_channels: int | None = None,
    ):
        self.images = list(images)
        self.targets = [
            np.stack([m, w], -1).astype(np.float32) if weights is not None else m[..., None].astype(np.float32)
            for m, w in zip(masks, weights if weights is not None else masks)
        ]
        self.crop_size = crop_size
        self.seed = seed
        self.to_target = to_target  # augmented (H, W) mask -> the model's target, e.g. affinities from object ids
        self.target_channels = target_channels or self.targets[0].shape[-1]
        # Copies of the built pipeline, each used by one call at a time (their RNGs must not be
        # shared). A pool, not thread-local storage: tf.numpy_function calls come from ever new
        # threads, so a per-thread cache copied the pipeline for every sample (4-6x slower).
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._template = pipeline  # never run itself, so copying it is safe while copies run

    def __call__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, int(index)])
        k = int(rng.integers(len(self.images)))
        image, target = self.images[k], self.targets[k]
        top = int(rng.integers(image.shape[0] - self.crop_size + 1))
        left = int(rng.integers(image.shape[1] - self.crop_size + 1))
        window = (slice(top, top + self.crop_size), slice(left, left + self.crop_size))
        try:
            compose = self._idle.get_nowait()
        except queue.Empty:  # every copy is in use (or none made yet): make one more
            compose = self.copy_pipeline()
        try:
            compose.set_random_seed(int(rng.integers(2**31)))
            out = compose(image=np.ascontiguousarray(image[window]), mask=np.ascontiguousarray(target[window]))
        finally:
            self._idle.put(compose)
        mask = out["mask"]
        if self.to_target is not None:
            mask = self.to_target(mask[..., 0])
        return out["image"].astype(np.float32), mask.astype(np.float32)

    def copy_pipeline(self):
        """Returns an independent copy of the pipeline (its own random state), for one more concurrent call."""
        return copy.deepcopy(self._template)
