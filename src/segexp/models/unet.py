"""U-Net (Ronneberger et al. 2015) as a Keras 3 functional model.

`build_unet(...)` with conf/model/unet.yaml (depth 4, 64 filters, dropout 0.5, upsample + 2x2 conv)
is the seed example's network (zhixuhao/unet, ~31M parameters). Inputs of any height and width
work: the model pads to a multiple of 2**depth and crops its output back.
"""

from __future__ import annotations

import keras
from keras import layers, ops

PACKAGE = "segexp"


@keras.saving.register_keras_serializable(package=PACKAGE)
class PadToMultiple(layers.Layer):
    """Zero-pads height and width (bottom/right) up to a multiple of `multiple`."""

    def __init__(self, multiple: int, **kwargs):
        super().__init__(**kwargs)
        self.multiple = multiple

    def call(self, x):
        shape = ops.shape(x)
        # non-negative operands only: exported to ONNX, a modulo of a negative number truncates (C's fmod)
        pad_h = (self.multiple - shape[1] % self.multiple) % self.multiple
        pad_w = (self.multiple - shape[2] % self.multiple) % self.multiple
        return ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])

    def compute_output_shape(self, input_shape):
        round_up = lambda n: None if n is None else -(-n // self.multiple) * self.multiple  # noqa: E731
        return (input_shape[0], round_up(input_shape[1]), round_up(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CropLike(layers.Layer):
    """Crops x to the height and width of a reference tensor (undoes PadToMultiple)."""

    def call(self, x, reference):
        shape = ops.shape(reference)
        return x[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization, trained through TensorFlow's fused kernel (FusedBatchNormV3).

    Keras 3 normalizes a batch in separate ops and, at mixed precision, first casts the whole activation to
    float32 and back; on a CPU that made isbi_best's bf16 step 2.6x slower than the same network without batch
    norm (BENCHMARKS.md B2, the isbi_best rows). The fused kernel takes bf16 activations with
    float32 statistics in one pass. The arithmetic is Keras' own: the same normalization, the same moving
    averages (of the biased batch variance), the same gradients to float rounding (tests/test_model.py);
    inference, and any case the kernel does not cover (another backend or axis, masks, renorm, synchronized
    statistics), is Keras' code path unchanged, so saved and exported models run without TensorFlow's op."""

    def call(self, inputs, training=None, mask=None):
        if (not (training and self.trainable) or mask is not None or self.renorm or self.synchronized
                or len(inputs.shape) != 4 or self.axis not in (-1, 3) or keras.backend.backend() != "tensorflow"):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        gamma = ops.cast(self.gamma, "float32") if self.scale else ops.ones((channels,), "float32")
        beta = ops.cast(self.beta, "float32") if self.center else ops.zeros((channels,), "float32")
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
        count = ops.cast(ops.size(inputs) // channels, "float32")
        variance = variance * (count - 1.0) / count  # the kernel returns the unbiased variance; Keras keeps the biased
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return ops.cast(outputs, self.compute_dtype)


# Keras' default 0.99 needs ~500 steps to forget the initial statistics, longer than a short
# CPU run: validation would see untrained moving averages and predict a constant.
BN_MOMENTUM = 0.9


def conv_block(x, filters: int, batch_norm: bool, activation: str, name: str, fused: bool = True):
    """Two 3x3 convolutions, each optionally batch-normalized (by FusedBatchNormalization, or Keras' own layer)."""
    norm = FusedBatchNormalization if fused else layers.BatchNormalization
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm,
                          kernel_initializer="he_normal", name=f"{name}_conv{i}")(x)
        if batch_norm:
            x = norm(momentum=BN_MOMENTUM, name=f"{name}_bn{i}")(x)
        x = layers.Activation(activation, name=f"{name}_act{i}")(x)
    return x


def upsample(x, filters: int, mode: str, activation: str, name: str):
    """Doubles the resolution: learned transpose conv, bilinear resize, or the seed's upsample + 2x2 conv."""
    if mode == "transpose":
        return layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"{name}_up")(x)
    if mode == "bilinear":
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_up")(x)
        return layers.Conv2D(filters, 1, name=f"{name}_up_proj")(x)
    # upsample_conv (schema.Upsampling allows no other value)
    x = layers.UpSampling2D(2, name=f"{name}_up")(x)
    return layers.Conv2D(filters, 2, padding="same", activation=activation,
                         kernel_initializer="he_normal", name=f"{name}_up_conv")(x)


def build_unet(
    *,
    depth: int,
    base_filters: int,
    batch_norm: bool,
    dropout: float,
    dropout_levels: int,
    upsampling: str,
    activation: str,
    head_filters: int,
    channels: int,
    outputs: int = 1,
    fused_batch_norm: bool = True,
    independent_outputs: bool = False,
) -> keras.Model:
    """Returns a U-Net mapping (B, H, W, channels) images to (B, H, W, 1) probabilities of class 1 (sigmoid:
    two classes, white for ISBI) or, with `outputs` = K > 1, (B, H, W, K) class probabilities (softmax).
    With `independent_outputs`, every one of the `outputs` channels is a sigmoid of its own (affinities).
    `channels` and `outputs` come from the data and the target; every other argument from the `model` group."""
    inputs = keras.Input((None, None, channels), name="image")
    x = PadToMultiple(2**depth, name="pad")(inputs)
    skips = []
    for level in range(depth):
        x = conv_block(x, base_filters * 2**level, batch_norm, activation, f"enc{level}", fused_batch_norm)
        if dropout and level >= depth - dropout_levels + 1:  # the deepest levels, counting the bottleneck
            x = layers.Dropout(dropout, name=f"enc{level}_dropout")(x)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = conv_block(x, base_filters * 2**depth, batch_norm, activation, "bottleneck", fused_batch_norm)
    if dropout and dropout_levels >= 1:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = upsample(x, filters, upsampling, activation, f"dec{level}")
        x = layers.Concatenate(name=f"dec{level}_concat")([skips[level], x])
        x = conv_block(x, filters, batch_norm, activation, f"dec{level}", fused_batch_norm)
    if head_filters:  # the seed's extra 3x3 conv before the classifier
        x = layers.Conv2D(head_filters, 3, padding="same", activation=activation,
                          kernel_initializer="he_normal", name="head")(x)
    # float32 output keeps the sigmoid/softmax and the loss numerically safe under mixed precision
    x = layers.Conv2D(outputs, 1, activation="sigmoid" if outputs == 1 or independent_outputs else "softmax",
                      dtype="float32",
                      name="probability")(x)
    outputs = CropLike(name="crop", dtype="float32")(x, inputs)
    return keras.Model(inputs, outputs, name=f"unet_d{depth}_f{base_filters}")
