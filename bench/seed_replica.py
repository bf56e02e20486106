"""The seed example's input loop (zhixuhao/unet, Keras 2), rebuilt with numpy/scipy for baseline B1(a).

The seed trains from `trainGenerator`: two `ImageDataGenerator.flow_from_directory` streams
(images, masks) with the same seed and these arguments:

    rotation_range=0.2, width_shift_range=0.05, height_shift_range=0.05, shear_range=0.05,
    zoom_range=0.05, horizontal_flip=True, fill_mode='nearest', target_size=(256, 256)

For every batch it reads the PNGs from disk, resizes each whole 512x512 slice to the target
size (PIL nearest, as keras `load_img`), draws one random transform per sample and applies it
to image and mask alike with scipy.ndimage.affine_transform (order 1, mode 'nearest', as
keras_preprocessing's `apply_affine_transform`), flips, and then `adjustData` scales to [0, 1]
and thresholds the mask at 0.5. Keras 2's `fit_generator` pulled the generator from one
background thread through a queue of 10 batches (workers=1, max_queue_size=10): here
tf.data's `from_generator` + `prefetch(10)` does the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from scipy import ndimage

ROTATION_DEG = 0.2  # Keras reads rotation_range in degrees
SHIFT_FRACTION = 0.05
SHEAR_DEG = 0.05  # Keras reads shear_range in degrees too
ZOOM = 0.05
INTERPOLATION_ORDER = 1  # ImageDataGenerator(interpolation_order=1), the default
FILL_MODE = "nearest"
QUEUE_BATCHES = 10  # fit_generator(max_queue_size=10)


@dataclass(frozen=True)
class RandomTransform:
    theta: float  # degrees
    tx: float  # pixels along rows
    ty: float  # pixels along columns
    shear: float  # degrees
    zx: float
    zy: float
    flip: bool  # horizontal


def random_transform(rng: np.random.Generator, height: int, width: int) -> RandomTransform:
    """Returns one draw of the seed's transform, in ImageDataGenerator.get_random_transform's order."""
    theta = rng.uniform(-ROTATION_DEG, ROTATION_DEG)
    tx = rng.uniform(-SHIFT_FRACTION, SHIFT_FRACTION) * height
    ty = rng.uniform(-SHIFT_FRACTION, SHIFT_FRACTION) * width
    shear = rng.uniform(-SHEAR_DEG, SHEAR_DEG)
    zx, zy = rng.uniform(1 - ZOOM, 1 + ZOOM, 2)
    return RandomTransform(theta, tx, ty, shear, zx, zy, bool(rng.random() < 0.5))


def affine_matrix(t: RandomTransform, height: int, width: int) -> np.ndarray:
    """Returns the 3x3 output-to-input matrix of keras_preprocessing's apply_affine_transform, centred."""
    theta, shear = np.deg2rad(t.theta), np.deg2rad(t.shear)
    rotation = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    shift = np.array([[1, 0, t.tx], [0, 1, t.ty], [0, 0, 1]])
    shearing = np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]])
    zoom = np.array([[t.zx, 0, 0], [0, t.zy, 0], [0, 0, 1]])
    matrix = rotation @ shift @ shearing @ zoom
    o_x, o_y = height / 2 + 0.5, width / 2 + 0.5  # transform_matrix_offset_center
    offset = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    return offset @ matrix @ reset


def apply_transform(x: np.ndarray, t: RandomTransform) -> np.ndarray:
    """Returns (H, W, C) x transformed channel by channel as ImageDataGenerator.apply_transform does."""
    matrix = affine_matrix(t, x.shape[0], x.shape[1])
    channels = [ndimage.affine_transform(x[..., c], matrix[:2, :2], matrix[:2, 2], order=INTERPOLATION_ORDER,
                                         mode=FILL_MODE, cval=0.0) for c in range(x.shape[-1])]
    out = np.stack(channels, axis=-1)
    return out[:, ::-1] if t.flip else out


def load_resized(path: Path, size: int) -> np.ndarray:
    """Returns the file as float32 (size, size, 1) gray pixels in 0..255, resized like keras load_img."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("L") if img.mode != "L" else img
        if img.size != (size, size):
            img = img.resize((size, size), Image.NEAREST)
        return np.asarray(img, dtype=np.float32)[..., None]


def seed_batches(image_paths: Sequence[Path], mask_paths: Sequence[Path], size: int, batch_size: int,
                 seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields endless (images, masks) float32 batches as the seed's trainGenerator + adjustData did.

    Files are visited in a fresh random order each pass, as flow_from_directory(shuffle=True);
    batches never come out partial (Keras' short last batch would only retrace the model).
    """
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while True:
        while len(order) < batch_size:
            order += rng.permutation(len(image_paths)).tolist()
        chosen, order = order[:batch_size], order[batch_size:]
        images, masks = [], []
        for k in chosen:
            image, mask = load_resized(image_paths[k], size), load_resized(mask_paths[k], size)
            transform = random_transform(rng, size, size)
            images.append(apply_transform(image, transform))
            masks.append(apply_transform(mask, transform))
        x = np.stack(images) / 255.0
        y = np.stack(masks) / 255.0
        yield x.astype(np.float32), (y > 0.5).astype(np.float32)


def seed_dataset(image_paths: Sequence[Path], mask_paths: Sequence[Path], size: int, batch_size: int, seed: int):
    """Returns the seed loop as an endless tf.data stream: one producer thread, 10 batches queued."""
    import tensorflow as tf

    spec = tf.TensorSpec((batch_size, size, size, 1), tf.float32)
    return tf.data.Dataset.from_generator(
        lambda: seed_batches(image_paths, mask_paths, size, batch_size, seed), output_signature=(spec, spec)
    ).prefetch(QUEUE_BATCHES)
