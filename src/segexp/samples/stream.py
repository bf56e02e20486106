"""tf.data input pipeline: parallel, prefetched augmentation of random training crops."""

from __future__ import annotations

import tensorflow as tf

from segexp.samples.augment import CropSampler


def training_dataset(
    sampler: CropSampler,
    channels: int,
    target_channels: int,
    batch_size: int,
    first_sample: int = 0,
    parallel_calls: int = -1,
) -> tf.data.Dataset:
    """Returns an endless dataset of (image, target) batches of random augmented crops.

    Samples are numbered from `first_sample`, so a resumed run continues the sequence.
    Order is deterministic even with parallel workers (tf.data keeps map order).
    """
    size = sampler.crop_size

    def load(index):
        image, target = tf.numpy_function(sampler, [index], [tf.float32, tf.float32], stateful=False)
        image.set_shape((size, size, channels))
        target.set_shape((size, size, target_channels))
        return image, target

    calls = tf.data.AUTOTUNE if parallel_calls < 0 else parallel_calls
    return (
        tf.data.Dataset.counter(start=first_sample, dtype=tf.int64)
        .map(load, num_parallel_calls=calls, deterministic=True)
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
